"""`clearinghouse serve`: the real server over TCP, with a signed request from PartnerClient."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import server
from clearinghouse.database import make_engine, session_factory
from partners.client import PartnerClient
from tests.builders.calls import link_body
from tests.builders.partners import make_partner
from tests.conftest import Databases

STARTUP_SECONDS = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(port: int, database_url: str, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """`clearinghouse serve` in a process group of its own (its workers with it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clearinghouse", "serve", "--port", str(port), *options],
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers: politely, then not."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until_up(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve did not answer /healthz within {STARTUP_SECONDS} s:\n{log.read_text()}")


@pytest.fixture
def served_sessions(databases: Databases) -> Iterator[tuple[str, sessionmaker[Session]]]:
    """A migrated database of the server's own, and sessions on it for the test's setup."""
    url = databases.create()
    engine = make_engine(url, pool_size=1)
    yield url, session_factory(engine)
    engine.dispose()


def test_serve_answers_signed_requests_over_tcp(
    served_sessions: tuple[str, sessionmaker[Session]], tmp_path: Path
) -> None:
    url, sessions = served_sessions
    partner = make_partner(sessions)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    process = serve(port, url, log)
    try:
        wait_until_up(process, base_url, log)
        ready = httpx.get(f"{base_url}/readyz", timeout=5.0)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}

        client = PartnerClient(base_url, partner.key_id, partner.private_key, timeout=10.0)
        try:
            assert client.get("/v1/partner")["id"] == partner.id
            link = client.post("/v1/members", link_body("over-tcp"))
            assert link["customer_ref"] == "over-tcp"
            unsigned = httpx.get(f"{base_url}/v1/partner", timeout=5.0)
            assert unsigned.status_code == 401
            assert unsigned.headers["content-type"] == "application/problem+json"
        finally:
            client.close()
    finally:
        stop(process)


def test_the_listening_socket_gives_every_connection_no_delay() -> None:
    """Answers go out as soon as they are written, on the standard event loop too: without
    TCP_NODELAY an answer in two writes waits for the client's delayed acknowledgement."""
    listening = server.listening_socket("127.0.0.1", 0)
    accepted: list[int] = []

    async def check() -> None:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = await asyncio.start_server(connected, sock=listening)
        _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        while not accepted:
            await asyncio.sleep(0.01)
        writer.close()
        listener.close()
        await listener.wait_closed()

    asyncio.run(check())
    assert accepted == [1]


def test_serve_refuses_an_unmigrated_database(databases: Databases) -> None:
    url = databases.create(migrated=False)
    result = subprocess.run(
        [sys.executable, "-m", "clearinghouse", "serve", "--port", str(free_port())],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "clearinghouse db upgrade" in result.stderr
