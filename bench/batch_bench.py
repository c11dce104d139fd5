"""Batch files: how fast the worker applies a store's end-of-day file.

    .venv/bin/python -m bench.batch_bench [--lines 10000] [--members 2000] [--stores 20]
        [--chunk 250] [--database-url URL]

On a fresh database (embedded unless --database-url or DATABASE_URL), a store chain with rates,
an issuance limit and `--stores` shops gets members, each with points from a purchase the day
before; then one file of `--lines` operations (JSON Lines) over a 12-hour trading day at its
shops, in these proportions: 85 % purchases, 5 % refunds of them, 5 % offline redemptions and
5 % voids, each of an earlier line. The bench takes the file in (`submit`, as `POST
/v1/batches` does), then times the worker applying it (`process_batches`, the server's job:
its lanes at once, each on a connection of its own), with the CPU seconds of this process and
of PostgreSQL per line from /proc. For comparison, in the same run: another such file with its
lanes one after the other on one connection, and a sample of the same mix one line per
transaction (the single calls' path without HTTP). Aim: 2,000 operations/s.
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.common import (
    CpuSample,
    background_load,
    bench_server,
    postmaster_pid,
    print_table,
    scratch_database,
    server_facts,
)
from clearinghouse import migrate
from clearinghouse.batches import service, worker
from clearinghouse.database import Tx, make_engine, session_factory
from clearinghouse.files import sha256_of
from clearinghouse.fraud import service as fraud
from clearinghouse.members.service import link_member
from partners import directory, limits
from partners.auth import PARTNER_WIDE
from partners.tables import partner_rates

AIM_PER_SECOND = 2_000


def set_up(
    sessions: sessionmaker[Session], members: int, stores: int
) -> tuple[str, list[str], list[str]]:
    partner_id = f"bench{uuid.uuid4().hex[:6]}"
    store_ids = [f"{partner_id}-{n}" for n in range(stores)]
    with sessions() as s, s.begin():
        directory.create_partner(s, partner_id, "Bench", "store_chain")
        # In effect for a month already, as a partner's rates are: the file's lines go back
        # to yesterday (`set_rates` takes effect from now on only).
        s.execute(
            partner_rates.insert().values(
                partner_id=partner_id,
                version=1,
                effective_from=datetime.now(UTC) - timedelta(days=30),
                earn_rate=Decimal(1),
                issue_price=Decimal(1),
                redemption_value=Decimal(1),
            )
        )
        limits.set_issuance_limit(s, partner_id, 10**12)
        for store_id in store_ids:
            directory.add_store(s, partner_id, store_id, name="Shop", channel="offline")
        # A busy shop passes the default daily caps; every rule still runs in full.
        fraud.publish_thresholds(
            s,
            partner_id,
            {"store_daily_accrual_fen_online": 10**12, "store_daily_accrual_fen_offline": 10**12},
        )
        ids = [link_member(s, partner_id, f"c{i}")[0].member_id for i in range(members)]
    return partner_id, store_ids, ids


def day_file(
    members: list[str], lines: int, store_ids: list[str], prefix: str
) -> list[dict[str, Any]]:
    """A chain's trading day of 12 hours, in order: purchases, and refunds, offline
    redemptions and voids of earlier lines, at its stores."""
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=15)
    step = timedelta(hours=12) / lines
    made: list[dict[str, Any]] = []
    bought: list[dict[str, Any]] = []
    for n in range(lines):
        at = (start + step * n).isoformat()
        store_id = rng.choice(store_ids)
        txn = f"{prefix}-{n}"
        roll = rng.random()
        if bought and roll < 0.05:
            target = bought.pop(rng.randrange(len(bought)))
            made.append(
                {
                    "type": "refund",
                    "partner_txn_id": txn,
                    "purchase_txn_id": target["partner_txn_id"],
                    "amount_fen": target["amount_fen"] // 2,
                }
            )
        elif bought and roll < 0.10:
            target = bought.pop(rng.randrange(len(bought)))
            made.append({"type": "void", "partner_txn_id": txn, "voids": target["partner_txn_id"]})
        elif roll < 0.15:
            made.append(
                {
                    "type": "redemption",
                    "partner_txn_id": txn,
                    "member_id": rng.choice(members),
                    "points": 100,
                    "occurred_at": at,
                    "store_id": store_id,
                }
            )
        else:
            line = {
                "type": "purchase",
                "partner_txn_id": txn,
                "member_id": rng.choice(members),
                "amount_fen": rng.randint(1_000, 50_000),
                "occurred_at": at,
                "store_id": store_id,
            }
            made.append(line)
            bought.append(line)
    return made


def _encoded(lines: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())


def _submit(sessions: sessionmaker[Session], partner_id: str, lines: list[dict[str, Any]]) -> str:
    file = _encoded(lines)
    with sessions() as s, s.begin():
        return service.submit(Tx.of(s), partner_id, "bench", PARTNER_WIDE, file, sha256_of(file)).id


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vacuumed(sessions: sessionmaker[Session]) -> None:
    """As autovacuum keeps a live database (the system server here runs without it): current
    statistics for the planner, and the visibility map for index-only scans."""
    with sessions.kw["bind"].connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def _timed(
    sessions: sessionmaker[Session], postmaster: int, batch_id: str, chunk: int, threads: int
) -> list[Any]:
    _vacuumed(sessions)
    before, own, started = CpuSample.take(postmaster), _own_cpu(), time.perf_counter()
    applied = worker.process_batches(sessions, chunk, threads=threads)
    seconds = time.perf_counter() - started
    used, own_used = CpuSample.take(postmaster) - before, _own_cpu() - own
    with sessions() as s:
        batch = service.get(Tx.of(s), None, batch_id, PARTNER_WIDE)
    return [
        applied,
        f"{seconds:.2f}",
        f"{applied / seconds:,.0f}",
        f"{own_used / applied * 1000:.3f}",
        f"{used.server / applied * 1000:.3f}",
        f"{batch.applied}/{batch.replayed}/{batch.failed}",
    ]


def run(
    sessions: sessionmaker[Session],
    postmaster: int,
    lines: int,
    members: int,
    stores: int,
    chunk: int,
) -> None:
    partner_id, store_ids, ids = set_up(sessions, members, stores)
    # Every member has points to spend, from a purchase of the day before.
    funding = [
        {
            "type": "purchase",
            "partner_txn_id": f"fund-{n}",
            "member_id": member,
            "amount_fen": 50_000,
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            "store_id": store_ids[n % stores],
        }
        for n, member in enumerate(ids)
    ]
    _submit(sessions, partner_id, funding)
    worker.process_batches(sessions, chunk)
    day = day_file(ids, lines, store_ids, "day")
    started = time.perf_counter()
    batch_id = _submit(sessions, partner_id, day)
    submit_seconds = time.perf_counter() - started
    print(f"took in {lines:,} lines in {submit_seconds:.2f} s")
    header = [
        "run",
        "lines",
        "seconds",
        "lines/s",
        "worker CPU ms/line",
        "PostgreSQL CPU ms/line",
        "applied/replayed/failed",
    ]
    lanes = worker.LANES
    rows = [
        [
            f"batch, one lane at a time, {chunk} lines a transaction",
            *_timed(sessions, postmaster, batch_id, chunk, 1),
        ]
    ]
    # The same kind of day again, its lanes at once, each on a connection of its own.
    again = _submit(sessions, partner_id, day_file(ids, lines, store_ids, "again"))
    rows.append(
        [
            f"batch, {lanes} lanes at once, {chunk} lines a transaction",
            *_timed(sessions, postmaster, again, chunk, lanes),
        ]
    )
    # And one line per transaction on one connection: the single calls' path without HTTP.
    sample = day_file(ids, min(lines, 2_000), store_ids, "single")
    single_id = _submit(sessions, partner_id, sample)
    rows.append(["one line per transaction", *_timed(sessions, postmaster, single_id, 1, 1)])
    print_table(header, rows)
    print(f"aim: {AIM_PER_SECOND:,} lines/s for the batch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=worker.CHUNK_LINES)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with bench_server(configured) as server, scratch_database(server, "batch_bench") as url:
        migrate.upgrade(url)
        print(server_facts(url))
        postmaster = postmaster_pid(url)
        print(f"background load before the run: {background_load(postmaster):.0%}")
        engine = make_engine(url, pool_size=worker.LANES)
        try:
            run(
                session_factory(engine),
                postmaster,
                args.lines,
                args.members,
                args.stores,
                args.chunk,
            )
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
