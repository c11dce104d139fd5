"""The gate every partner request passes, and the one transaction each is answered in.

Before any route sees a request, the gate reads the raw body, checks a POST's idempotency key
and verifies the signature against this process's copy of the partners' keys. A file upload
(clearinghouse.api.guard.FILE_UPLOADS) is spooled to a temporary file as it arrives, then
hashed from there, and its Content-Digest checked against that hash: the route reads the file
from disk, never from memory. The route then answers through `PartnerCall.answer`, which runs in
one thread and one transaction: the first statement spends the nonce, takes the idempotency key
(or finds its stored answer) and reads the reference versions; then the route's work; then the
answer is stored with it and everything commits together. A crash at any point leaves all of
it or none of it.

A request refused by a domain error is answered from a second transaction that spends the nonce,
keeps what the refusal must keep (a blocked attempt's risk case) and stores the refusal as the
key's answer. A request refused before its route runs (an invalid body) is settled the same way.

Requests that use the database are admitted a few at a time per process (`Admission`): a request
holds at most its own connections and never waits for another while holding one, so the pool
cannot deadlock; beyond the queue, the answer is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Annotated, Any

import pydantic_core
from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearinghouse.api import idempotency, metrics, request_ids
from clearinghouse.api.guard import PARTNER_PREFIX, STAFF_PREFIXES, upload_of
from clearinghouse.api.problems import from_domain_error, http_problem
from clearinghouse.api.throttle import RateLimited, RateLimits, Throttle, source_of
from clearinghouse.database import Tx, run_in_transaction
from clearinghouse.errors import DomainError
from clearinghouse.files import sha256_of
from clearinghouse.users.service import NotSignedIn, User, user_by_token
from partners import auth
from partners.signing import HttpRequest

log = logging.getLogger(__name__)

# Routes that never touch the database, and so need no admission.
WITHOUT_DATABASE = ("/healthz", "/console/static/")
JSON = "application/json"
# An upload larger than this is spooled to disk rather than kept in memory.
SPOOL_IN_MEMORY = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How many requests one process serves at once, and how many more may wait."""

    partner_requests: int = 8
    """Partner requests at once; each holds one connection while it runs."""
    other_requests: int = 4
    """Console, finance, audit and operator requests at once; each may hold two."""
    queue: int = 2000
    """Requests that may wait for their turn; more are answered 503."""
    wait_seconds: float = 15.0
    """How long one may wait before it is answered 503."""
    rates: RateLimits = field(default_factory=RateLimits)

    @property
    def connections(self) -> int:
        """The pool that serves these requests without any waiting for a connection."""
        return self.partner_requests + 2 * self.other_requests


class Saturated(Exception):
    pass


class _Turn:
    """A place in the queue, granted by the holder that leaves (on any thread)."""

    __slots__ = ("future", "granted")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.granted = False


class Admission:
    """At most `capacity` holders at once; up to `queue` waiters, each for at most `wait`
    seconds, first come, first served. Safe across event loops and threads."""

    def __init__(self, capacity: int, queue: int, wait: float) -> None:
        self.capacity, self.queue, self.wait = capacity, queue, wait
        self._holders = 0
        self._waiters: deque[_Turn] = deque()
        self._lock = threading.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        turn = None
        with self._lock:
            if self._holders < self.capacity and not self._waiters:
                self._holders += 1
            elif len(self._waiters) >= self.queue:
                raise Saturated
            else:
                turn = _Turn()
                self._waiters.append(turn)
        if turn is not None:
            await self._wait(turn)
        try:
            yield
        finally:
            self._release()

    async def _wait(self, turn: _Turn) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(turn.future), self.wait)
        except BaseException as stopped:
            with self._lock:
                if not turn.granted:
                    self._waiters.remove(turn)
                    if isinstance(stopped, TimeoutError):
                        raise Saturated from None
                    raise
            # Granted just as the wait ended: the slot is held.
            if not isinstance(stopped, TimeoutError):
                self._release()
                raise

    def _release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._holders -= 1
                return
            # The slot passes to the first waiter; the number of holders stays.
            turn = self._waiters.popleft()
            turn.granted = True
        turn.future.get_loop().call_soon_threadsafe(_hand_over, turn.future)


