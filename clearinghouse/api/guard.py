"""What every request passes first, whatever its route: a limit on the body, the headers every
answer carries, and a retryable 503 instead of a server error when the database cannot be
reached.

- A body larger than MAX_BODY_BYTES (a file upload's own limit, in FILE_UPLOADS) is refused with
  413 as soon as its Content-Length says so, or as soon as that many bytes have arrived, and the
  connection is closed (the rest of the body is never read).
- A body sent to the API (anything but the console's forms) must be JSON, or a file upload's
  media type: another Content-Type is refused with `415 unsupported_media_type` before the body
  is read.
- Every answer says not to be sniffed, framed or, unless it is a static file, kept in any cache;
  over TLS it also tells the browser to use nothing else (HSTS). Console pages, JSON, CSV,
  problems, redirects and static files alike.
- A request that fails because the database is unreachable (refused or lost connections, a
  server restarting, no connection in time) is answered `503 database_unavailable` with
  Retry-After: nothing was done twice, and the same request with the same Idempotency-Key may be
  sent again.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearinghouse.api.problems import from_domain_error, http_problem
from clearinghouse.database import unavailable
from clearinghouse.errors import DomainError

log = logging.getLogger(__name__)

PARTNER_PREFIX = "/v1/"
"""The signed partner API's routes (partners.gate)."""
STAFF_PREFIXES = ("/finance/", "/audit/", "/operator/", "/metrics")
"""Routes for people with a bearer token, authenticated before their body is read."""
MAX_BODY_BYTES = 1 << 20
"""The largest request body of any route but a file upload."""
FILE_UPLOADS: dict[str, tuple[int, bytes]] = {
    "/v1/reconciliation-files/": (256 << 20, b"text/csv"),
    "/v1/batches": (64 << 20, b"application/x-ndjson"),
}
"""Routes whose body is a file, by path prefix: the largest body each takes, and its media type."""
STATIC_PREFIX = "/console/static/"
# The console's forms are the only bodies that are not JSON.
FORMS_PREFIX = "/console/"
JSON_TYPE = b"application/json"
DATABASE_RETRY_SECONDS = 2

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
NO_STORE = (b"cache-control", b"no-store")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class DatabaseUnavailable(DomainError):
    code = "database_unavailable"
    status = 503
    title = "Database unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the database cannot be reached just now; nothing was done twice: send the same "
            "request again, with the same Idempotency-Key, after Retry-After seconds"
        )
        self.headers["Retry-After"] = str(DATABASE_RETRY_SECONDS)


class BodyTooLarge(HTTPException):
    """An HTTP error, so that a route reading its body answers it like the guard does."""

    def __init__(self, limit: int = MAX_BODY_BYTES) -> None:
        # The rest of the body is never read: the connection cannot carry another request.
        super().__init__(413, f"the body exceeds {limit} bytes", headers={"Connection": "close"})


def upload_of(path: str) -> tuple[int, bytes] | None:
    """The limit and media type of the file upload at `path`, if it is one."""
    return next((v for prefix, v in FILE_UPLOADS.items() if path.startswith(prefix)), None)


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def _wrong_type(scope: Scope, declared: int | None, expected: bytes) -> bool:
    """A body not of the `expected` media type, where the API expects one."""
    if scope["path"].startswith(FORMS_PREFIX):
        return False
    if declared == 0 or (declared is None and _header(scope, b"transfer-encoding") is None):
        return False
    media_type = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    return media_type != expected


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising BodyTooLarge once the body passes the limit."""
    size = 0

    async def limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return limited


def _with_headers(scope: Scope, send: Send) -> tuple[Send, list[bool]]:
    """`send`, adding the security headers to the answer's start; and whether it started."""
    extra = list(SECURITY_HEADERS)
    if not scope["path"].startswith(STATIC_PREFIX):
        extra.append(NO_STORE)
    if scope.get("scheme") == "https":
        extra.append(HSTS)
    started = [False]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            started[0] = True
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend((name, value) for name, value in extra if name not in present)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers, started


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send, started = _with_headers(scope, send)
        instance = scope["path"]
        declared = _declared_length(scope)
        limit, expected = upload_of(instance) or (MAX_BODY_BYTES, JSON_TYPE)
        if declared is not None and declared > limit:
            await _too_large(BodyTooLarge(limit), scope, receive, send)
            return
        if _wrong_type(scope, declared, expected):
            response = http_problem(
                415, f"send the body as {expected.decode()}", instance, {"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, _limited(receive, limit), send)
        except BodyTooLarge as too_large:
            if started[0]:
                raise
            await _too_large(too_large, scope, receive, send)
        except Exception as error:
            if started[0] or not unavailable(error):
                raise
            log.warning("database unavailable on %s %s: %s", scope["method"], instance, error)
            await from_domain_error(DatabaseUnavailable(), instance)(scope, receive, send)


async def _too_large(error: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    response = http_problem(error.status_code, error.detail, scope["path"], error.headers)
    await response(scope, receive, send)
