"""Webhooks as a partner receives them: a real HTTP server on 127.0.0.1, in a thread of the
test's own, that keeps every request and answers as the test tells it (a status, a delay, a
huge body, or not at all while stopped); endpoints made through the service; the reads of
deliveries and attempts."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from clearinghouse.config import get_settings
from clearinghouse.database import Tx, unit_of_work
from clearinghouse.webhooks import service


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""


@dataclass
class Receiver:
    """A partner's webhook receiver on 127.0.0.1: start() and stop() it at will (the port is
    kept), set `status`, `delay` (seconds the handler waits before answering) or `answer`."""

    port: int = 0
    status: int = 200
    delay: float = 0.0
    answer: bytes = b"ok"
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(headers, body, time.monotonic()))
                # The receiver's own slowness, in its own thread: the test never sleeps.
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("content-length", str(len(receiver.answer)))
                self.end_headers()
                # A client that read enough of a huge answer hangs up: that is its right.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(receiver.answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@contextmanager
def receiver(**options: Any) -> Iterator[Receiver]:
    """A receiver, started, and stopped when the block ends."""
    started = Receiver(**options)
    started.start()
    try:
        yield started
    finally:
        started.stop()


Body = TypeVar("Body", bound=BaseModel)


def verified(secret: str, got: Received, model: type[Body]) -> Body:
    """The delivery's body, its signature checked by the independent library's own signing
    (the test's clock may be far from the wall clock, so the library's check of the time would
    not apply), and held to the model the OpenAPI document publishes for it, field for field."""
    headers = got.headers
    at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    assert headers["webhook-signature"] == Webhook(secret).sign(
        headers["webhook-id"], at, got.body.decode()
    )
    body = json.loads(got.body)
    published = model.model_validate(body)
    assert set(body) == set(model.model_fields)
    assert published.model_dump(mode="json", exclude={"timestamp"}) == {
        k: v for k, v in body.items() if k != "timestamp"
    }
    return published


def allow_local_receivers(monkeypatch: pytest.MonkeyPatch, *, private: bool = False) -> None:
    """Settings that let webhooks go to http://127.0.0.1 (and, with `private`, to any private
    address), as in development."""
    monkeypatch.setenv("CLEARINGHOUSE_WEBHOOKS_DEV_HTTP", "true")
    monkeypatch.setenv("CLEARINGHOUSE_WEBHOOKS_PRIVATE_TARGETS", "true" if private else "false")
    get_settings.cache_clear()


def add_endpoint(
    sessions: sessionmaker[Session],
    partner_id: str,
    url: str,
    event_types: tuple[str, ...] = service.EVENT_TYPES,
) -> tuple[service.Endpoint, str]:
    """An endpoint of the partner and its secret."""
    with unit_of_work(sessions) as session:
        return service.create_endpoint(session, partner_id, url, event_types)


def emit(
    sessions: sessionmaker[Session],
    partner_id: str,
    type: str = "settlement.computed",
    data: dict[str, Any] | None = None,
) -> str:
    """An event for the partner, which has an endpoint subscribed to its type."""
    with unit_of_work(sessions) as session:
        written = service.emit(session, partner_id, type, data or {"business_date": "2026-11-30"})
    assert written is not None, f"no endpoint of {partner_id} receives {type}"
    return written


def attempts_of(sessions: sessionmaker[Session], event_id: str) -> list[Any]:
    """The event's attempts, oldest first, with their delivery's state and count."""
    with unit_of_work(sessions) as session:
        return Tx.of(session).all(
            "SELECT a.attempted_at, a.status, a.error, a.latency_ms, a.response, d.state,"
            " d.attempts, d.next_attempt_at FROM webhook_attempts a"
            " JOIN webhook_deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = %s ORDER BY a.id",
            (event_id,),
        )


def unheard(sessions: sessionmaker[Session], partner_id: str, type: str) -> bool:
    """True when an event of the type for the partner is not written: no active endpoint of the
    partner receives it."""
    with unit_of_work(sessions) as session:
        return service.emit(session, partner_id, type, {"business_date": "2026-11-30"}) is None
