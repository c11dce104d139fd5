"""Ledger write benchmark: `post()` against the raw-SQL ceiling, with spread and hot accounts.

    .venv/bin/python -m bench.ledger_bench [--seconds N] [--workers 1,4,16] [--database-url URL]

Every entry is a two-posting accrual (partner issuance account -> member) committed in its own
transaction with a fresh idempotency key. For each scenario and worker count, on one fresh
database, it measures three writers:
- `post()`: worker processes, each with its own engine, one unit of work per entry;
- `ledger_post` SQL: pgbench calling the function `post()` calls, so without Python;
- raw SQL (the ceiling): pgbench inserting the entry and its postings directly; the schema's
  triggers still keep the balances and check the entry at commit.
Without --database-url or DATABASE_URL it starts an embedded PostgreSQL in a temporary folder.
Figures and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bench.common import (
    CpuSample,
    Measurement,
    PgBench,
    background_load,
    bench_server,
    find_pgbench,
    postmaster_pid,
    print_table,
    scratch_database,
    server_facts,
    verdict,
)
from clearinghouse import ledger, migrate
from clearinghouse.config import Settings
from clearinghouse.database import make_engine, session_factory, unit_of_work
from clearinghouse.errors import DomainError
from clearinghouse.ledger.tables import journal_entries, postings

PARTNERS = 64
MEMBERS = 10_000
MAX_AMOUNT = 1000
WARMUP_SECONDS = 1.0
POST_AIM = 0.60  # post() reaches at least this share of the raw-SQL ceiling
HOT_AIM = 0.80  # the hot case reaches at least this share of the spread case
# open_accounts sends 7 parameters per account; PostgreSQL takes at most 65,535 per statement.
OPEN_BATCH = 2000


@dataclass(frozen=True)
class Scenario:
    """Entries come from partners `partner_first` .. `partner_first + partner_count - 1`."""

    name: str
    partner_first: int
    partner_count: int


SPREAD = Scenario("spread", 0, PARTNERS)
# The hot partner is one more partner, outside the spread set, so its shards start untouched.
HOT = Scenario("hot", PARTNERS, 1)
SCENARIOS = (SPREAD, HOT)

WRITERS = ("post()", "ledger_post SQL", "raw SQL")


def partner_address(index: int) -> str:
    return str(ledger.Address.partner(index, "issued"))


def member_address(index: int) -> str:
    return str(ledger.Address.member(index))


# pgbench chooses accounts as the Python workers do: a partner uniformly from the scenario's set,
# a member uniformly from all, an amount from 1 to MAX_AMOUNT. The request hash is a sha256, like
# post()'s, but over the key: the content hash is Python's work, not the database's. pgbench
# reads `:name` as a variable even inside a string literal, hence `':' || 'issued'`.
_CHOICE = r"""\set pi :partner_first + random(0, :partner_count - 1)
\set mi random(0, :members - 1)
\set amount random(1, :max_amount)
\set neg -:amount
"""

# Named arguments, so that a parameter added to ledger_post fails loudly rather than shifting.
LEDGER_POST_SCRIPT = (
    _CHOICE
    + r"""BEGIN;
SELECT p.entry_id
  FROM (SELECT gen_random_uuid()::text AS k) AS g,
       ledger_post(
           p_kind => 'accrual', p_origin => 'bench-fn', p_idempotency_key => g.k,
           p_request_hash => sha256(convert_to(g.k, 'UTF8')), p_occurred_at => now(),
           p_metadata => '{}', p_reverses => NULL,
           p_addresses => ARRAY['partner:' || CAST(:pi AS text) || ':' || 'issued',
                                'member:' || CAST(:mi AS text) || ':' || 'available'],
           p_assets => ARRAY['PTS', 'PTS'],
           p_amounts => ARRAY[CAST(:neg AS bigint), CAST(:amount AS bigint)]) AS p;
COMMIT;
"""
)

# The postings go in account id order (partners were opened before members), as ledger_post
# inserts them, so balance rows are locked in the same global order.
RAW_SCRIPT = (
    _CHOICE
    + r"""\set partner_id :partner_base + :pi
\set member_id :member_base + :mi
BEGIN;
INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash, occurred_at, metadata)
SELECT 'accrual', 'bench-sql', k, sha256(convert_to(k, 'UTF8')), now(), '{}'
  FROM (SELECT gen_random_uuid()::text AS k) AS g
