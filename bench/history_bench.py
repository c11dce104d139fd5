"""A large history: a member's balance, a statement page, a day's settlement and a day's audit
export, on a year of at least 20 million postings, against the same on a small history.

    .venv/bin/python -m bench.history_bench [--postings 20000000] [--members 2000]
        [--partners 3] [--stores 4] [--database-url URL] [--keep]

On a fresh database (embedded unless --database-url or DATABASE_URL, dropped at the end unless
--keep) the world is made through the real code: `--partners` store chains with rates, an
issuance limit and `--stores` shops each (as bench.batch_bench sets one up), `--members` members
linked to them, and one purchase each reported through `accrual.accrue` at one of the shops
(the busiest member, the first, reports BUSY_ACCRUALS), sealed by `seal_all`. The four
operations are measured on that small history first. Then the bulk history: the month
partitions of the year are made (`ledger_add_partitions`) and the world's accrual entries are
replicated as templates, set-based (generate_series, a statement per table and CHUNK entries),
over the 365 days before today (coalition time), until `--postings` postings: each copy is its
template's entry (kind, origin, metadata, amounts) with its own idempotency key and partner
transaction id, its 4 postings to the same accounts, its key in journal_keys, its purchase and
its point lot, every instant moved with the entry. The loading session runs with
`session_replication_role = replica` (no trigger, no foreign key check); what the triggers keep
is put right afterwards: every account's balance is the sum of its postings (a sharded
account's on its shard 0), yesterday's settleable entries join the settlement queue (the
earlier days are left out of it, as if settled by runs not written here), and the generated
history is not sealed nor queued for sealing (the export measured is `export_part`'s, which
does not read seals). Then VACUUM ANALYZE, as autovacuum would, and the same four operations:

- a member's balance, as `GET /v1/members/{id}` computes it (rules, `member_view`, tier), for
  random members;
- a statement page (`ledger.statement`, as `GET /v1/audit/accounts/{address}/statement`
  serves it, 100 lines): the first page of the busiest member's available account, and the
  page after the middle of its postings, reached by walking the cursors;
- the day's settlement, once, as `clearinghouse settle --date` does (`schedule.settle`, the
  clock at the day's cut-off): today on the small history, yesterday on the large one;
- the day's audit export (`exports.export_part` into a temporary folder), and its size.

Each is timed (p50, p95, max) with the CPU per operation of this process and of its PostgreSQL
backend (the engine holds one connection), from /proc, and the machine's busy share during it.
An operation that misses its aim is run once more with auto_explain (EXPLAIN ANALYZE, BUFFERS)
and its slowest statements' plans are printed. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from bench.batch_bench import set_up
from bench.common import (
    CpuSample,
    background_load,
    bench_server,
    percentile,
    postmaster_pid,
    print_table,
    process_tree_cpu,
    scratch_database,
    server_facts,
)
from clearinghouse import clock, ledger, migrate
from clearinghouse.audit import exports, sealing
from clearinghouse.config import get_settings
from clearinghouse.database import Tx, libpq_url, make_engine, session_factory
from clearinghouse.members.service import available_account, member_view
from clearinghouse.points import accrual
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.rules.tiers import tier_for
from settlement import netting, schedule

BUSY_ACCRUALS = 10  # the busiest member's purchases in the world: 10 times anyone else's
CHUNK = 250_000  # entries per loading statement, each its own transaction
DAYS = 365
CONNECT_WAIT = 120  # seconds
STATEMENT_LINES = 100  # the statement route's default page
WALK_LINES = 1_000  # the largest page, to walk to the middle of a history

# The aims (issue 19): (p95 ms, max seconds).
AIMS: dict[str, tuple[float | None, float | None]] = {
    "member balance": (20.0, None),
    "statement, first page": (50.0, None),
    "statement, middle page": (50.0, None),
    "settle the day": (None, 60.0),
    "audit export of the day": (None, 120.0),
}


# --- the world, through the real code ------------------------------------------------------------


@dataclass(frozen=True)
class World:
    members: list[tuple[str, str]]  # (partner, member)
    busy: tuple[str, str]
    accruals: int
    seconds: float


def make_world(sessions: sessionmaker[Session], partners: int, members: int, stores: int) -> World:
    started = time.perf_counter()
    rng = random.Random(19)
    linked: list[tuple[str, str]] = []
    shops: dict[str, list[str]] = {}
    for _ in range(partners):
        partner_id, store_ids, ids = set_up(sessions, members // partners, stores)
        shops[partner_id] = store_ids
        linked += [(partner_id, member) for member in ids]
    reports = [*linked, *[linked[0]] * (BUSY_ACCRUALS - 1)]
    for n, (partner_id, member_id) in enumerate(reports):
        with sessions() as session, session.begin():
            accrual.accrue(
                session,
                partner_id,
                accrual.PurchaseReport(
                    partner_txn_id=f"w{n}",
                    member_id=member_id,
                    amount_fen=rng.randint(1_000, 50_000),
                    occurred_at=datetime.now(UTC) - timedelta(minutes=1),
                    store_id=rng.choice(shops[partner_id]),
                ),
            )
    sealing.seal_all(sessions, delay=timedelta(0))
    return World(linked, linked[0], len(reports), time.perf_counter() - started)


# --- the bulk history ----------------------------------------------------------------------------

# What each replicated table's copies change besides the entry id and the instants: (table, the
# column naming the template's entry, {column: expression}). `n` is the copy's entry id, `x` the
# template row, `g.at` the copy's recorded_at.
_SUFFIX = "':h' || n"
_REPLICATED: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "journal_entries",
        "id",
        {
            "id": "n",
            "idempotency_key": f"x.idempotency_key || {_SUFFIX}",
            "metadata": "CASE WHEN x.metadata ? 'partner_txn_id' THEN x.metadata"
            " || jsonb_build_object('partner_txn_id',"
            f" (x.metadata ->> 'partner_txn_id') || {_SUFFIX}) ELSE x.metadata END",
        },
    ),
    ("postings", "entry_id", {"id": "(n - 1) * %(per_entry)s + x.ord"}),
    ("journal_keys", "entry_id", {"idempotency_key": f"x.idempotency_key || {_SUFFIX}"}),
    ("purchases", "entry_id", {"partner_txn_id": f"x.partner_txn_id || {_SUFFIX}"}),
    ("point_lots", "entry_id", {}),
)


def _columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str, bool]]:
    """(name, data type, is an identity column) of `table`'s columns, in order."""
    return [
        (name, kind, identity == "YES")
        for name, kind, identity in conn.execute(
            "SELECT column_name, data_type, is_identity FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _replication(
    conn: psycopg.Connection[Any], table: str, key: str, changed: dict[str, str]
) -> str:
    """The statement copying the template rows of `table` to the entries n in
    [%(lo)s, %(hi)s]: each column as its template's, but the entry id, the instants moved with
    the entry, the `changed` ones, and identity columns not named left to their default."""
    names: list[str] = []
    values: list[str] = []
    overriding = ""
    for name, kind, identity in _columns(conn, table):
        if name in changed:
            value = changed[name]
            overriding = "OVERRIDING SYSTEM VALUE" if identity else overriding
        elif identity:
            continue
        elif name == key:
            value = "n"
        elif kind == "timestamp with time zone":
            value = f"x.{name} + (g.at - x.tpl_at)"
        else:
            value = f"x.{name}"
        names.append(name)
        values.append(value)
    return f"""
INSERT INTO {table} ({", ".join(names)}) {overriding}
SELECT {", ".join(values)}
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n
  JOIN tpl_{table} x ON x.t = n %% %(templates)s,
       LATERAL (SELECT %(start)s::timestamptz
                       + %(span)s::interval * ((n - 0.5) / %(entries)s)) AS g(at)
 ORDER BY n, x.ord
"""


_TEMPLATES = """
CREATE TEMPORARY TABLE tpl AS
SELECT (row_number() OVER (ORDER BY id) - 1)::bigint AS t, id AS entry_id, recorded_at
  FROM journal_entries WHERE kind = 'accrual'
"""


def _template_table(table: str, key: str) -> str:
    return f"""
CREATE TEMPORARY TABLE tpl_{table} AS
SELECT tpl.t, tpl.recorded_at AS tpl_at,
       row_number() OVER (PARTITION BY x.{key} ORDER BY x.ctid) AS ord, x.*
  FROM {table} x JOIN tpl ON tpl.entry_id = x.{key}
"""


# What the triggers would have kept, set-based once: each account's balance is the sum of its
# postings, on shard 0 of a sharded account.
_BALANCES = """
UPDATE account_balances b
   SET balance = CASE WHEN b.shard = 0 THEN t.total ELSE 0 END
  FROM (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) AS t
 WHERE b.account_id = t.account_id
"""

# The settlement queue of one day of the generated history, as settlement_enqueue adds entries.
_QUEUE_DAY = """
INSERT INTO unsettled_entries (entry_id, recorded_at)
SELECT id, recorded_at FROM journal_entries
 WHERE recorded_at >= %(start)s AND recorded_at < %(end)s AND id <= %(last)s
   AND kind = ANY(%(kinds)s) AND metadata ? 'partner_id' AND metadata ? 'value_fen'
"""

_TABLES = (
    "journal_entries",
    "postings",
    "journal_keys",
    "purchases",
    "point_lots",
    "account_balances",
    "unsettled_entries",
)


@dataclass(frozen=True)
class History:
    entries: int
    postings: int
    start: datetime
    end: datetime  # today's first instant, coalition time
    load_seconds: float
    vacuum_seconds: float


def _connect(url: str) -> psycopg.Connection[Any]:
    """A connection, waiting up to CONNECT_WAIT seconds for a free slot: the server is shared
    with test runs that may hold all of them for a moment."""
    waited = 0
    while True:
        try:
            return psycopg.connect(libpq_url(url), autocommit=True)
        except psycopg.OperationalError as refused:
            if "too many clients" not in str(refused) or waited >= CONNECT_WAIT:
                raise
        time.sleep(1)
        waited += 1


def reserve_ids(url: str, postings: int) -> None:
    """Leave entry and posting ids 1 to `postings` to the generated history, which is older than
    anything the world writes: ids keep the order of time."""
    with _connect(url) as conn:
        for table in ("journal_entries", "postings"):
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, postings + 1_000]
            )


