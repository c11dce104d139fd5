"""HTTP benchmark: the signed partner API end to end, server and database on this machine.

    .venv/bin/python -m bench.http_bench [--seconds 5] [--connections 1,4,16,64]
        [--server-workers 2] [--scenarios accrual,redeem,...] [--database-url URL]

On a scratch database (embedded PostgreSQL unless --database-url), it sets a partner up through
the `clearinghouse` command, starts `clearinghouse serve`, links and funds 500 members through
the signed API, and drives pre-signed requests from a lean asyncio load generator in its own
process over N kept-alive connections. Each case: 1 s warm-up, then --seconds measured. A pgbench
floor writes the same number of accrual-shaped entries through `ledger_post`. It prints Markdown
tables, whether each aim is met (never failing on one), and the verdict of
`clearinghouse ledger check`; it exits 1 only if the books do not hold or the server did not
start. It drives the system only through the command, the HTTP API and plain SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import importlib
import json
import math
import multiprocessing
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import psycopg

from bench.common import (
    CpuSample,
    Measurement,
    PgBench,
    background_load,
    bench_server,
    find_pgbench,
    percentile,
    postmaster_pid,
    print_table,
    process_tree_cpu,
    scratch_database,
    server_facts,
)
from clearinghouse import migrate
from clearinghouse.database import libpq_url
from partners.signing import HttpRequest, load_private_key_pem, sign_request

HOST = "127.0.0.1"
PARTNER = "benchshop"
MEMBERS = 500
WARMUP_SECONDS = 1.0
DRAIN_SECONDS = 5.0  # after the window, answers in flight get this long; then they are dropped
START_DELAY = 0.05  # from "signed" to the first request
SETUP_CONNECTIONS = 8
SETUP_TIMEOUT = 120.0
SETUP_ATTEMPTS = 3
FUND_AMOUNT_FEN = 5_000_000  # earns about 100,000 points on the bench's rates
REDEEM_POINTS = (100, 300)
ACCRUAL_FEN = (1_000, 50_000)
MIX_ACCRUAL_SHARE = 0.7
FIRST_RATE = 300.0  # items/s assumed per connection (up to 8) before a scenario is measured
BATCH_MARGIN = 1.5
MAX_BATCH = 40_000
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 5.0
# Signatures are accepted up to 300 s after `created`; a case is signed just before it starts.
MAX_SECONDS = 240.0
CORES = os.cpu_count() or 1
THRESHOLDS = {
    # Velocity counts holds per member per hour and points per day: the bench's own traffic.
    "redemptions_per_hour": 1_000_000,
    "points_per_day": 1_000_000_000,
    # The funding purchases are large, one per member.
    "max_accrual_fen_online": 1_000_000_000,
}

SCENARIOS = ("accrual", "redeem", "hold-capture", "mix", "member-read", "healthz")
ACCRUAL_AIM = 1_000.0  # accruals/s at 16 connections ...
ACCRUAL_P99_AIM_MS = 50.0  # ... with p99 under this ...
ACCRUAL_CPU_AIM_MS = 2.0  # ... and server + PostgreSQL CPU per accrual at most this
REDEMPTION_AIM = 800.0  # operations/s, hold+capture and one-step
READ_AIM = 3_000.0
HEALTHZ_P50_AIM_MS = 5.0

# (method, path, JSON body or None)
RequestSpec = tuple[str, str, bytes | None]


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- the load generator (its own process) -------------------------------------------------------


class Signer:
    """Signs requests as partners/client.py does (Accept; Content-Type with a body; an
    Idempotency-Key on every POST; Content-Digest and the signature from `sign_request`, with a
    fresh nonce each) and renders them as raw HTTP/1.1 bytes."""

    def __init__(self, key_pem: bytes, key_id: str, port: int) -> None:
        self._key = load_private_key_pem(key_pem)
        self._key_id = key_id
        self.authority = f"{HOST}:{port}"

    def request(self, method: str, path: str, body: bytes | None) -> bytes:
        headers = {"Host": self.authority, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        content = body or b""
        signed = HttpRequest(
            method=method,
            authority=self.authority,
            path=path,
            query="",
            headers=headers,
            body=content,
            scheme="http",
        )
        headers.update(sign_request(signed, private_key=self._key, keyid=self._key_id))
        if content:
            headers["Content-Length"] = str(len(content))
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content

    def healthz(self) -> bytes:
        return f"GET /healthz HTTP/1.1\r\nHost: {self.authority}\r\n\r\n".encode("latin-1")


@dataclass(frozen=True)
class Job:
    """What the generator sends. `specs` None: GET /healthz, unsigned, for as long as the case
    lasts. `capture`: each 2xx answer to a spec (a hold) is followed on the same connection by a
    capture of that hold, signed on the spot. `setup`: no window, every answer returned in the
    order of the specs."""

    port: int
    specs: list[RequestSpec] | None
    connections: int
    warmup: float = 0.0
    seconds: float = math.inf
    capture: bool = False
    setup: bool = False


@dataclass
class JobResult:
    ok: int = 0  # 2xx answers in the window
    ops: int = 0  # holds captured (capture answered 2xx) in the window
    items: int = 0  # specs taken in the window
    latencies_ms: list[float] = field(default_factory=list)  # of the 2xx answers in the window
    errors: Counter[str] = field(default_factory=Counter)  # in the window
    client_cpu: float = 0.0  # seconds, this process, over the window
    measured_seconds: float = 0.0
    ran_out_after: float | None = None  # seconds into the window when the batch ran out
    unanswered: int = 0  # still in flight DRAIN_SECONDS after the window
    late: int = 0  # answered after the window, to requests sent before its end
    answers: list[tuple[int, bytes]] = field(default_factory=list)  # setup only
    fatal: str | None = None


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection: one request at a time; the answer is parsed from the
    status line, the headers and a Content-Length body."""

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_at = -1  # where the body starts, once the head is in
        self.need = -1  # bytes of the whole answer, once the head is in
        self.status = 0
        self.close_after = False
        self.waiting = False
        self.sent_at = 0.0
        self.item = -1
        self.capturing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.driver.opened(self)

    def send(self, raw: bytes) -> None:
        assert self.transport is not None
        self.waiting = True
        self.sent_at = time.perf_counter()
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._head(bytes(buffer[:end])):
                return
            self.body_at = end + 4
            self.need += self.body_at
        if len(buffer) < self.need:
            return
        if len(buffer) > self.need or not self.waiting:
            self.driver.fail(f"unexpected bytes from the server: {bytes(buffer[:200])!r}")
            return
        body = bytes(buffer[self.body_at : self.need])
        buffer.clear()
        self.need = -1
        self.waiting = False
        self.driver.answered(self, self.status, body)

    def _head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.") or len(lines[0]) < 12:
            self.driver.fail(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
            return False
        self.status = int(lines[0][9:12])
        length = -1
        self.close_after = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                self.driver.fail(f"Transfer-Encoding {value.strip()!r} is not supported")
                return False
            elif name == b"connection":
                self.close_after = value.strip().lower() == b"close"
        if length < 0:
            if self.status in (204, 304) or 100 <= self.status < 200:
                length = 0
            else:
                self.driver.fail(f"answer {self.status} without Content-Length")
                return False
        self.need = length
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.lost(self)


class _Driver:
    """Runs one job: keeps `connections` connections busy, each sending its next request as soon
    as the previous answer is complete, until the window ends or the batch runs out."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        job: Job,
        requests: list[bytes] | None,
        signer: Signer,
        start: float,
    ) -> None:
        self.loop = loop
        self.port = job.port
        self.job = job
        self.requests = requests
        self.healthz = signer.healthz()
        self.signer = signer
        self.start = start
        self.window_start = start + job.warmup
        self.window_end = self.window_start + job.seconds
        self.result = JobResult()
        if job.setup:
            self.result.answers = [(0, b"no answer")] * len(requests or [])
        self.next_item = 0
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.cpu_start = 0.0
        self.window_opened = False
        self.window_closed = False
        self.last_answer = self.window_start

    async def run(self) -> JobResult:
        loop = self.loop
        now = time.perf_counter()
        timers: list[asyncio.TimerHandle] = []
        if not self.job.setup:
            timers.append(loop.call_later(max(0.0, self.window_start - now), self._window_opens))
            timers.append(loop.call_later(max(0.0, self.window_end - now), self._window_closes))
            deadline = self.window_end + DRAIN_SECONDS
        else:
            deadline = self.start + SETUP_TIMEOUT
        abort = loop.call_later(max(0.0, deadline - now), self._abort)
        await asyncio.sleep(max(0.0, self.start - now))
        for _ in range(self.job.connections):
            self._spawn_open()
        await self.done
        abort.cancel()
        for timer in timers:
            timer.cancel()
        if self.window_opened and not self.window_closed:
            self.result.client_cpu = time.process_time() - self.cpu_start
        for task in self.tasks:
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        if self.job.setup:
            self.result.measured_seconds = time.perf_counter() - self.start
        elif self.result.ran_out_after is not None:
            self.result.measured_seconds = max(0.0, self.last_answer - self.window_start)
        else:
            self.result.measured_seconds = self.job.seconds
        return self.result

    # the window

    def _window_opens(self) -> None:
        self.window_opened = True
        self.cpu_start = time.process_time()

    def _window_closes(self) -> None:
        self.window_closed = True
        if self.window_opened:
            self.result.client_cpu = time.process_time() - self.cpu_start
        self.stopping = True
        self._check_done()

    def _abort(self) -> None:
        for conn in list(self.connections):
            if conn.waiting:
                conn.waiting = False
                self.result.unanswered += 1
            if conn.transport is not None:
                conn.transport.abort()
        if self.result.unanswered and not self.job.setup:
            self.result.errors["no answer"] += self.result.unanswered
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, message: str) -> None:
        self.result.fatal = message
        self._abort()

    def _in_window(self, now: float) -> bool:
        return self.window_start <= now <= self.window_end

    def _check_done(self) -> None:
        if self.done.done() or not self.stopping:
            return
        if not any(conn.waiting for conn in self.connections):
            self.done.set_result(None)

    # connections

    def _spawn_open(self) -> None:
        task = self.loop.create_task(self._open())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(self) -> None:
        while not self.stopping:
            try:
                await self.loop.create_connection(lambda: _Connection(self), HOST, self.port)
                return
            except OSError:
                if self._in_window(time.perf_counter()):
                    self.result.errors["connect"] += 1
                await asyncio.sleep(0.05)

    def opened(self, conn: _Connection) -> None:
        self.connections.add(conn)
        self._next(conn)

    def lost(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if conn.waiting:
            conn.waiting = False
            now = time.perf_counter()
            if self.job.setup:
                self.result.answers[conn.item] = (0, b"connection closed")
            elif self._in_window(now):
                self.result.errors["closed"] += 1
        if not self.stopping and not self.done.done():
            self._spawn_open()
        self._check_done()

    # requests and answers

    def _next(self, conn: _Connection) -> None:
        now = time.perf_counter()
        if self.stopping or now >= self.window_end:
            self._check_done()
            return
        if self.requests is None:
            raw = self.healthz
        elif self.next_item < len(self.requests):
            conn.item = self.next_item
            raw = self.requests[self.next_item]
            self.next_item += 1
        else:
            if self.result.ran_out_after is None:
                self.result.ran_out_after = now - self.window_start
            self.stopping = True
            self._check_done()
            return
        if self._in_window(now):
            self.result.items += 1
        conn.capturing = False
        conn.send(raw)

    def answered(self, conn: _Connection, status: int, body: bytes) -> None:
        now = time.perf_counter()
        result = self.result
        if self.job.setup:
            result.answers[conn.item] = (status, body)
        elif self._in_window(now):
            self.last_answer = now
            if 200 <= status < 300:
                result.ok += 1
                result.latencies_ms.append(1000 * (now - conn.sent_at))
                if conn.capturing:
                    result.ops += 1
            else:
                result.errors[str(status)] += 1
        elif now > self.window_end:
            result.late += 1
        if conn.close_after:
            assert conn.transport is not None
            conn.transport.close()  # lost() opens another
            return
        if (
            self.job.capture
            and not conn.capturing
            and 200 <= status < 300
            and not self.stopping
            and now < self.window_end
        ):
            hold_id = _hold_id(body)
            raw = self.signer.request("POST", f"/v1/holds/{hold_id}/capture", b"{}")
            conn.send(raw)
            conn.capturing = True
            return
        self._next(conn)


def _hold_id(body: bytes) -> str:
    start = body.find(b'"hold_id":"')
    if start >= 0:
        start += len(b'"hold_id":"')
        return body[start : body.index(b'"', start)].decode("ascii")
    value = json.loads(body)["hold_id"]
    assert isinstance(value, str)
    return value


def _new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop(), "asyncio (default loop; uvloop not installed)"
    return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop()), "asyncio on uvloop"


def _generator(conn: Connection, key_pem: bytes, key_id: str) -> None:
    """The load generator's process: signs each job's requests, then runs it."""
    loop, loop_name = _new_loop()
    asyncio.set_event_loop(loop)
    signers: dict[int, Signer] = {}
    conn.send(loop_name)
    while (job := conn.recv()) is not None:
        signer = signers.get(job.port) or signers.setdefault(
            job.port, Signer(key_pem, key_id, job.port)
        )
        requests = None
        if job.specs is not None:
            requests = [signer.request(*spec) for spec in job.specs]
        start_wall = time.time() + START_DELAY
        start = time.perf_counter() + START_DELAY
        conn.send(start_wall)
        gc.collect()
        gc.disable()
        try:
            result = loop.run_until_complete(_Driver(loop, job, requests, signer, start).run())
        finally:
            gc.enable()
        conn.send(result)
    loop.close()


class LoadGenerator:
    """The generator's process (spawned, so its CPU time is its own) and its pipe."""

    def __init__(self, key_pem: bytes, key_id: str) -> None:
        self._args = (key_pem, key_id)
        self.loop_name = ""
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_generator, args=(child, *self._args), daemon=True)
        self._process.start()
        child.close()
        self.loop_name = self._receive(60.0)

    def _receive(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError
        return self._conn.recv()

    def run(
        self, job: Job, at_window: Callable[[float, float], None] | None = None
    ) -> JobResult | None:
        """Run a job; `at_window(start, end)` is called (with wall-clock times) once it is
        signed and going, to sample CPU meanwhile. None if the generator did not answer in
        time: it is then killed and a new one started."""
        self._conn.send(job)
        signing = 30.0 + 0.001 * len(job.specs or [])
        try:
            start_wall: float = self._receive(signing)
            if at_window is not None:
                window_start = start_wall + job.warmup
                at_window(window_start, window_start + job.seconds)
            budget = SETUP_TIMEOUT if job.setup else job.warmup + job.seconds + DRAIN_SECONDS
            result: JobResult = self._receive(budget + 30.0)
        except (TimeoutError, EOFError):
            self._process.kill()
            self._process.join()
            self._start()
            return None
        if result.fatal:
            raise SystemExit(f"load generator: {result.fatal}")
        return result

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


# --- the server ---------------------------------------------------------------------------------


class ServerFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


class ApiServer:
    """`clearinghouse serve` in its own session, so that it and its workers can be told apart
    and stopped together."""

    def __init__(
        self,
        executable: Path,
        env: dict[str, str],
        workdir: Path,
        workers: int,
        options: Sequence[str] = (),
    ) -> None:
        self.workers = workers
        self.port = _free_port()
        self.log = workdir / f"serve-{workers}-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(executable),
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    *options,
                ],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy()
        except ServerFailed:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerFailed(f"exited with {self.process.returncode}:\n{self.log_tail()}")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise ServerFailed(f"no answer on /healthz in {SERVER_START_TIMEOUT:.0f} s")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu(self) -> float:
        return process_tree_cpu(self.pid) if self.alive() else math.nan

    def _members(self) -> list[int]:
        """The processes of the server's session (its workers), other than the root."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            pid = int(stat.parent.name)
            if pid != self.pid and _session_of(pid) == self.pid:
                found.append(pid)
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for the session after SERVER_STOP_TIMEOUT."""
        workers = self._members()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        deadline = time.monotonic() + 5
        for pid in workers:
            while _session_of(pid) == self.pid and time.monotonic() < deadline:
                time.sleep(0.05)
            if _session_of(pid) == self.pid:
                os.kill(pid, signal.SIGKILL)


