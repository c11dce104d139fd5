"""The real server over TCP against clients that send too slowly or too much: a head or a body
that does not arrive in time (408), a head beyond the limit (431), more connections than a worker
keeps (503); each answered with `Connection: close` and then closed, with either parser."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clearinghouse.http_limits import ConnectionLimits
from tests.api.test_server import free_port, serve, stop, wait_until_up
from tests.conftest import Databases

MAX_CONNECTIONS = 20
# Far beyond the one-second timeouts the server runs with here: only a server that never
# closes the connection takes this long.
PATIENCE_SECONDS = 10.0
MAX_HEAD_BYTES = ConnectionLimits().max_head_bytes


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/problem+json"
        # The guard's headers, as on the application's own answers.
        assert self.headers["x-content-type-options"] == "nosniff"
        assert self.headers["cache-control"] == "no-store"
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem


@pytest.fixture(scope="module", params=["httptools", "h11"])
def address(
    request: pytest.FixtureRequest, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """A server with one-second timeouts and room for 20 connections."""
    port = free_port()
    log = tmp_path_factory.mktemp("slow") / "serve.log"
    process = serve(
        port,
        databases.create(),
        log,
        "--no-jobs",
        "--http",
        request.param,
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--max-connections",
        str(MAX_CONNECTIONS),
    )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}", log)
        yield "127.0.0.1", port
    finally:
        stop(process)


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=PATIENCE_SECONDS)


def head(target: str = "/healthz", *fields: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: clearinghouse.test", *fields, "", ""]
    return "\r\n".join(lines).encode()


def read_answer(sock: socket.socket, received: bytes = b"") -> tuple[Answer, bytes]:
    """One answer (its start perhaps `received` already), and whatever came after it."""
    while b"\r\n\r\n" not in received:
        received += receive(sock)
    head_bytes, rest = received.split(b"\r\n\r\n", 1)
    status_line, *lines = head_bytes.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    length = int(headers["content-length"])
    while len(rest) < length:
        rest += receive(sock)
    return Answer(int(status_line.split()[1]), headers, rest[:length]), rest[length:]


def receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise AssertionError("the server closed the connection without an answer")
    return chunk


def read_closing_answer(sock: socket.socket, received: bytes = b"") -> Answer:
    """An answer that says `Connection: close`, after which the server closes."""
    answer, rest = read_answer(sock, received)
    assert answer.headers["connection"] == "close"
    assert rest + sock.recv(65536) == b"", "the connection stayed open after the answer"
    return answer


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    address: tuple[str, int],
) -> None:
    with connect(address) as sock:
        # Nothing was asked, so nothing is answered.
        assert sock.recv(65536) == b""


def test_a_head_sent_a_byte_at_a_time_is_answered_408_and_closed(
    address: tuple[str, int],
) -> None:
    """The head has a deadline from its first byte: a byte now and then does not extend it."""
    with connect(address) as sock:
        sock.sendall(head())
        first, _ = read_answer(sock)
        assert first.status == 200
        assert "connection" not in first.headers

        sock.settimeout(0.2)
        deadline = time.monotonic() + PATIENCE_SECONDS
        received = b""
        for byte in head():
            assert time.monotonic() < deadline, "the server kept reading a head byte by byte"
            sock.sendall(bytes([byte]))
            try:
                received = sock.recv(65536)
                break
            except TimeoutError:
                continue
        sock.settimeout(PATIENCE_SECONDS)
        answer = read_closing_answer(sock, received)
    assert answer.status == 408
    problem = answer.problem()
    assert problem["code"] == "request_timeout"
    assert problem["type"].endswith("/request-timeout")


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_closed(
    address: tuple[str, int],
) -> None:
    with connect(address) as sock:
        sock.sendall(
            b"POST /console/sign-in HTTP/1.1\r\nHost: clearinghouse.test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"name=someone"
        )
        answer = read_closing_answer(sock)
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"


def test_a_head_beyond_the_limit_is_answered_431_and_closed(address: tuple[str, int]) -> None:
    padding = MAX_HEAD_BYTES - len(head("/healthz", "X-Padding: "))
    with connect(address) as sock:
        sock.sendall(head("/healthz", "X-Padding: " + "a" * padding))
        at_the_limit, _ = read_answer(sock)
    assert at_the_limit.status == 200

    with connect(address) as sock:
        sock.sendall(head("/healthz", "X-Padding: " + "a" * (padding + 1)))
        answer = read_closing_answer(sock)
    assert answer.status == 431
    problem = answer.problem()
    assert problem["code"] == "request_header_fields_too_large"
    assert problem["type"].endswith("/request-header-fields-too-large")
    assert problem["title"] == "Request header fields too large"
    assert str(MAX_HEAD_BYTES) in problem["detail"]

    # The megabyte the server used to read whole (httptools) or drop with a 400 (h11).
    with connect(address) as sock:
        with contextlib.suppress(ConnectionError):
            # The server may close before the client is done sending.
            sock.sendall(head("/healthz", "X-Padding: " + "a" * (1 << 20)))
        assert read_answer(sock)[0].status == 431


def test_connections_beyond_the_cap_are_answered_503_and_closed(
    address: tuple[str, int],
) -> None:
    held = [connect(address) for _ in range(MAX_CONNECTIONS)]
    try:
        # Each is certainly open on the server once its request is answered; kept alive, they
        # stay open while idle.
        for sock in held:
            sock.sendall(head())
            assert read_answer(sock)[0].status == 200
        with connect(address) as sock:
            answer = read_closing_answer(sock)
        assert answer.status == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.problem()["code"] == "unavailable"

        held.pop().close()
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            with connect(address) as sock:
                sock.sendall(head())
                status = read_answer(sock)[0].status
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200, "a closed connection still counts against the cap"
    finally:
        for sock in held:
            sock.close()
