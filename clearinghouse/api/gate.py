"""The gate every partner request passes before any route sees it: the raw body is read, the
signature verified and the nonce spent, and a POST's idempotency key claimed; the answer to a
POST is stored before it is sent."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearinghouse.api import idempotency
from clearinghouse.api.problems import from_domain_error, http_problem
from clearinghouse.errors import DomainError
from partners.auth import AuthenticatedPartner, authenticate
from partners.signing import HttpRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
PARTNER_PREFIX = "/v1/"


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Admission:
    partner: AuthenticatedPartner
    key: str | None
    stored: idempotency.StoredResponse | None


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None if the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _admit(sessions: sessionmaker[Session], request: HttpRequest, key: str | None) -> Admission:
    """Authenticate, and claim the POST's idempotency `key` (already checked)."""
    refusal: DomainError | None = None
    with sessions() as session, session.begin():
        partner = authenticate(session, request)
        stored = None
        if key is not None:
            try:
                digest = idempotency.request_hash(
                    request.method, request.path, request.query, request.body
                )
                stored = idempotency.claim(session, partner.partner_id, key, digest)
            except DomainError as exc:
                # The signature was good: its nonce stays spent even though we refuse.
                refusal = exc
    if refusal is not None:
        raise refusal
    return Admission(partner, key, stored)


def _finish(
    sessions: sessionmaker[Session],
    partner_id: str,
    key: str,
    response: idempotency.StoredResponse | None,
) -> None:
    with sessions() as session, session.begin():
        if response is None:
            idempotency.release(session, partner_id, key)
        else:
            idempotency.complete(session, partner_id, key, response)


class PartnerGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PARTNER_PREFIX):
            await self.app(scope, receive, send)
            return
        instance = scope["path"]
        try:
            body = await _read_body(receive)
        except BodyTooLarge:
            response = http_problem(413, f"the body exceeds {MAX_BODY_BYTES} bytes", instance)
            await response(scope, receive, send)
            return
        if body is None:
            return
        headers = _headers(scope)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        request = HttpRequest(
            method=scope["method"],
            authority=headers.get("host", ""),
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            scheme=scope.get("scheme", "http"),
        )
        sessions: sessionmaker[Session] = scope["app"].state.sessions
        try:
            key = None
            if request.method == "POST":
                # Before the signature: a missing key is a plain mistake, and saying so gives
                # nothing away.
                key = idempotency.check_key(headers.get("idempotency-key"))
            admission = await run_in_threadpool(_admit, sessions, request, key)
        except DomainError as exc:
            await from_domain_error(exc, instance)(scope, receive, send)
            return
        if admission.stored is not None:
            await _send_stored(send, admission.stored, replayed=True)
            return

        scope = {**scope, "state": {**scope.get("state", {}), "partner": admission.partner}}
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if admission.key is None:
            await self.app(scope, replay_body, send)
            return
        await self._answer_once(scope, replay_body, send, sessions, admission)

    async def _answer_once(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        sessions: sessionmaker[Session],
        admission: Admission,
    ) -> None:
        assert admission.key is not None
        partner_id, key = admission.partner.partner_id, admission.key
        status = 500
        headers: list[tuple[str, str]] = []
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers", [])
                    if name.lower() != b"content-length"
                )
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
        except Exception:
            await run_in_threadpool(_finish, sessions, partner_id, key, None)
            raise
        answer = idempotency.StoredResponse(status, headers, b"".join(parts))
        stored = answer if status < 500 else None
        await run_in_threadpool(_finish, sessions, partner_id, key, stored)
        await _send_stored(send, answer, replayed=False)


async def _send_stored(send: Send, response: idempotency.StoredResponse, *, replayed: bool) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
