"""PostgreSQL clusters of a test's own, for what the shared test server cannot show: a streaming
replica, WAL archiving, a restore to a point in time. Debian's PostgreSQL 15 binaries run them as
the `postgres` OS user (the server refuses to run as root), on free ports of 127.0.0.1, in a
temporary folder; `own_clusters()` stops every cluster it started and removes the folder,
whatever the test did. Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "postgres"
WAIT_SECONDS = 30.0

# What every cluster of the tests runs with: reachable on loopback alone, its socket in its own
# folder, no flushing to disk (nothing of it outlives the test).
BASE_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "replica",
    "fsync": "off",
    "full_page_writes": "off",
}


def _as_owner(*command: str | Path) -> list[str]:
    args = [str(part) for part in command]
    return ["runuser", "-u", OWNER, "--", *args] if os.geteuid() == 0 else args


def _run(*command: str | Path) -> None:
    done = subprocess.run(
        _as_owner(*command), capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stdout}{done.stderr}")


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OWNER, OWNER)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def wait_for(what: str, ready: Callable[[], bool]) -> None:
    """Poll `ready` until it holds; fail saying `what` after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting {WAIT_SECONDS:.0f} s for {what}")
        time.sleep(0.05)


@dataclass
class Cluster:
    data: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def configure(self, **settings: str) -> None:
        """Add settings to its postgresql.conf (a later line wins over an earlier one)."""
        with (self.data / "postgresql.conf").open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {_quoted(value)}\n")

    def start(self) -> None:
        log = self.data.parent / f"{self.data.name}.log"
        _run(BIN / "pg_ctl", "-D", self.data, "-l", log, "-w", "-t", "30", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop")

    def one(self, query: LiteralString, params: Any = None) -> Any:
        """The first row of one statement, in a connection of its own (autocommit)."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            return conn.execute(query, params).fetchone()

    def scalar(self, query: LiteralString, params: Any = None) -> Any:
        row = self.one(query, params)
        return None if row is None else row[0]


class Clusters:
    """Clusters under one temporary folder, each started by this object and stopped by it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Cluster] = []

    def folder(self, name: str) -> Path:
        """An empty folder `name` the clusters' owner may write (a WAL archive, say)."""
        path = self.root / name
        path.mkdir()
        _own(path)
        return path

    def _start(self, data: Path, settings: dict[str, str]) -> Cluster:
        cluster = Cluster(data, _free_port())
        cluster.configure(
            **BASE_SETTINGS,
            unix_socket_directories=str(self.root),
            port=str(cluster.port),
            **settings,
        )
        self.started.append(cluster)
        cluster.start()
        return cluster

    def primary(self, name: str = "primary", **settings: str) -> Cluster:
        """A new cluster (initdb), trusting local connections and replication, started."""
        data = self.root / name
        _run(BIN / "initdb", "-D", data, "-U", OWNER, "--auth=trust", "-E", "UTF8", "--no-sync")
        return self._start(data, settings)

    def base_backup(self, of: Cluster, name: str, *, standby: bool = False) -> Path:
        """A base backup of `of` (with the WAL it needs) into folder `name`; with `standby`, set
        up to follow `of` as a streaming replica (standby.signal, primary_conninfo)."""
        target = self.root / name
        _run(
            BIN / "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(of.port), "-U", OWNER,
            "-D", target, "-X", "stream", "-c", "fast", "--no-sync",
            *(["-R"] if standby else []),
        )  # fmt: skip
        return target

    def replica_of(self, primary: Cluster, name: str = "replica") -> Cluster:
        """A streaming replica of `primary` (pg_basebackup -R), started and streaming."""
        replica = self._start(self.base_backup(primary, name, standby=True), {})
        wait_for(
            f"{name} to stream from the primary",
            lambda: replica.scalar("SELECT count(*) FROM pg_stat_wal_receiver") == 1,
        )
        return replica

    def restore(self, backup: Path, name: str, **settings: str) -> Cluster:
        """A scratch cluster from a copy of `backup`, recovering with `settings`
        (restore_command, recovery_target_time, ...) under recovery.signal, started."""
        data = self.root / name
        _run("cp", "-a", backup, data)
        (data / "recovery.signal").touch()
        _own(data / "recovery.signal")
        return self._start(data, settings)

    def close(self) -> None:
        for cluster in reversed(self.started):
            try:
                cluster.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                # Whatever stops, stops; the folder goes either way.
                continue


@contextmanager
def own_clusters() -> Iterator[Clusters]:
    """Clusters for one test, stopped and removed when it ends; the test is skipped when the
    PostgreSQL 15 server binaries are not installed."""
    if not (BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {BIN}")
    root = Path(tempfile.mkdtemp(prefix="clearinghouse-clusters-"))
    _own(root)
    clusters = Clusters(root)
    try:
        yield clusters
    finally:
        clusters.close()
        shutil.rmtree(root, ignore_errors=True)