def _hand_over(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


@dataclass(frozen=True)
class Outcome:
    answer: idempotency.StoredResponse
    replayed: bool = False

    def response(self) -> Response:
        headers = dict(self.answer.headers)
        if self.replayed:
            headers["idempotent-replayed"] = "true"
            request = request_ids.current()
            if request is not None:
                request.replayed = True
        return Response(self.answer.body, self.answer.status, headers=headers)


@dataclass(frozen=True)
class Reply:
    """A route's answer with a status of its own choosing (else the route's), or a body other
    than JSON (bytes of `media_type`)."""

    body: Any
    status: int | None = None
    media_type: str | None = None


def _rendered(result: Any, status: int) -> idempotency.StoredResponse:
    media_type = JSON
    if isinstance(result, Reply):
        status = result.status or status
        if result.media_type is not None:
            media_type, body = result.media_type, bytes(result.body)
            return idempotency.StoredResponse(status, [("content-type", media_type)], body)
        result = result.body
    return idempotency.StoredResponse(
        status, [("content-type", media_type)], pydantic_core.to_json(result)
    )


def _problem(error: DomainError, instance: str) -> idempotency.StoredResponse:
    response = from_domain_error(error, instance)
    headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
    return idempotency.StoredResponse(response.status_code, headers, bytes(response.body))


Work = Callable[[Tx], BaseModel | list[Any] | Reply]


class PartnerCall:
    """One signed partner request: who sent it, and the way to answer it in one transaction."""

    def __init__(
        self,
        engine: Engine,
        throttle: Throttle,
        verified: auth.Verified,
        key: str | None,
        digest: bytes | None,
        instance: str,
        upload: IO[bytes] | None = None,
        upload_sha256: bytes | None = None,
    ) -> None:
        self.engine = engine
        self._upload = upload
        self._upload_sha256 = upload_sha256
        self.throttle = throttle
        self.verified = verified
        self._key = key
        self.digest = digest
        self.instance = instance
        self.status = 200
        self.answered = False

    @property
    def partner_id(self) -> str:
        return self.verified.key.partner_id

    @property
    def key_id(self) -> str:
        return self.verified.key.id

    @property
    def scope(self) -> auth.KeyScope:
        """What the request's key may act for."""
        return self.verified.key.scope

    @property
    def idempotency_key(self) -> str:
        """The POST's Idempotency-Key (the gate has required and checked it)."""
        assert self._key is not None, "only a POST carries an idempotency key"
        return self._key

    @property
    def upload(self) -> IO[bytes]:
        """The uploaded file of a file upload route, at its start."""
        assert self._upload is not None, "only a file upload route has a file"
        self._upload.seek(0)
        return self._upload

    @property
    def upload_sha256(self) -> bytes:
        """The uploaded file's SHA-256, taken as it arrived."""
        assert self._upload_sha256 is not None, "only a file upload route has a file"
        return self._upload_sha256

    async def answer(self, work: Work) -> Response:
        """Run `work` in the request's transaction and answer with what it returns (a model, a
        list of models, or a Reply); a domain error it raises becomes the problem answer."""
        outcome = await run_in_threadpool(self._answer, work)
        self.answered = True
        return outcome.response()

    def _answer(self, work: Work) -> Outcome:
        try:
            self.throttle.admit_partner(self.engine, self.partner_id)
            return run_in_transaction(self.engine, lambda tx: self._attempt(tx, work))
        except (auth.Unauthorized, RateLimited) as refusal:
            # Not the key's answer: the same request may succeed later.
            return Outcome(_problem(refusal, self.instance))
        except DomainError as refusal:
            return self.settle(_problem(refusal, self.instance), refusal)

    def _attempt(self, tx: Tx, work: Work) -> Outcome:
        earlier = self._open(tx)
        if earlier is not None:
            return earlier
        answer = _rendered(work(tx), self.status)
        self._store(tx, answer)
        return Outcome(answer)

    def settle(
        self, answer: idempotency.StoredResponse, refusal: DomainError | None = None
    ) -> Outcome:
        """Answer a refused request: spend its nonce, keep what the refusal keeps and store the
        refusal as the key's answer, unless an answer is stored already."""

        def refuse(tx: Tx) -> Outcome:
            earlier = self._open(tx)
            if earlier is not None:
                return earlier
            if refusal is not None:
                refusal.keep(tx)
            self._store(tx, answer)
            return Outcome(answer)

        try:
            return run_in_transaction(self.engine, refuse)
        except (auth.Unauthorized, RateLimited) as refusal:
            return Outcome(_problem(refusal, self.instance))

    def _open(self, tx: Tx) -> Outcome | None:
        """The request's first statement. Returns an answer when the request is done already
        (a stored answer) or refused (its key reused) with its nonce spent."""
        opened = tx.one(
            "SELECT * FROM partner_request_open(%s, %s, %s, %s, %s)",
            (self.key_id, self.verified.nonce, self.partner_id, self._key, self.digest),
        )
        if opened.outcome == "nonce_replayed":
            log.info("signature refused", extra={"reason": "nonce_replayed"})
            metrics.signature_failures.labels("nonce_replayed").inc()
            raise auth.Unauthorized()
        tx.reference_versions = opened.versions
        auth.confirm(tx, self.verified)
        if opened.outcome == "reused":
            return Outcome(_problem(idempotency.IdempotencyKeyReused(), self.instance))
        if opened.outcome == "replay":
            stored = idempotency.StoredResponse(
                opened.response_status,
                [(name, value) for name, value in opened.response_headers],
                opened.response_body,
            )
            return Outcome(stored, replayed=True)
        return None

    def _store(self, tx: Tx, answer: idempotency.StoredResponse) -> None:
        if self._key is not None and self.digest is not None and answer.status < 500:
            idempotency.store(tx, self.partner_id, self._key, self.digest, answer)


async def _partner_call(request: Request) -> PartnerCall:
    call = getattr(request.state, "partner_call", None)
    if not isinstance(call, PartnerCall):
        raise auth.Unauthorized()
    route = request.scope.get("route")
    call.status = getattr(route, "status_code", None) or 200
    return call


Partner = Annotated[PartnerCall, Depends(_partner_call)]


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _read_body(receive: Receive, into: IO[bytes]) -> bool:
    """Write the whole body (its size limited by clearinghouse.api.guard) to `into`; False if
    the client went away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        into.write(message.get("body", b""))
        if not message.get("more_body", False):
            return True


class _Unanswered:
    """What the app sends for a request its route did not answer through PartnerCall: kept
    back, to be settled first. A route's own answer passes straight through."""

    def __init__(self, send: Send, call: PartnerCall) -> None:
        self._send, self._call = send, call
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if self._call.answered:
            await self._send(message)
        elif message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.lower() != b"content-length"
            ]
        elif message["type"] == "http.response.body":
            self.parts.append(message.get("body", b""))

    def answer(self) -> idempotency.StoredResponse | None:
        if self.status is None:
            return None
        return idempotency.StoredResponse(self.status, self.headers, b"".join(self.parts))


