"""Risk-control overhead: what the fraud rules add to each accrual and redemption.

    .venv/bin/python -m bench.fraud_bench [--purchases N] [--database-url URL]

On a fresh database (embedded unless --database-url or DATABASE_URL), a partner with an online
store and an offline store gets a history of accruals, then the bench times, one request at a
time, `accrue()` and `place_hold()` (each in its own transaction, commit included), and what the
rules cost inside them: the SQL function `risk_history`, which gathers the rules' inputs inside
the statement that locks the member (its own time, from PostgreSQL's function statistics), and
the rules' Python on those inputs. It prints the rules' share of each operation. The history is
vacuumed and analysed first, as autovacuum keeps a live database.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.common import bench_server, scratch_database
from clearinghouse import migrate
from clearinghouse.database import Tx, make_engine, session_factory
from clearinghouse.fraud import service as fraud
from clearinghouse.members.service import link_member
from clearinghouse.points import accrual, holds
from partners import directory, limits, rates


def _timed(sessions: sessionmaker[Session], work: Callable[[Session], object]) -> float:
    """Milliseconds of `work` inside its own transaction (the commit included)."""
    start = time.perf_counter()
    with sessions() as session, session.begin():
        work(session)
    return (time.perf_counter() - start) * 1000


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    mean, middle = statistics.fmean(ordered), statistics.median(ordered)
    return f"mean {mean:.2f} ms, p50 {middle:.2f}, p99 {p99:.2f}"


def set_up(sessions: sessionmaker[Session]) -> tuple[str, list[str]]:
    partner_id = f"bench{uuid.uuid4().hex[:6]}"
    with sessions() as s, s.begin():
        directory.create_partner(s, partner_id, "Bench", "store_chain")
        rates.set_rates(s, partner_id, earn_rate="1", issue_price="1", redemption_value="1")
        limits.set_issuance_limit(s, partner_id, 10**12)
        directory.add_store(s, partner_id, f"{partner_id}-on", name="Online", channel="online")
        directory.add_store(
            s,
            partner_id,
            f"{partner_id}-off",
            name="Offline",
            channel="offline",
            city="Shanghai",
            latitude=31.23,
            longitude=121.47,
        )
        members = [link_member(s, partner_id, f"c{i}")[0].member_id for i in range(200)]
        # A busy bench store would pass the daily caps; every rule still runs in full.
        fraud.publish_thresholds(
            s,
            partner_id,
            {"store_daily_accrual_fen_online": 10**12, "store_daily_accrual_fen_offline": 10**12},
        )
    return partner_id, members


def accrue(session: Session, partner_id: str, member_id: str, store: str) -> None:
    accrual.accrue(
        session,
        partner_id,
        accrual.PurchaseReport(
            partner_txn_id=uuid.uuid4().hex,
            member_id=member_id,
            amount_fen=random.randint(1_000, 50_000),
            occurred_at=datetime.now(UTC),
            store_id=store,
        ),
    )


def _inputs_ms(session: Session) -> float:
    """Milliseconds spent in risk_history in this transaction so far (its own time)."""
    spent = session.execute(
        text(
            "SELECT coalesce(sum(self_time), 0) FROM pg_stat_xact_user_functions"
            " WHERE funcname = 'risk_history'"
        )
    ).scalar_one()
    return float(spent)


def _measured(
    sessions: sessionmaker[Session], work: Callable[[Session], object]
) -> tuple[float, float]:
    """Milliseconds of `work` in its own transaction (the commit included), and of its rules'
    inputs in SQL."""
    with sessions() as session:
        with session.begin():
            before = _inputs_ms(session)
        start = time.perf_counter()
        with session.begin():
            session.execute(text("SET LOCAL track_functions = 'pl'"))
            work(session)
            inputs = _inputs_ms(session) - before
        elapsed = time.perf_counter() - start
    return elapsed * 1000, inputs


def _rules_alone(sessions: sessionmaker[Session], attempt: fraud.Attempt) -> float:
    """Milliseconds of the rules' evaluation on inputs already read."""
    with sessions() as session, session.begin():
        tx = Tx.of(session)
        rules = fraud.screening(tx, attempt.partner_id)
        assert attempt.store_id is not None
        store = directory.get_store(tx, attempt.partner_id, attempt.store_id)
        gathered = fraud.gather(tx, rules.gathering(attempt, store))
        start = time.perf_counter()
        fraud.evaluate(rules, attempt, fraud.History.of(store, gathered))
        return (time.perf_counter() - start) * 1000


def run(sessions: sessionmaker[Session], purchases: int) -> None:
    partner_id, members = set_up(sessions)
    stores = [f"{partner_id}-on", f"{partner_id}-off"]
    for _ in range(purchases):
        _timed(
            sessions,
            partial(
                accrue,
                partner_id=partner_id,
                member_id=random.choice(members),
                store=random.choice(stores),
            ),
        )
    # As autovacuum keeps a live database (the system server here runs without it): current
    # statistics for the planner, and the visibility map for index-only scans.
    engine = sessions.kw["bind"]
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE purchases, store_sales_by_hour, holds")
        )
    accruals: list[tuple[float, float]] = []
    hold_times: list[tuple[float, float]] = []
    python: list[float] = []
    hold_python: list[float] = []
    for _ in range(300):
        member, store = random.choice(members), random.choice(stores)
        attempt = fraud.Attempt(
            operation="accrual",
            partner_id=partner_id,
            member_id=member,
            occurred_at=datetime.now(UTC),
            points=100,
            amount_fen=10_000,
            store_id=store,
        )
        python.append(_rules_alone(sessions, attempt))
        hold_python.append(_rules_alone(sessions, replace(attempt, operation="hold", amount_fen=0)))
        accruals.append(
            _measured(
                sessions, partial(accrue, partner_id=partner_id, member_id=member, store=store)
            )
        )
        hold_times.append(
            _measured(
                sessions,
                partial(
                    holds.place_hold,
                    partner_id=partner_id,
                    member_id=member,
                    points=100,
                    key=uuid.uuid4().hex,
                    store_id=store,
                ),
            )
        )
    print(f"history: {purchases} purchases at two stores, 200 members")
    for name, measured, rules_python in (
        ("accrual", accruals, python),
        ("hold", hold_times, hold_python),
    ):
        whole = [ms for ms, _ in measured]
        inputs = [sql for _, sql in measured]
        print(f"{name}, whole operation:        {_summary(whole)}")
        print(f"{name}, rules' inputs (SQL):    {_summary(inputs)}")
        print(f"{name}, rules' Python:          {_summary(rules_python)}")
        share = (statistics.fmean(inputs) + statistics.fmean(rules_python)) / statistics.fmean(
            whole
        )
        print(f"{name}: the rules' share is {share:.1%}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--purchases", type=int, default=2_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with bench_server(configured) as server, scratch_database(server) as url:
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=2)
        try:
            run(session_factory(engine), args.purchases)
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
