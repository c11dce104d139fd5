"""Sealing throughput, and what verifying and exporting the sealed journal cost in time and memory.

    .venv/bin/python -m bench.seal_bench [--entries N] [--members M] [--database-url URL]

On a fresh database (embedded unless --database-url or DATABASE_URL) it writes N two-posting
entries through `ledger_post` in one statement (accruals from one partner to M members), then
times `seal_all` sealing them. `clearinghouse audit verify`, `audit export` of the whole range
and `audit verify --export` of that folder then run each in a child process of their own, whose
time and peak resident memory (from wait4's rusage) are printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import psycopg

from bench.common import bench_server, scratch_database
from clearinghouse import ledger, migrate
from clearinghouse.audit import sealing
from clearinghouse.database import libpq_url, make_engine, session_factory


def _child(*args: str, url: str) -> tuple[float, float]:
    """Run `clearinghouse ARGS` and return its wall time (s) and peak RSS (MB); exit on failure."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "clearinghouse", *args],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"clearinghouse {' '.join(args)} exited {child.returncode}")
    return elapsed, usage.ru_maxrss / 1024  # kilobytes on Linux


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with bench_server(configured) as server, scratch_database(server) as url:
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=2)
        sessions = session_factory(engine)
        with sessions() as session, session.begin():
            ledger.open_accounts(
                session,
                [ledger.AccountSpec("partner:bench:issued")]
                + [ledger.AccountSpec(f"member:m{i}:available") for i in range(args.members)],
            )
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            started = time.perf_counter()
            # A statement (a transaction) per 10,000: one transaction updating the same balance
            # rows hundreds of thousands of times walks ever longer chains of row versions.
            for first in range(1, args.entries + 1, 10_000):
                conn.execute(
                    """
                    SELECT ledger_post('accrual', 'bench', 'k' || i, sha256(i::text::bytea),
                                       now(), '{}'::jsonb, NULL,
                                       ARRAY['partner:bench:issued',
                                             'member:m' || (i %% %s) || ':available'],
                                       ARRAY['PTS', 'PTS'], ARRAY[-1, 1]::bigint[])
                      FROM generate_series(%s::int, %s::int) AS i
                    """,
                    (args.members, first, min(first + 9_999, args.entries)),
                )
            written = time.perf_counter() - started
            start, end = conn.execute(
                "SELECT min(recorded_at), max(recorded_at) + interval '1 second'"
                " FROM journal_entries"
            ).fetchone() or (None, None)
            conn.execute("ANALYZE")
        started = time.perf_counter()
        blocks = sealing.seal_all(sessions, delay=timedelta(0))  # everything above is committed
        sealed = time.perf_counter() - started
        engine.dispose()
        print(f"wrote {args.entries:,} entries in {written:.1f} s")
        print(
            f"sealed them into {len(blocks)} blocks in {sealed:.1f} s: "
            f"{args.entries / sealed:,.0f} entries/s"
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "export"
            steps = {
                "audit verify": ("audit", "verify"),
                "audit export": (
                    "audit",
                    "export",
                    "--from",
                    start.isoformat(),
                    "--to",
                    end.isoformat(),
                    "--out",
                    str(folder),
                ),
                "audit verify --export": ("audit", "verify", "--export", str(folder)),
            }
            for name, command in steps.items():
                elapsed, peak = _child(*command, url=url)
                print(
                    f"{name}: {elapsed:.1f} s, {args.entries / elapsed:,.0f} entries/s, "
                    f"peak RSS {peak:,.0f} MB"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