class PartnerGate:
    def __init__(self, app: ASGIApp, throttle: Throttle, limits: Limits | None = None) -> None:
        self.app = app
        self.throttle = throttle
        self.limits = limits or Limits()
        self.partners = Admission(
            self.limits.partner_requests, self.limits.queue, self.limits.wait_seconds
        )
        self.others = Admission(
            self.limits.other_requests, self.limits.queue, self.limits.wait_seconds
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"].startswith(PARTNER_PREFIX):
            await self._partner(scope, receive, send)
        elif scope["path"].startswith(WITHOUT_DATABASE):
            await self.app(scope, receive, send)
        else:
            try:
                async with self.others.slot():
                    if scope["path"].startswith(STAFF_PREFIXES):
                        scope = await self._staff(scope)
                    await self.app(scope, receive, send)
            except DomainError as exc:
                await from_domain_error(exc, scope["path"])(scope, receive, send)
            except Saturated:
                await _busy(scope, receive, send)

    async def _staff(self, scope: Scope) -> Scope:
        """The scope with the person behind the bearer token (clearinghouse.api.deps reads it),
        found before the body is read; a failure counts against the source's rate limit."""
        source = source_of(scope)
        self.throttle.refuse_blocked(source)
        scheme, _, token = _headers(scope).get("authorization", "").partition(" ")
        engine = _engine(scope)

        def look_up(tx: Tx) -> User:
            self.throttle.check_source(tx, source)
            if scheme.lower() != "bearer" or not token.strip():
                raise NotSignedIn("send Authorization: Bearer <API token>")
            return user_by_token(tx.session, token.strip())

        try:
            user = await run_in_threadpool(run_in_transaction, engine, look_up)
        except NotSignedIn:
            await run_in_threadpool(
                run_in_transaction, engine, lambda tx: self.throttle.failed(tx, source)
            )
            raise
        return {**scope, "state": {**scope.get("state", {}), "staff_user": user}}

    async def _partner(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = scope["path"]
        source = source_of(scope)
        try:
            self.throttle.refuse_blocked(source)
        except RateLimited as exc:
            await from_domain_error(exc, instance)(scope, receive, send)
            return
        upload: IO[bytes] | None = None
        if scope["method"] == "POST" and upload_of(instance) is not None:
            upload = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            await self._signed(scope, receive, send, source, upload)
        finally:
            if upload is not None:
                upload.close()

    async def _signed(
        self, scope: Scope, receive: Receive, send: Send, source: str, upload: IO[bytes] | None
    ) -> None:
        instance = scope["path"]
        body, body_sha256 = b"", None
        if upload is None:
            buffer = io.BytesIO()
            if not await _read_body(receive, buffer):
                return
            body = buffer.getvalue()
        else:
            if not await _read_body(receive, upload):
                return
            body_sha256 = await run_in_threadpool(sha256_of, upload)
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
            body_sha256=body_sha256,
        )
        engine = _engine(scope)
        try:
            async with self.partners.slot():
                call = await self._admit(engine, request, headers, source, instance, upload)
                scope = {**scope, "state": {**scope.get("state", {}), "partner_call": call}}
                await self._serve(call, scope, _replayed(body, receive), send)
        except DomainError as exc:
            await from_domain_error(exc, instance)(scope, receive, send)
        except Saturated:
            await _busy(scope, receive, send)

    async def _admit(
        self,
        engine: Engine,
        request: HttpRequest,
        headers: dict[str, str],
        source: str,
        instance: str,
        upload: IO[bytes] | None,
    ) -> PartnerCall:
        key = digest = None
        if request.method == "POST":
            # Before the signature: a missing key is a plain mistake, and saying so gives
            # nothing away.
            key = idempotency.check_key(headers.get("idempotency-key"))
            # An upload's request is known by its body's hash, the body being on disk.
            digest = idempotency.request_hash(
                request.method, request.path, request.query, request.body_sha256 or request.body
            )
        try:
            try:
                verified = auth.verify(request, auth.keyring.peek(engine) or {})
            except auth.UnknownKey:
                current = await run_in_threadpool(run_in_transaction, engine, auth.keyring.get)
                verified = auth.verify(request, current, current=True)
        except auth.Unauthorized:
            await run_in_threadpool(
                run_in_transaction, engine, lambda tx: self.throttle.failed(tx, source)
            )
            raise
        call = PartnerCall(
            engine, self.throttle, verified, key, digest, instance, upload, request.body_sha256
        )
        logged = request_ids.current()
        if logged is not None:
            logged.signed(call.partner_id, call.key_id, key)
        return call

    async def _serve(self, call: PartnerCall, scope: Scope, receive: Receive, send: Send) -> None:
        unanswered = _Unanswered(send, call)
        await self.app(scope, receive, unanswered)
        answer = unanswered.answer()
        if call.answered or answer is None:
            return
        # Refused before its route ran (an invalid body, an unknown route): the nonce is spent
        # and a POST's key keeps the refusal, as for a refusal by the route itself. A server
        # error stores nothing, so that a retry runs again.
        outcome = Outcome(answer)
        if answer.status < 500:
            outcome = await run_in_threadpool(call.settle, answer)
        await outcome.response()(scope, receive, send)


def _engine(scope: Scope) -> Engine:
    engine: Engine = scope["app"].state.sessions.kw["bind"]
    return engine


def _replayed(body: bytes, receive: Receive) -> Receive:
    """The body the gate read, handed to the app once more."""
    delivered = False

    async def replay_body() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_body


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    response = http_problem(
        503, "the server is busy; try again shortly", scope["path"], {"Retry-After": "1"}
    )
    await response(scope, receive, send)