def load_history(url: str, postings: int) -> History:
    zone = get_settings().zone
    end = datetime.combine(clock.today(zone), datetime.min.time(), zone)
    start = end - timedelta(days=DAYS)
    started = time.perf_counter()
    with _connect(url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET jit = off")
        conn.execute("SELECT ledger_add_partitions(%s, %s)", [start, end])
        conn.execute(_TEMPLATES)
        templates = conn.execute("SELECT count(*) FROM tpl").fetchone()
        assert templates is not None
        assert templates[0] > 0, "the world made no accrual"
        for table, key, _ in _REPLICATED:
            conn.execute(_template_table(table, key).encode())
        counts = conn.execute(
            "SELECT min(c), max(c) FROM (SELECT count(*) AS c FROM tpl_postings GROUP BY t) AS s"
        ).fetchone()
        assert counts is not None
        assert counts[0] == counts[1], "templates of unequal postings"
        per_entry = int(counts[0])
        entries = -(-postings // per_entry)
        params: dict[str, Any] = {
            "templates": templates[0],
            "start": start,
            "span": end - start,
            "entries": entries,
            "per_entry": per_entry,
        }
        statements = [_replication(conn, *replicated) for replicated in _REPLICATED]
        for lo in range(1, entries + 1, CHUNK):
            hi = min(lo + CHUNK - 1, entries)
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement.encode(), {**params, "lo": lo, "hi": hi})
            print(
                f"loaded entries {hi:,} of {entries:,} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        conn.execute(_BALANCES)
        queue_day(conn, end - timedelta(days=1), entries)
        conn.execute("SET session_replication_role = origin")
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        vacuum_seconds = time.perf_counter() - started
    return History(entries, entries * per_entry, start, end, load_seconds, vacuum_seconds)


def queue_day(conn: psycopg.Connection[Any], day_start: datetime, last: int) -> None:
    conn.execute(
        _QUEUE_DAY.encode(),
        {
            "start": day_start,
            "end": day_start + timedelta(days=1),
            "last": last,
            "kinds": list(netting.CATEGORIES),
        },
    )


def table_sizes(url: str) -> list[list[object]]:
    """Rows, and bytes with indexes (over the partitions of a partitioned table)."""
    rows: list[list[object]] = []
    with _connect(url) as conn:
        for table in _TABLES:
            found = conn.execute(
                f"SELECT (SELECT count(*) FROM {table}),"
                # A plain table has no partition tree.
                " coalesce((SELECT sum(pg_total_relation_size(relid))"
                " FROM pg_partition_tree(%s::regclass)), pg_total_relation_size(%s::regclass))",
                [table, table],
            ).fetchone()
            assert found is not None
            rows.append([table, f"{found[0]:,}", f"{int(found[1]) / 2**20:,.0f}"])
    return rows


# --- the measurements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    sessions: sessionmaker[Session]
    backend: int  # the engine's one connection's server process
    postmaster: int


@dataclass(frozen=True)
class Timed:
    operation: str
    history: str
    seconds: list[float]
    cpu_ms: float  # this process and its backend, per operation
    busy: float  # the machine's busy share during it
    note: str

    def p(self, q: int) -> float:
        return 1000 * percentile(self.seconds, q)

    def met(self) -> bool | None:
        p95_ms, max_s = AIMS[self.operation]
        if p95_ms is not None:
            return self.p(95) < p95_ms
        assert max_s is not None
        return max(self.seconds) < max_s


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(
    bench: Bench, operation: str, history: str, times: int, work: Callable[[int], str]
) -> Timed:
    """Run `work(i)` `times` times; its last note is kept."""
    seconds: list[float] = []
    note = ""
    machine, own, backend = (
        CpuSample.take(bench.postmaster),
        _own_cpu(),
        process_tree_cpu(bench.backend),
    )
    for i in range(times):
        started = time.perf_counter()
        note = work(i)
        seconds.append(time.perf_counter() - started)
    used = CpuSample.take(bench.postmaster) - machine
    cpu = _own_cpu() - own + process_tree_cpu(bench.backend) - backend
    print(f"{operation} ({history}): {sum(seconds):.1f} s", file=sys.stderr, flush=True)
    return Timed(operation, history, seconds, 1000 * cpu / times, used.busy / used.total, note)


def balance(bench: Bench, partner_id: str, member_id: str) -> str:
    """What GET /v1/members/{id} computes, in one transaction."""
    with bench.sessions() as session, session.begin():
        tx = Tx.of(session)
        now = clock.now()
        rules = rule_set_at(tx, now)
        start = now - timedelta(days=rules.policy.tier_window_days)
        view = member_view(tx, partner_id, member_id, start, now)
        tier = tier_for(view.qualifying_points, rules.earning)
    return f"available {view.available:,}, tier {tier.tier}"


def middle_cursor(bench: Bench, address: str) -> tuple[str, int]:
    """The cursor after the middle of the account's postings, walked page by page, and the
    number of postings."""
    with bench.sessions() as session:
        count = 0
        cursor: str | None = None
        while True:
            page = ledger.statement(session, address, limit=WALK_LINES, cursor=cursor)
            count += len(page.lines)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        remaining = count // 2
        cursor = None
        while remaining > 0:
            page = ledger.statement(
                session, address, limit=min(WALK_LINES, remaining), cursor=cursor
            )
            remaining -= len(page.lines)
            cursor = page.next_cursor
    assert cursor is not None
    return cursor, count


def statement_page(bench: Bench, address: str, cursor: str | None) -> str:
    with bench.sessions() as session:
        page = ledger.statement(session, address, limit=STATEMENT_LINES, cursor=cursor)
    return f"{len(page.lines)} lines"


def settle(bench: Bench, day: date) -> str:
    with clock.use(clock.Manual(netting.cutoff(day))):
        run = schedule.settle(bench.sessions, day)[-1]
    return f"{run.entries:,} entries, {len(run.lines)} partner lines"


def export(bench: Bench, day_start: datetime) -> str:
    with (
        tempfile.TemporaryDirectory(prefix="history-bench-") as workdir,
        bench.sessions() as session,
        session.begin(),
    ):
        folder = Path(workdir) / "export"
        exports.export_part(session, day_start, day_start + timedelta(days=1), folder)
        size = sum(f.stat().st_size for f in folder.iterdir())
        entries = sum(1 for _ in (folder / exports.ENTRIES_FILE).open("rb"))
    return f"{entries:,} entries, {size / 2**20:,.1f} MB"


@dataclass(frozen=True)
class Plan:
    """What the four operations run on one history."""

    history: str
    members: list[tuple[str, str]]
    busy_address: str
    middle: str
    settle: Callable[[], str]
    day_start: datetime


def measure(bench: Bench, plan: Plan, repeat: int) -> list[Timed]:
    rng = random.Random(1)
    picks = [rng.choice(plan.members) for _ in range(repeat)]
    return [
        timed(bench, "member balance", plan.history, repeat, lambda i: balance(bench, *picks[i])),
        timed(
            bench,
            "statement, first page",
            plan.history,
            max(repeat // 4, 3),
            lambda _: statement_page(bench, plan.busy_address, None),
        ),
        timed(
            bench,
            "statement, middle page",
            plan.history,
            max(repeat // 4, 3),
            lambda _: statement_page(bench, plan.busy_address, plan.middle),
        ),
        timed(bench, "settle the day", plan.history, 1, lambda _: plan.settle()),
        timed(
            bench,
            "audit export of the day",
            plan.history,
            3,
            lambda _: export(bench, plan.day_start),
        ),
    ]


# --- where the time goes -------------------------------------------------------------------------


@contextmanager
def explaining(url: str) -> Iterator[tuple[sessionmaker[Session], list[str]]]:
    """Sessions whose every statement (nested ones too) PostgreSQL explains with its actual
    times and buffers (auto_explain), the plans sent back as notices and collected."""
    plans: list[str] = []
    engine: Engine = make_engine(url, pool_size=1, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _explain(connection: psycopg.Connection[Any], _: object) -> None:
        connection.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_buffers = on",
            "SET auto_explain.log_nested_statements = on",
            "SET client_min_messages = log",
        ):
            connection.execute(setting)
        connection.commit()

    try:
        yield session_factory(engine), plans
    finally:
        engine.dispose()


def _duration(plan: str) -> float:
    found = re.match(r"duration: ([\d.]+) ms", plan)
    return float(found.group(1)) if found else 0.0


def slowest_plans(plans: list[str], count: int = 2) -> list[str]:
    timed_plans = [p for p in plans if p.startswith("duration:")]
    return sorted(timed_plans, key=_duration, reverse=True)[:count]


# --- the run -------------------------------------------------------------------------------------


def _engine_bench(url: str, postmaster: int) -> tuple[Engine, Bench]:
    engine = make_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        backend = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    return engine, Bench(session_factory(engine), backend, postmaster)


def report(results: Sequence[Timed]) -> None:
    rows = []
    for r in results:
        p95_ms, max_s = AIMS[r.operation]
        aim = f"p95 < {p95_ms:.0f} ms" if p95_ms is not None else f"< {max_s:.0f} s"
        rows.append(
            [
                r.operation,
                r.history,
                len(r.seconds),
                f"{r.p(50):,.1f}",
                f"{r.p(95):,.1f}",
                f"{1000 * max(r.seconds):,.1f}",
                f"{r.cpu_ms:,.1f}",
                f"{r.busy:.0%}",
                aim,
                "met" if r.met() else "MISSED",
                r.note,
            ]
        )
    print_table(
        [
            "operation",
            "history",
            "runs",
            "p50 ms",
            "p95 ms",
            "max ms",
            "CPU ms/op (bench + its backend)",
            "machine busy",
            "aim",
            "verdict",
            "last result",
        ],
        rows,
    )


def explain_missed(
    url: str, results: Sequence[Timed], plans_for: dict[str, Callable[[sessionmaker[Session]], str]]
) -> None:
    """Each operation that missed its aim on the large history, once more under auto_explain:
    its two slowest statements' plans."""
    for r in results:
        if r.history == "small" or r.met() or r.operation not in plans_for:
            continue
        with explaining(url) as (sessions, plans):
            plans_for[r.operation](sessions)
        print(f"### Where the time goes: {r.operation} (EXPLAIN ANALYZE, BUFFERS)\n")
        for plan in slowest_plans(plans):
            print("```\n" + plan + "\n```\n")


def run(url: str, args: argparse.Namespace, postmaster: int) -> None:
    zone = get_settings().zone
    reserve_ids(url, args.postings)
    engine, bench = _engine_bench(url, postmaster)
    try:
        world = make_world(bench.sessions, args.partners, args.members, args.stores)
        print(
            f"world: {len(world.members):,} members of {args.partners} partners, "
            f"{world.accruals:,} accruals through accrual.accrue, in {world.seconds:.1f} s"
        )
        partner_id, busy = world.busy
        address = available_account(busy)
        today = clock.today(zone)
        today_start = datetime.combine(today, datetime.min.time(), zone)
        middle, lines = middle_cursor(bench, address)
        results = measure(
            bench,
            Plan(
                "small", world.members, address, middle, lambda: settle(bench, today), today_start
            ),
            args.repeat,
        )
        print(f"small history: the busiest member's account holds {lines:,} postings")
        print_table(["table", "rows", "MB"], table_sizes(url))
    finally:
        engine.dispose()

    history = load_history(url, args.postings)
    print(
        f"loaded {history.entries:,} entries and {history.postings:,} postings over "
        f"{history.start:%Y-%m-%d} to {history.end:%Y-%m-%d} in {history.load_seconds:.0f} s "
        f"({history.postings / history.load_seconds:,.0f} postings/s), "
        f"then VACUUM ANALYZE in {history.vacuum_seconds:.0f} s"
    )
    print_table(["table", "rows", "MB"], table_sizes(url))
    yesterday = today - timedelta(days=1)
    engine, bench = _engine_bench(url, postmaster)
    try:
        middle, lines = middle_cursor(bench, address)
        print(f"large history: the busiest member's account holds {lines:,} postings")
        results += measure(
            bench,
            Plan(
                f"{history.postings:,} postings",
                world.members,
                address,
                middle,
                lambda: settle(bench, yesterday),
                history.end - timedelta(days=1),
            ),
            args.repeat,
        )
    finally:
        engine.dispose()
    report(results)
    # The day before yesterday, queued now, for a settlement to explain if one missed.
    before = history.end - timedelta(days=2)

    def settle_again(sessions: sessionmaker[Session]) -> str:
        with _connect(url) as conn:
            queue_day(conn, before, history.entries)
        day = yesterday - timedelta(days=1)
        with clock.use(clock.Manual(netting.cutoff(day))):
            return str(schedule.settle(sessions, day)[-1].entries)

    explain_missed(
        url,
        results,
        {
            "member balance": lambda s: balance(Bench(s, 0, postmaster), partner_id, busy),
            "statement, first page": lambda s: statement_page(
                Bench(s, 0, postmaster), address, None
            ),
            "statement, middle page": lambda s: statement_page(
                Bench(s, 0, postmaster), address, middle
            ),
            "settle the day": settle_again,
            "audit export of the day": lambda s: export(
                Bench(s, 0, postmaster), history.end - timedelta(days=1)
            ),
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--postings", type=int, default=20_000_000)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--partners", type=int, default=3)
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=200, help="member balances per history")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with (
        bench_server(configured, prefix="history-bench-") as server,
        scratch_database(server, "history_bench") as url,
    ):
        migrate.upgrade(url)
        facts = server_facts(url)
        postmaster = postmaster_pid(url)
        print(
            f"PostgreSQL {facts.get('server_version')}, fsync {facts.get('fsync')}, "
            f"autovacuum {facts.get('autovacuum')}; {os.cpu_count()} cores, "
            f"{background_load(postmaster):.0%} busy with other work before the run"
        )
        run(url, args, postmaster)
        if args.keep:
            # Renamed, the scratch database is no longer the one dropped on the way out.
            name = str(make_url(url).database)
            with _connect(server) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(name), sql.Identifier(f"{name}_kept")
                    )
                )
            print(f"kept the database as {name}_kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