# --- the command line ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    executable: Path
    env: dict[str, str]
    workdir: Path

    def command(self, *args: str) -> list[str]:
        return [str(self.executable), *args]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            self.command(*args),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"`clearinghouse {' '.join(args)}` failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def run_together(self, *commands: Sequence[str]) -> list[str]:
        """Independent commands at once (each pays about 1.5 s of start-up)."""
        running = [
            subprocess.Popen(
                self.command(*args),
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        outputs = []
        for args, process in zip(commands, running, strict=True):
            out, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(
                    f"`clearinghouse {' '.join(args)}` failed ({process.returncode}):\n{out}{err}"
                )
            outputs.append(out)
        return outputs


def set_up_partner(cli: Cli) -> tuple[str, bytes]:
    """The partner, its key, rates, issuance limit and risk thresholds; the key id and PEM."""
    cli.run("partner", "create", PARTNER, "--name", "Bench shop", "--kind", "online_merchant")
    key_file = cli.workdir / f"{PARTNER}.pem"
    thresholds = cli.workdir / "thresholds.json"
    thresholds.write_text(json.dumps(THRESHOLDS))
    key_out, *_ = cli.run_together(
        ("partner", "key", "generate", PARTNER, "--out", str(key_file)),
        ("partner", "rates", "set", PARTNER, "--earn-rate", "1", "--issue-price", "0.01")
        + ("--redemption-value", "0.009"),
        ("partner", "limit", "set", PARTNER, "--fen", "1000000000000"),
        ("fraud", "set", str(thresholds), "--partner", PARTNER),
    )
    # "key id benchshop-1a2b3c4d; private key written to FILE"
    first = key_out.strip().split(";", 1)[0].split()
    if len(first) != 3 or first[:2] != ["key", "id"]:
        raise SystemExit(f"cannot read the key id from: {key_out!r}")
    return first[2], key_file.read_bytes()


# --- the cases ----------------------------------------------------------------------------------


@dataclass
class Members:
    """The linked members, and the points each still has for redemptions the bench has signed."""

    ids: list[str]
    points: dict[str, int]
    per_purchase: int  # fewest points a funding purchase earned


def _setup_job(
    generator: LoadGenerator, port: int, specs: list[RequestSpec], what: str
) -> list[tuple[int, Any]]:
    """Send setup requests (idempotent in effect) until each is answered 2xx, up to
    SETUP_ATTEMPTS rounds; the status and parsed JSON of each."""
    answers: list[tuple[int, Any] | None] = [None] * len(specs)
    pending = list(range(len(specs)))
    for _ in range(SETUP_ATTEMPTS):
        job = Job(port, [specs[i] for i in pending], SETUP_CONNECTIONS, setup=True)
        result = generator.run(job)
        if result is None:
            continue
        failed = []
        for i, (status, body) in zip(pending, result.answers, strict=True):
            if 200 <= status < 300:
                answers[i] = (status, json.loads(body))
            else:
                failed.append((i, status, body))
        pending = [i for i, _, _ in failed]
        if not pending:
            return [a for a in answers if a is not None]
        _, status, body = failed[0]
        _progress(f"{what}: {len(failed)} failed (e.g. {status} {body[:200]!r}); again")
    raise SystemExit(f"{what}: {len(pending)} requests never succeeded")


def _purchase(member: str, amount_fen: int, occurred_at: str, prefix: str) -> RequestSpec:
    body = {
        "partner_txn_id": f"{prefix}-{uuid.uuid4().hex}",
        "member_id": member,
        "amount_fen": amount_fen,
        "occurred_at": occurred_at,
    }
    return ("POST", "/v1/purchases", _json(body))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fund(generator: LoadGenerator, port: int, members: Members, purchases: list[str]) -> None:
    """One funding purchase per entry of `purchases` (member ids); the points are counted."""
    now = _now()
    specs = [_purchase(m, FUND_AMOUNT_FEN, now, "fund") for m in purchases]
    answers = _setup_job(generator, port, specs, "funding")
    for (_, answer), member in zip(answers, purchases, strict=True):
        if answer.get("review_case_id"):
            raise SystemExit(f"a funding purchase went to risk review: {answer}")
        members.points[member] += int(answer["points"])
        if members.per_purchase <= 0 or answer["points"] < members.per_purchase:
            members.per_purchase = int(answer["points"])


def link_and_fund(generator: LoadGenerator, port: int) -> Members:
    specs: list[RequestSpec] = [
        ("POST", "/v1/members", _json({"customer_ref": f"bench-{i}"})) for i in range(MEMBERS)
    ]
    ids = [str(answer["member_id"]) for _, answer in _setup_job(generator, port, specs, "linking")]
    members = Members(ids, dict.fromkeys(ids, 0), 0)
    fund(generator, port, members, ids)
    return members


def make_specs(
    scenario: str, count: int, members: Members, rng: random.Random
) -> list[RequestSpec] | None:
    if scenario == "healthz":
        return None
    now = _now()
    specs: list[RequestSpec] = []
    for _ in range(count):
        member = rng.choice(members.ids)
        if scenario == "accrual" or (scenario == "mix" and rng.random() < MIX_ACCRUAL_SHARE):
            specs.append(_purchase(member, rng.randint(*ACCRUAL_FEN), now, "acc"))
        elif scenario in ("mix", "member-read"):
            specs.append(("GET", f"/v1/members/{member}", None))
        else:
            points = rng.randint(*REDEEM_POINTS)
            path = "/v1/redemptions" if scenario == "redeem" else "/v1/holds"
            specs.append(("POST", path, _json({"member_id": member, "points": points})))
    return specs


def cover_redemptions(
    generator: LoadGenerator, port: int, members: Members, specs: list[RequestSpec]
) -> int:
    """Fund members until each has the points of every redemption signed for it (counted as
    spent whether or not it is sent); the number of funding purchases made."""
    demand: Counter[str] = Counter()
    for _, _, body in specs:
        assert body is not None
        request = json.loads(body)
        demand[request["member_id"]] += request["points"]
    purchases: list[str] = []
    for member, points in demand.items():
        short = points - members.points[member]
        if short > 0:
            purchases += [member] * math.ceil(short / max(members.per_purchase, 1))
    if purchases:
        _progress(f"  funding {len(purchases)} more purchases first")
        fund(generator, port, members, purchases)
    for member, points in demand.items():
        members.points[member] -= points
        if members.points[member] < 0:
            raise SystemExit(f"member {member} is short of {-members.points[member]} points")
    return len(purchases)


@dataclass(frozen=True)
class Case:
    scenario: str
    workers: int
    connections: int
    result: JobResult | None  # None: the generator did not answer in time
    batch: int  # requests (or holds) signed beforehand; 0 for healthz
    server_cpu: float
    database: CpuSample
    note: str = ""
    stalled: bool = False  # the server is to be restarted before the next case

    @property
    def seconds(self) -> float:
        return self.result.measured_seconds if self.result else 0.0

    def _per_second(self, count: int) -> float:
        return count / self.seconds if self.seconds > 0.05 else 0.0

    @property
    def rate(self) -> float:
        return self._per_second(self.result.ok) if self.result else 0.0

    @property
    def op_rate(self) -> float:
        return self._per_second(self.result.ops) if self.result else 0.0

    @property
    def item_rate(self) -> float:
        return self._per_second(self.result.items) if self.result else 0.0

    def ms_per(self, seconds: float, count: int | None = None) -> float:
        if self.result is None:
            return math.nan
        n = self.result.ok if count is None else count
        return 1000 * seconds / n if n else math.nan

    @property
    def client_cpu(self) -> float:
        return self.result.client_cpu if self.result else math.nan

    @property
    def machine_busy(self) -> float:
        return self.database.busy / self.database.total

    @property
    def other_load(self) -> float:
        used = self.server_cpu + self.database.server + self.client_cpu
        return max(0.0, self.database.busy - used) / self.database.total

    def p(self, q: int) -> float:
        return percentile(self.result.latencies_ms, q) if self.result else math.nan

    @property
    def cpu_per_item(self) -> float:
        """Seconds of server, database and client CPU per spec taken."""
        if self.result is None or not self.result.items:
            return math.nan
        return (self.server_cpu + self.database.server + self.client_cpu) / self.result.items


def estimate_batch(history: list[Case], scenario: str, connections: int, seconds: float) -> int:
    """Specs to sign for a case: the best rate this scenario could reach at this many
    connections, judged from its earlier cases (scaled by connections, but not beyond what the
    machine's cores can do at the CPU per spec measured), x1.5."""
    rate = 0.0
    earlier = [c for c in history if c.scenario == scenario and c.result and c.item_rate > 0]
    for case in earlier:
        scaled = case.item_rate * max(1.0, connections / case.connections)
        if case.result is not None and case.result.ran_out_after is not None:
            scaled *= 2  # it did not show how fast it can go
        ceiling = CORES / case.cpu_per_item if case.cpu_per_item > 0 else math.inf
        rate = max(rate, min(scaled, 1.2 * ceiling))
    if not earlier:
        rate = FIRST_RATE * min(connections, 8)
    wanted = rate * (WARMUP_SECONDS + seconds) * BATCH_MARGIN + 20 * connections
    return int(min(MAX_BATCH, max(100 + 4 * connections, wanted)))


def measure(
    generator: LoadGenerator,
    server: ApiServer,
    members: Members,
    history: list[Case],
    scenario: str,
    connections: int,
    seconds: float,
    postmaster: int,
    rng: random.Random,
) -> Case:
    batch = estimate_batch(history, scenario, connections, seconds)
    specs = make_specs(scenario, batch, members, rng)
    if specs is not None and scenario in ("redeem", "hold-capture"):
        cover_redemptions(generator, server.port, members, specs)
    samples: dict[str, tuple[float, CpuSample]] = {}

    def at_window(start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.time()))
        samples["start"] = (server.cpu(), CpuSample.take(postmaster))
        time.sleep(max(0.0, end - time.time()))
        samples["end"] = (server.cpu(), CpuSample.take(postmaster))

    job = Job(
        server.port,
        specs,
        connections,
        warmup=WARMUP_SECONDS,
        seconds=seconds,
        capture=scenario == "hold-capture",
    )
    result = generator.run(job, at_window)
    notes = []
    stalled = not server.alive()
    if result is None:
        notes.append("the load generator did not finish in time (killed)")
        stalled = True
    else:
        if result.ran_out_after is not None:
            notes.append(
                f"the {len(specs or [])} signed requests ran out {result.ran_out_after:.1f} s "
                "into the window"
            )
        elif not result.ok and not result.errors:
            late = f" ({result.late} came after it)" if result.late else ""
            notes.append(f"no answer at all in the window{late}")
            stalled = True
        if result.unanswered:
            notes.append(
                f"{result.unanswered} requests still unanswered {DRAIN_SECONDS:.0f} s after "
                "the window"
            )
            stalled = True
    if not server.alive():
        notes.append(f"the server exited ({server.process.returncode})")
    if stalled:
        notes.append("server restarted before the next case")
    if "end" not in samples:
        now = (server.cpu(), CpuSample.take(postmaster))
        samples.setdefault("start", now)
        samples["end"] = now
    (server_before, db_before), (server_after, db_after) = samples["start"], samples["end"]
    return Case(
        scenario,
        server.workers,
        connections,
        result,
        len(specs or []),
        server_after - server_before,
        db_after - db_before,
        "; ".join(notes),
        stalled,
    )


# --- the floor: pgbench through ledger_post -----------------------------------------------------

# An accrual-shaped entry on the accounts the setup made: points from the partner's issuance to
# a member, the issue value from its headroom to its exposure. pgbench reads `:name` as a
# variable even in a string literal, hence the pieces joined with ':'.
FLOOR_SCRIPT = r"""\set mi random(1, :members)
\set points random(20, 1000)
\set neg -:points
\set value 1 + :points / 100
\set negvalue -:value
BEGIN;
SELECT p.entry_id
  FROM (SELECT gen_random_uuid()::text AS k) AS g,
       ledger_post(
           p_kind => 'accrual', p_origin => 'bench-floor', p_idempotency_key => g.k,
           p_request_hash => sha256(convert_to(g.k, 'UTF8')), p_occurred_at => now(),
           p_metadata => '{}', p_reverses => NULL,
           p_addresses => ARRAY['partner' || ':' || '@PARTNER@' || ':' || 'issued',
                                'member' || ':' || (@MEMBERS@)[:mi] || ':' || 'available',
                                'partner' || ':' || '@PARTNER@' || ':' || 'headroom',
                                'partner' || ':' || '@PARTNER@' || ':' || 'exposure'],
           p_assets => ARRAY['PTS', 'PTS', 'CNY', 'CNY'],
           p_amounts => ARRAY[CAST(:neg AS bigint), CAST(:points AS bigint),
                              CAST(:negvalue AS bigint), CAST(:value AS bigint)]) AS p;
COMMIT;
"""


def floor_script(url: str, members: Members) -> str:
    """The script, on the partner's and members' accounts, looked up by address."""
    wanted = [f"partner:{PARTNER}:{kind}" for kind in ("issued", "headroom", "exposure")]
    wanted += [f"member:{m}:available" for m in members.ids]
    with psycopg.connect(libpq_url(url)) as conn:
        found = {
            row[0]
            for row in conn.execute(
                "SELECT address FROM accounts WHERE address = ANY(%s)", [wanted]
            ).fetchall()
        }
    missing = [a for a in wanted if a not in found]
    if missing:
        raise SystemExit(f"accounts missing for the floor: {missing[:5]}")
    ids = ", ".join(f"'{m}'" for m in members.ids)
    return FLOOR_SCRIPT.replace("@PARTNER@", PARTNER).replace("@MEMBERS@", f"ARRAY[{ids}]")


# --- the report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _errors(case: Case) -> str:
    if case.result is None:
        return "timeout"
    if not case.result.errors:
        return "0"
    return ", ".join(f"{n}×{what}" for what, n in sorted(case.result.errors.items()))


def print_scenario(scenario: str, cases: list[Case]) -> None:
    holds = scenario == "hold-capture"
    print(f"### {scenario}\n")
    header = ["server workers", "connections", "requests/s"]
    header += ["operations/s"] if holds else []
    header += ["p50 ms", "p95 ms", "p99 ms", "errors"]
    header += ["server CPU ms/req", "PostgreSQL CPU ms/req", "server+PG ms/req"]
    header += ["server+PG ms/op"] if holds else []
    header += ["client CPU ms/req", "machine busy", "other load"]
    rows: list[list[object]] = []
    for c in cases:
        row: list[object] = [c.workers, c.connections, f"{c.rate:,.0f}"]
        row += [f"{c.op_rate:,.0f}"] if holds else []
        row += [_ms(c.p(50)), _ms(c.p(95)), _ms(c.p(99)), _errors(c)]
        both = c.server_cpu + c.database.server
        row += [_ms(c.ms_per(c.server_cpu)), _ms(c.ms_per(c.database.server)), _ms(c.ms_per(both))]
        row += [_ms(c.ms_per(both, c.result.ops if c.result else 0))] if holds else []
        row += [_ms(c.ms_per(c.client_cpu)), f"{c.machine_busy:.0%}", f"{c.other_load:.0%}"]
        rows.append(row)
    print_table(header, rows)
    for c in cases:
        if c.note:
            print(f"- {c.workers} workers × {c.connections} connections: {c.note}")
    if holds:
        print(
            "- requests are holds and captures together; a capture is signed by the load "
            "generator when its hold's answer arrives, so its signing is in the client CPU."
        )
    if any(c.note for c in cases) or holds:
        print()


def print_floor(floor: dict[tuple[int, int], Measurement], accruals: list[Case]) -> None:
    print("### Floor: the same entries through `ledger_post` (pgbench), beside the accruals\n")
    rows: list[list[object]] = []
    for c in accruals:
        m = floor.get((c.workers, c.connections))
        if m is None:
            continue
        both = c.ms_per(c.server_cpu + c.database.server)
        rows.append(
            [
                c.workers,
                c.connections,
                f"{c.rate:,.0f}",
                f"{m.rate:,.0f}",
                f"{c.rate / m.rate:.1%}" if m.rate else "-",
                f"{m.entries:,}",
                _ms(m.percentile(50)),
                _ms(m.percentile(95)),
                _ms(m.percentile(99)),
                m.failures,
                _ms(both),
                _ms(m.server_cpu_ms),
                f"{both / m.server_cpu_ms:.1f}×" if m.server_cpu_ms else "-",
                _ms(m.client_cpu_ms),
                f"{m.machine_busy:.0%}",
                f"{m.other_load:.0%}",
            ]
        )
    print_table(
        [
            "server workers",
            "connections",
            "server accruals/s",
            "floor entries/s",
            "server/floor",
            "floor entries",
            "floor p50 ms",
            "floor p95 ms",
            "floor p99 ms",
            "floor failed",
            "server+PG CPU ms/accrual",
            "PG CPU ms/floor entry",
            "CPU ratio",
            "pgbench CPU ms/entry",
            "machine busy",
            "other load",
        ],
        rows,
    )
    print(
        "The floor writes, with pgbench (`--protocol=prepared`, one thread per connection, "
        "`--transactions` so that it writes as many entries as the accrual case did), one "
        "4-posting accrual entry per transaction through `ledger_post` on the bench's partner and "
        "members: the database's share of an accrual, without HTTP, signatures, idempotency, "
        "rules, lots or Python.\n"
    )


def _rate(case: Case) -> float:
    return case.rate


def _op_rate(case: Case) -> float:
    return case.op_rate


def _best(cases: list[Case], value: Callable[[Case], float]) -> Case | None:
    return max(cases, key=value, default=None)


def print_aims(cases: list[Case], workers: Sequence[int], connections: Sequence[int]) -> None:
    print("### Aims\n")

    def of(scenario: str, w: int) -> list[Case]:
        return [c for c in cases if c.scenario == scenario and c.workers == w]

    lines = []
    for w in workers:
        accrual = [c for c in of("accrual", w) if c.connections == 16]
        if not accrual:
            lines.append(
                f"accrual >= {ACCRUAL_AIM:,.0f}/s at 16 connections ({w} workers): not measured"
            )
        else:
            c = accrual[0]
            both = c.ms_per(c.server_cpu + c.database.server)
            met = (
                c.rate >= ACCRUAL_AIM
                and c.p(99) < ACCRUAL_P99_AIM_MS
                and both <= ACCRUAL_CPU_AIM_MS
            )
            lines.append(
                f"accrual >= {ACCRUAL_AIM:,.0f}/s at 16 connections with p99 < "
                f"{ACCRUAL_P99_AIM_MS:.0f} ms and server+PG CPU <= {ACCRUAL_CPU_AIM_MS:.0f} ms "
                f"({w} workers): **{'met' if met else 'MISSED'}** "
                f"({c.rate:,.0f}/s, p99 {_ms(c.p(99))} ms, {_ms(both)} ms)"
            )
        for scenario, label, rate in (
            ("hold-capture", "hold+capture", _op_rate),
            ("redeem", "one-step redemption", _rate),
        ):
            best = _best(of(scenario, w), rate)
            if best is None:
                lines.append(f"{label} >= {REDEMPTION_AIM:,.0f} ops/s ({w} workers): not measured")
            else:
                met = rate(best) >= REDEMPTION_AIM
                lines.append(
                    f"{label} >= {REDEMPTION_AIM:,.0f} operations/s ({w} workers): "
                    f"**{'met' if met else 'MISSED'}** (best {rate(best):,.0f}/s at "
                    f"{best.connections} connections)"
                )
        best = _best(of("member-read", w), _rate)
        if best is None:
            lines.append(f"member read >= {READ_AIM:,.0f}/s ({w} workers): not measured")
        else:
            met = best.rate >= READ_AIM
            lines.append(
                f"member read >= {READ_AIM:,.0f}/s ({w} workers): **{'met' if met else 'MISSED'}** "
                f"(best {best.rate:,.0f}/s at {best.connections} connections)"
            )
    # The aim is about the wait a kept-alive connection adds to every request (the stall of
    # Nagle's algorithm against a delayed acknowledgement), so it is judged where requests do
    # not queue behind each other: one connection at a time.
    health = [c for c in cases if c.scenario == "healthz" and c.connections == 1]
    if not health:
        lines.append(
            f"kept-alive /healthz p50 < {HEALTHZ_P50_AIM_MS:.0f} ms (1 connection): not measured"
        )
    else:
        seen = ", ".join(f"{c.workers}w {_ms(c.p(50))} ms" for c in health)
        missed = [c for c in health if not c.p(50) < HEALTHZ_P50_AIM_MS]
        lines.append(
            f"kept-alive /healthz p50 < {HEALTHZ_P50_AIM_MS:.0f} ms at every server worker count "
            f"(1 connection; more connections queue): **{'met' if not missed else 'MISSED'}**"
            f" ({seen})"
        )
    for line in lines:
        print(f"- {line}")
    print()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the run ------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = sorted({int(n) for n in text.split(",") if n.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("positive integers, comma-separated")
    return values


def _scenarios(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return [s for s in SCENARIOS if s in chosen]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument(
        "--connections", type=_int_list, default=[1, 4, 16, 64], help="default 1,4,16,64"
    )
    parser.add_argument(
        "--server-workers", type=_int_list, default=[2], help="uvicorn workers, default 2"
    )
    parser.add_argument(
        "--scenarios", type=_scenarios, default=list(SCENARIOS), help=", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--database-url", help="a local PostgreSQL server (default: an embedded one)"
    )
    parser.add_argument(
        "--serve-options",
        type=shlex.split,
        default=[],
        help='more options for `clearinghouse serve`, e.g. "--loop asyncio --http h11"',
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be above 0 and at most {MAX_SECONDS:.0f}")
    return args


def keep_statistics(url: str) -> None:
    """VACUUM ANALYZE, as autovacuum keeps a live database: the planner's statistics follow the
    tables as the run grows them, whether or not the server runs autovacuum."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def run_cases(
    args: argparse.Namespace,
    cli: Cli,
    env: dict[str, str],
    postmaster: int,
    cases: list[Case],
) -> tuple[Members | None, float, str, bool]:
    """Every server worker count, scenario and connection count. Returns the members, the set-up
    time, the generator's loop, and whether the server always started. A server that stalled
    (requests still unanswered after the drain, or none answered in a window) or exited is
    restarted before the next case, so that one case's trouble does not spill into the next."""
    rng = random.Random(20261130)
    began = time.perf_counter()
    key_id, key_pem = set_up_partner(cli)
    generator = LoadGenerator(key_pem, key_id)
    members: Members | None = None
    setup_seconds = 0.0
    server: ApiServer | None = None
    try:
        for workers in args.server_workers:
            _progress(f"starting the server with {workers} workers")
            server = ApiServer(cli.executable, env, cli.workdir, workers, args.serve_options)
            if members is None:
                members = link_and_fund(generator, server.port)
                setup_seconds = time.perf_counter() - began
                _progress(f"set up in {setup_seconds:.1f} s")
            for scenario in args.scenarios:
                keep_statistics(env["DATABASE_URL"])
                for n in args.connections:
                    if server is None:
                        _progress(f"starting the server with {workers} workers again")
                        server = ApiServer(
                            cli.executable, env, cli.workdir, workers, args.serve_options
                        )
                    case = measure(
                        generator,
                        server,
                        members,
                        cases,
                        scenario,
                        n,
                        args.seconds,
                        postmaster,
                        rng,
                    )
                    cases.append(case)
                    _progress(
                        f"{workers}w {scenario:>12} × {n:>2}: {case.rate:,.0f} req/s"
                        + (f", {case.op_rate:,.0f} ops/s" if scenario == "hold-capture" else "")
                        + f", p50 {_ms(case.p(50))} ms, errors {_errors(case)}"
                        + (f" ({case.note})" if case.note else "")
                    )
                    if case.stalled:
                        server.stop()
                        server = None
            if server is not None:
                server.stop()
                server = None
    except ServerFailed as exc:
        _progress(f"the server did not start: {exc}")
        return members, setup_seconds, generator.loop_name, False
    finally:
        generator.close()
        if server is not None:
            server.stop()
    return members, setup_seconds, generator.loop_name, True


def run_floor(
    url: str, members: Members, accruals: list[Case], postmaster: int, pgbench: Path
) -> dict[tuple[int, int], Measurement]:
    floor: dict[tuple[int, int], Measurement] = {}
    script = floor_script(url, members)
    with tempfile.TemporaryDirectory(prefix="http-bench-pgbench-") as workdir:
        bench = PgBench(pgbench, url, postmaster, Path(workdir), {"members": len(members.ids)})
        for case in accruals:
            if case.result is None or not case.result.ok:
                continue
            per_client = max(1, round(case.result.ok / case.connections))
            _progress(f"floor: {per_client * case.connections} entries × {case.connections}")
            floor[case.workers, case.connections] = bench.measure(
                script, f"floor-{case.connections}", case.connections, transactions=per_client
            )
    return floor


def server_env(url: str, workdir: Path) -> dict[str, str]:
    """The environment of the server and the commands: the scratch database, a home in
    `workdir`, and a partner rate limit the bench never reaches."""
    (workdir / "home").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CLEARINGHOUSE_HOME": str(workdir / "home"),
        # One partner sends everything: its rate limit must not be what is measured (the
        # limit is still counted on every request, as in service).
        "CLEARINGHOUSE_RATE_PARTNER_REQUESTS": str(10**9),
    }


def ledger_check(cli: Cli) -> tuple[bool, str]:
    """`clearinghouse ledger check`: whether the books hold, and what it said."""
    _progress("clearinghouse ledger check")
    check = subprocess.run(
        cli.command("ledger", "check"),
        env=cli.env,
        cwd=cli.workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    return check.returncode == 0, (check.stdout + check.stderr).strip()


def main(argv: Sequence[str] | None = None) -> int:
    began = time.perf_counter()
    args = parse_args(argv)
    executable = Path(sys.executable).parent / "clearinghouse"
    if not executable.is_file():
        raise SystemExit(f"{executable} not found: run `make install`")
    cases: list[Case] = []
    with (
        bench_server(args.database_url, prefix="http-bench-") as server_url,
        scratch_database(server_url, prefix="http_bench") as url,
        tempfile.TemporaryDirectory(prefix="http-bench-") as tmp,
    ):
        workdir = Path(tmp)
        postmaster = postmaster_pid(url)
        idle_load = background_load(postmaster)
        _progress("migrating the scratch database")
        migrate.upgrade(url)
        facts = server_facts(url)
        pgbench = find_pgbench(int(facts["server_version_num"]) // 10000)
        env = server_env(url, workdir)
        cli = Cli(executable, env, workdir)
        members, setup_seconds, loop_name, started = run_cases(args, cli, env, postmaster, cases)
        accruals = [c for c in cases if c.scenario == "accrual"]
        floor = (
            run_floor(url, members, accruals, postmaster, pgbench)
            if members is not None and accruals
            else {}
        )
        books, verdict_text = ledger_check(cli)

        print(f"## HTTP API benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
        print(
            f"PostgreSQL {facts['server_version']} "
            f"({'configured server' if args.database_url else 'embedded, temporary'}), "
            f"fsync={facts['fsync']}, synchronous_commit={facts['synchronous_commit']}, "
            f"autovacuum={facts['autovacuum']}; {CORES} CPUs shared by the server, PostgreSQL "
            f"and the load generator; pgbench {pgbench}.  "
        )
        print(
            f"Server: `clearinghouse serve` ({executable}), "
            f"{', '.join(map(str, args.server_workers))} worker(s)"
            f"{' with ' + shlex.join(args.serve_options) if args.serve_options else ''}. "
            "Load generator: one process, "
            f"{loop_name or 'asyncio'}, raw HTTP/1.1 over kept-alive connections, requests "
            "signed beforehand (Ed25519, `partners.signing.sign_request`).  "
        )
        print(f"Machine busy before the run (other work on it): {idle_load:.0%}.  ")
        print(
            "Before each scenario the bench runs `VACUUM ANALYZE` on its database, as autovacuum "
            "keeps a live one (outside the measured windows).  "
        )
        if members is not None:
            print(
                f"Set-up (partner through the CLI, {MEMBERS} members linked and funded through "
                f"the API): {setup_seconds:.1f} s.  "
            )
        print(
            f"Each case: {WARMUP_SECONDS:.0f} s warm-up, then {args.seconds:g} s measured. "
            "requests/s counts 2xx answers in the window and the latency percentiles are "
            "theirs; errors are the other answers (by status) and transport failures in the "
            "window; CPU per request is per 2xx answer. Other load: the share of the machine "
            "used by neither the server, PostgreSQL nor the load generator.\n"
        )
        for scenario in args.scenarios:
            chosen = [c for c in cases if c.scenario == scenario]
            if chosen:
                print_scenario(scenario, chosen)
        if floor:
            print_floor(floor, accruals)
        print_aims(cases, args.server_workers, args.connections)
        state = "holds" if books else "DOES NOT HOLD"
        print(f"`clearinghouse ledger check`: {state}: {verdict_text}\n")
        if not started:
            print("**The server failed to start**: see the messages above (stderr).\n")
    print(f"Total run time: {time.perf_counter() - began:.0f} s.")
    return 0 if books and started else 1


if __name__ == "__main__":
    sys.exit(main())
