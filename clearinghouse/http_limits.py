"""What one connection may make a server process hold: the time its request head and body may
take to arrive, the size of its head, and how many connections a process keeps open at once.

uvicorn keeps none of these (h11 alone bounds a head, with a 400): a client sending one byte a
second held its connection for as long as it liked, and any number of them could. uvicorn's
`limit_concurrency` does not help: it counts connections but only answers 503 to requests whose
head has arrived, so a connection that never finishes its head stays open. The limits are
therefore kept in uvicorn's own protocol classes, below the application, so that they hold for
every route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from http import HTTPStatus
from typing import Any, Literal, Protocol

import h11
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from clearinghouse.api.guard import HSTS, NO_STORE, SECURITY_HEADERS
from clearinghouse.api.problems import http_problem


@dataclass(frozen=True)
class ConnectionLimits:
    """The defaults `clearinghouse serve` runs with (README.md, docs/request-path.md)."""

    # From the connection's opening, or from the first byte of a later request on it.
    header_timeout: float = 10.0
    # From the end of the head; longer than the 15 s a request may wait for admission before
    # its body is read (a client that asked for 100-continue sends it only then).
    body_timeout: float = 30.0
    # The request line and header fields together.
    max_head_bytes: int = 32 * 1024
    # Per process; beyond it a new connection is answered 503 and closed.
    max_connections: int = 4096

    @classmethod
    def given(
        cls,
        *,
        header_timeout: float | None,
        body_timeout: float | None,
        max_connections: int | None,
    ) -> ConnectionLimits:
        """The defaults, except where `serve` was given a value."""
        default = cls()
        return cls(
            header_timeout=default.header_timeout if header_timeout is None else header_timeout,
            body_timeout=default.body_timeout if body_timeout is None else body_timeout,
            max_connections=(
                default.max_connections if max_connections is None else max_connections
            ),
        )


class ServerConfig(uvicorn.Config):
    """uvicorn's settings with the connection limits, which travel with them to every worker."""

    def __init__(self, app: str, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits


class _Cycle(Protocol):
    """What both of uvicorn's request-response cycles have that the limits look at."""

    response_started: bool
    response_complete: bool
    disconnected: bool
    message_event: asyncio.Event


class _Reading(Enum):
    HEAD = auto()
    BODY = auto()
    # The request is read; until the next one begins, uvicorn's keep-alive timeout applies.
    NOTHING = auto()


class RequestReader:
    """Times and measures one connection's requests as they arrive, and refuses what is too slow
    or too large with a problem+json answer, then closes."""

    def __init__(
        self,
        limits: ConnectionLimits,
        loop: asyncio.AbstractEventLoop,
        server_state: ServerState,
        cycle: Callable[[], _Cycle | None],
    ) -> None:
        self._limits = limits
        self._loop = loop
        self._server_state = server_state
        self._cycle = cycle
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl | None = None
        self._tls = False
        self._reading = _Reading.NOTHING
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def opened(self, transport: asyncio.Transport, flow: FlowControl, *, tls: bool) -> None:
        self._transport = transport
        self._flow = flow
        self._tls = tls
        if len(self._server_state.connections) > self._limits.max_connections:
            self._refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "the server has as many connections open as it keeps; try again shortly",
                [(b"retry-after", b"1")],
            )
            return
        self._enter(_Reading.HEAD)

    def closed(self) -> None:
        self._cancel_timer()

    def request_begun(self) -> None:
        if self._reading is not _Reading.HEAD:
            self._enter(_Reading.HEAD)

    def head_read(self) -> None:
        if self._reading is _Reading.HEAD:
            self._enter(_Reading.BODY)

    def request_read(self) -> None:
        self._enter(_Reading.NOTHING)

    def receive(self, data: bytes, parse: Callable[[bytes], None]) -> None:
        """Parse what arrived, never more of a head than the limit allows."""
        if self._reading is _Reading.NOTHING:
            self.request_begun()
        if self._reading is not _Reading.HEAD:
            parse(data)
            return
        room = self._limits.max_head_bytes - self._head_bytes
        self._head_bytes += len(data)
        if len(data) <= room:
            parse(data)
            return
        if room:
            parse(data[:room])
        # A request that began within the part parsed counts its head from zero.
        if self._reading is _Reading.HEAD and self._head_bytes > self._limits.max_head_bytes:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request line and header fields may take {self._limits.max_head_bytes} "
                "bytes at most",
            )
        elif self._transport is not None and not self._transport.is_closing():
            parse(data[room:])

    def _enter(self, reading: _Reading) -> None:
        self._reading = reading
        self._cancel_timer()
        if reading is _Reading.HEAD:
            self._head_bytes = 0
            self._timer = self._loop.call_later(self._limits.header_timeout, self._timed_out)
        elif reading is _Reading.BODY:
            self._timer = self._loop.call_later(self._limits.body_timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._reading is _Reading.BODY and self._flow is not None and self._flow.read_paused:
            # The server stopped reading (the application has not taken what came yet, or an
            # earlier request is still being answered): the wait is not the client's.
            self._timer = self._loop.call_later(self._limits.body_timeout, self._timed_out)
            return
        if self._reading is _Reading.HEAD and self._head_bytes == 0:
            # Nothing was asked, so there is nothing to answer: close as after a keep-alive.
            if self._transport is not None:
                self._transport.close()
            return
        part = "head" if self._reading is _Reading.HEAD else "body"
        timeout = (
            self._limits.header_timeout
            if self._reading is _Reading.HEAD
            else self._limits.body_timeout
        )
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the request's {part} did not arrive within {timeout:g} s",
        )

    def _refuse(
        self,
        status: HTTPStatus,
        detail: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        transport = self._transport
        if transport is None:
            return
        cycle = self._cycle()
        if self._reading is _Reading.BODY:
            # The cycle is this request's: once its answer has begun, closing is all that is left.
            if cycle is None or cycle.response_started:
                transport.close()
                return
            # The application's own answer, should it come, is for a client that has gone.
            cycle.disconnected = True
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            # An earlier request is still being answered: nothing can be written before it ends.
            transport.close()
            return
        response = http_problem(status.value, detail)
        lines = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        # The application's answers carry the guard's headers; these, from below it, do too.
        for name, value in [
            *self._server_state.default_headers,
            *response.raw_headers,
            *SECURITY_HEADERS,
            NO_STORE,
            *([HSTS] if self._tls else []),
            *headers,
            (b"connection", b"close"),
        ]:
            lines.append(b"%s: %s\r\n" % (name, value))
        transport.write(b"".join([*lines, b"\r\n", response.body]))
        transport.close()


def _limits_of(config: uvicorn.Config) -> ConnectionLimits:
    # Under a plain uvicorn.Config (uvicorn's own command line) the defaults apply.
    return config.limits if isinstance(config, ServerConfig) else ConnectionLimits()


class _ReadWithLimits(asyncio.Protocol):
    """What both protocol classes below add to uvicorn's: a RequestReader per connection."""

    config: uvicorn.Config
    loop: asyncio.AbstractEventLoop
    server_state: ServerState
    flow: FlowControl
    scheme: Literal["http", "https"] | None
    reader: RequestReader

    def _cycle(self) -> _Cycle | None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.reader = RequestReader(
            _limits_of(self.config), self.loop, self.server_state, self._cycle
        )
        self.reader.opened(transport, self.flow, tls=self.scheme == "https")

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.closed()
        super().connection_lost(exc)


class LimitedHttpToolsProtocol(_ReadWithLimits, HttpToolsProtocol):
    """uvicorn's httptools protocol; the parser's callbacks tell the reader where it is."""

    def _cycle(self) -> _Cycle | None:
        return self.cycle

    def data_received(self, data: bytes) -> None:
        self.reader.receive(data, super().data_received)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reader.request_begun()

    def on_headers_complete(self) -> None:
        self.reader.head_read()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reader.request_read()
        super().on_message_complete()


class LimitedH11Protocol(_ReadWithLimits, H11Protocol):
    """uvicorn's h11 protocol. h11 has no parser callbacks: the reader follows the state h11
    is in after each step."""

    def _cycle(self) -> _Cycle | None:
        return self.cycle

    def data_received(self, data: bytes) -> None:
        self.reader.receive(data, self._parse)

    def _parse(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_parser()

    def on_response_complete(self) -> None:
        # A pipelined request that waited for this answer is parsed now.
        super().on_response_complete()
        self._follow_parser()

    def _follow_parser(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self.reader.head_read()
        elif state is h11.DONE or state is h11.MUST_CLOSE:
            self.reader.request_read()
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            self.reader.request_begun()


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "httptools": LimitedHttpToolsProtocol,
    "h11": LimitedH11Protocol,
}