RETURNING id AS entry_id, recorded_at \gset
INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)
VALUES (:entry_id, :partner_id, 'PTS', :neg, :recorded_at),
       (:entry_id, :member_id, 'PTS', :amount, :recorded_at);
COMMIT;
"""
)


# --- the database -----------------------------------------------------------------------------


def open_bench_accounts(url: str) -> tuple[int, int]:
    """Open the partners' issuance accounts, then the members'; return the id of partner 0 and
    of member 0. pgbench picks accounts by id, so each group must have consecutive ids."""
    engine = make_engine(url, pool_size=1)
    try:
        with unit_of_work(session_factory(engine)) as session:
            partners = ledger.open_accounts(
                session, [ledger.AccountSpec(partner_address(i)) for i in range(PARTNERS + 1)]
            )
            members: list[ledger.Account] = []
            for start in range(0, MEMBERS, OPEN_BATCH):
                specs = [
                    ledger.AccountSpec(member_address(i))
                    for i in range(start, min(start + OPEN_BATCH, MEMBERS))
                ]
                members += ledger.open_accounts(session, specs)
    finally:
        engine.dispose()
    for group in (partners, members):
        if [a.id - group[0].id for a in group] != list(range(len(group))):
            raise RuntimeError("account ids are not consecutive; pgbench would pick wrong ones")
    assert partners[-1].id < members[0].id
    return partners[0].id, members[0].id


# --- post() in worker processes ----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    start_at: float  # wall-clock time shared by the workers: warm up until then, measure after
    seconds: float


@dataclass(frozen=True)
class WorkerResult:
    latencies: list[float]
    failures: int
    cpu_seconds: float
    finished_at: float


def _accrue(factory: sessionmaker[Session], rng: random.Random, scenario: Scenario) -> float | None:
    """Post one accrual in its own unit of work; its latency in seconds, or None if refused."""
    entry = ledger.transfer(
        kind="accrual",
        origin="bench",
        idempotency_key=uuid.uuid4().hex,
        source=partner_address(scenario.partner_first + rng.randrange(scenario.partner_count)),
        destination=member_address(rng.randrange(MEMBERS)),
        amount=rng.randint(1, MAX_AMOUNT),
        occurred_at=datetime.now(UTC),
    )
    started = time.perf_counter()
    try:
        with unit_of_work(factory) as session:
            ledger.post(session, entry)
    except (DBAPIError, DomainError):
        return None
    return time.perf_counter() - started


def _run_job(factory: sessionmaker[Session], rng: random.Random, job: Job) -> WorkerResult:
    while time.time() < job.start_at:
        _accrue(factory, rng, job.scenario)
    latencies: list[float] = []
    failures = 0
    cpu_before = time.process_time()
    end = time.perf_counter() + job.seconds
    while time.perf_counter() < end:
        latency = _accrue(factory, rng, job.scenario)
        if latency is None:
            failures += 1
        else:
            latencies.append(latency)
    return WorkerResult(latencies, failures, time.process_time() - cpu_before, time.time())


def _worker(conn: Connection, url: str, seed: int) -> None:
    # As the service will: an engine per process, one session and transaction per entry.
    engine = make_engine(url, pool_size=1)
    factory = session_factory(engine)
    rng = random.Random(seed)
    with engine.connect():
        pass  # connect now, so that no case pays for it
    conn.send("ready")
    while (job := conn.recv()) is not None:
        conn.send(_run_job(factory, rng, job))
    engine.dispose()


class WorkerPool:
    """Processes rather than threads, so that the clients' Python work (SQLAlchemy, psycopg) can
    use every core rather than one under the GIL. Spawned, not forked, so that no engine or
    connection state crosses into a child."""

    def __init__(self, size: int, url: str, postmaster: int) -> None:
        self._postmaster = postmaster
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for seed in range(size):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, url, seed), daemon=True)
            process.start()
            child.close()  # so that a worker's death reads as EOF here rather than a hang
            self._conns.append(parent)
            self._processes.append(process)
        for conn in self._conns:
            conn.recv()

    def measure(self, scenario: Scenario, workers: int, seconds: float) -> Measurement:
        job = Job(scenario, time.time() + WARMUP_SECONDS, seconds)
        for conn in self._conns[:workers]:
            conn.send(job)
        # The machine is measured from the end of the warm-up, as the workers are.
        time.sleep(max(0.0, job.start_at - time.time()))
        before = CpuSample.take(self._postmaster)
        results: list[WorkerResult] = [conn.recv() for conn in self._conns[:workers]]
        cpu = CpuSample.take(self._postmaster) - before
        entries = sum(len(r.latencies) for r in results)
        return Measurement(
            entries=entries,
            seconds=max(r.finished_at for r in results) - job.start_at,
            latencies_ms=[1000 * s for r in results for s in r.latencies],
            failures=sum(r.failures for r in results),
            cpu=cpu,
            client_cpu=sum(r.cpu_seconds for r in results),
        )

    def close(self) -> None:
        for conn, process in zip(self._conns, self._processes, strict=True):
            if process.is_alive():
                conn.send(None)
        for process in self._processes:
            process.join()


@contextmanager
def worker_pool(size: int, url: str, postmaster: int) -> Iterator[WorkerPool]:
    pool = WorkerPool(size, url, postmaster)
    try:
        yield pool
    finally:
        pool.close()


# --- the report -------------------------------------------------------------------------------

Results = dict[tuple[str, int, str], Measurement]


def print_report(results: Results, workers: Sequence[int]) -> None:
    print("\n### Every measurement\n")
    rows: list[list[object]] = []
    for scenario in SCENARIOS:
        for n in workers:
            for writer in WRITERS:
                m = results[scenario.name, n, writer]
                rows.append(
                    [
                        scenario.name,
                        n,
                        writer,
                        f"{m.rate:,.0f}",
                        f"{2 * m.rate:,.0f}",
                        f"{m.percentile(50):.2f}",
                        f"{m.percentile(95):.2f}",
                        f"{m.percentile(99):.2f}",
                        m.failures,
                        f"{m.server_cpu_ms:.2f}",
                        f"{m.client_cpu_ms:.2f}",
                        f"{m.machine_busy:.0%}",
                        f"{m.other_load:.0%}",
                    ]
                )
    print_table(
        [
            "scenario",
            "workers",
            "writer",
            "entries/s",
            "postings/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "failed",
            "server CPU ms/entry",
            "client CPU ms/entry",
            "machine busy",
            "other load",
        ],
        rows,
    )

    print(f"### post() against the raw-SQL ceiling (aim: >= {POST_AIM:.0%})\n")
    ceiling_met: list[str] = []
    ceiling_missed: list[str] = []
    rows = []
    for scenario in SCENARIOS:
        for n in workers:
            posted = results[scenario.name, n, "post()"].rate
            function = results[scenario.name, n, "ledger_post SQL"].rate
            ceiling = results[scenario.name, n, "raw SQL"].rate
            met = posted >= POST_AIM * ceiling
            (ceiling_met if met else ceiling_missed).append(f"{scenario.name}/{n}")
            rows.append(
                [
                    scenario.name,
                    n,
                    f"{posted:,.0f}",
                    f"{function:,.0f}",
                    f"{ceiling:,.0f}",
                    f"{posted / ceiling:.0%}",
                    f"{function / ceiling:.0%}",
                    "met" if met else "missed",
                ]
            )
    print_table(
        [
            "scenario",
            "workers",
            "post() entries/s",
            "ledger_post SQL entries/s",
            "ceiling entries/s",
            "post/ceiling",
            "ledger_post SQL/ceiling",
            "aim",
        ],
        rows,
    )

    print(f"### Hot account against spread accounts (aim: hot >= {HOT_AIM:.0%} of spread)\n")
    hot_met: list[str] = []
    hot_missed: list[str] = []
    rows = []
    for n in workers:
        ratios = [
            results[HOT.name, n, writer].rate / results[SPREAD.name, n, writer].rate
            for writer in WRITERS
        ]
        met = ratios[0] >= HOT_AIM
        (hot_met if met else hot_missed).append(str(n))
        rows.append(
            [
                n,
                f"{results[SPREAD.name, n, 'post()'].rate:,.0f}",
                f"{results[HOT.name, n, 'post()'].rate:,.0f}",
                *(f"{r:.0%}" for r in ratios),
                "met" if met else "missed",
            ]
        )
    print_table(
        [
            "workers",
            "spread post() entries/s",
            "hot post() entries/s",
            "hot/spread post()",
            "hot/spread ledger_post SQL",
            "hot/spread raw SQL",
            "aim",
        ],
        rows,
    )

    print(
        f"Aim post() >= {POST_AIM:.0%} of the ceiling: "
        + verdict(ceiling_met, ceiling_missed, "scenario/workers")
    )
    print(
        f"Aim hot within {1 - HOT_AIM:.0%} of spread (post()): "
        + verdict(hot_met, hot_missed, "workers")
    )


def verify_books(url: str) -> bool:
    """Print whether the books hold after the run; True if they do."""
    engine = make_engine(url, pool_size=1)
    try:
        with unit_of_work(session_factory(engine)) as session:
            mismatches = ledger.check_consistency(session)
            lines = ledger.trial_balance(session)
            entries = session.execute(select(func.count()).select_from(journal_entries)).scalar()
            legs = session.execute(select(func.count()).select_from(postings)).scalar()
    finally:
        engine.dispose()
    print(f"\nWritten in this run: {entries:,} entries, {legs:,} postings.")
    consistent = not mismatches
    print(
        "check_consistency: holds (every balance equals the sum of its postings)"
        if consistent
        else f"check_consistency: DOES NOT HOLD for {len(mismatches)} accounts: {mismatches[:5]}"
    )
    balanced = all(line.net == 0 for line in lines)
    for line in lines:
        print(
            f"trial balance {line.asset}: {line.accounts:,} accounts, "
            f"debit {line.debit:,} = credit {line.credit:,}, net {line.net}"
        )
    print("trial balance: holds" if balanced else "trial balance: DOES NOT HOLD")
    return consistent and balanced


# --- the run ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--seconds", type=int, default=5, help="measured seconds per case (default 5)"
    )
    parser.add_argument(
        "--workers",
        type=lambda s: sorted({int(n) for n in s.split(",")}),
        default=[1, 4, 16],
        help="concurrent writers, comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--database-url",
        help="a local PostgreSQL server to run on (default: DATABASE_URL, else embedded)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workers: list[int] = args.workers
    seconds: int = args.seconds
    configured = args.database_url or Settings().database_url
    with bench_server(configured) as server_url, scratch_database(server_url) as url:
        postmaster = postmaster_pid(url)
        idle_load = background_load(postmaster)
        migrate.upgrade(url)
        partner_base, member_base = open_bench_accounts(url)
        facts = server_facts(url)
        pgbench = find_pgbench(int(facts["server_version_num"]) // 10000)
        print(
            f"PostgreSQL {facts['server_version']} "
            f"({'configured server' if configured else 'embedded, temporary'}), "
            f"fsync={facts['fsync']}, synchronous_commit={facts['synchronous_commit']}, "
            f"autovacuum={facts['autovacuum']}; "
            f"{os.cpu_count()} CPUs; pgbench {pgbench}"
        )
        print(f"Machine busy before the run (other work on it): {idle_load:.0%}")
        print(
            f"{PARTNERS} spread partners + 1 hot partner "
            f"({ledger.accounts.HOT_ACCOUNT_SHARDS} balance shards each), {MEMBERS:,} members; "
            f"{WARMUP_SECONDS:.0f} s warm-up (post()) and {seconds} s measured per case\n"
        )
        results: Results = {}
        with (
            worker_pool(max(workers), url, postmaster) as pool,
            tempfile.TemporaryDirectory(prefix="ledger-bench-pgbench-") as workdir,
        ):
            bench = PgBench(
                pgbench,
                url,
                postmaster,
                Path(workdir),
                {
                    "members": MEMBERS,
                    "max_amount": MAX_AMOUNT,
                    "partner_base": partner_base,
                    "member_base": member_base,
                },
            )
            # Spread and hot back to back, so that their comparison suffers the least from
            # whatever else the machine does meanwhile.
            for n in workers:
                for scenario in SCENARIOS:
                    results[scenario.name, n, "post()"] = pool.measure(scenario, n, seconds)
                    for writer, script in (
                        ("ledger_post SQL", LEDGER_POST_SCRIPT),
                        ("raw SQL", RAW_SCRIPT),
                    ):
                        results[scenario.name, n, writer] = bench.measure(
                            script,
                            f"{scenario.name}-{n}",
                            n,
                            seconds=seconds,
                            defines={
                                "partner_first": scenario.partner_first,
                                "partner_count": scenario.partner_count,
                            },
                        )
                    print(
                        f"{scenario.name:>6} x {n:>2}: "
                        + ", ".join(
                            f"{w} {results[scenario.name, n, w].rate:,.0f}/s" for w in WRITERS
                        ),
                        flush=True,
                    )
        print_report(results, workers)
        return 0 if verify_books(url) else 1


if __name__ == "__main__":
    sys.exit(main())
