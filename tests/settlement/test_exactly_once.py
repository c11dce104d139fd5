"""Exactly once: a settled date is returned unchanged, two runs at once make one, missed dates are
caught up in order, a failed self-check keeps nothing, and an entry recorded or committed after
its date was settled falls into the next date, never into the settled one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import select, text

from clearinghouse import ledger
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import accrual
from clearinghouse.users.service import User
from partners.directory import exposure_account
from settlement import approval, netting, schedule
from settlement.runs import Run
from settlement.tables import (
    settlement_events,
    settlement_items,
    settlement_lines,
    settlement_runs,
)
from tests.builders.databases import World
from tests.builders.dates import SHANGHAI, business_today
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.points import accrue, new_member
from tests.builders.settlement import (
    a_day_of_traffic,
    after_cutoff,
    backdated_accrual,
    count,
    entries_of_kind,
    run_entries,
    settle_after_cutoff,
)


def test_settling_a_date_twice_returns_the_same_run_and_posts_nothing(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    [first] = settle_after_cutoff(world.sessions, today)
    entries = count(world.sessions, journal_entries)
    payable = balance(world.sessions, f"partner:{traffic.payer.id}:payable")
    assert payable == traffic.issued_fen

    [again] = settle_after_cutoff(world.sessions, today)
    assert again == first
    assert count(world.sessions, journal_entries) == entries
    assert count(world.sessions, settlement_runs) == 1
    assert entries_of_kind(world.sessions, "settlement") == 1
    assert balance(world.sessions, f"partner:{traffic.payer.id}:payable") == payable


def test_two_settlements_of_one_date_at_once_make_one_run(world: World) -> None:
    a_day_of_traffic(world)
    today = business_today()
    start = threading.Barrier(4)

    def settle() -> list[Run]:
        start.wait()
        return schedule.settle(world.sessions, today)

    with after_cutoff(today), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: settle(), range(4)))
    runs = [run for result in results for run in result]
    assert len(runs) == 4
    assert {run.id for run in runs} == {runs[0].id}
    assert all(run == runs[0] for run in runs)
    assert count(world.sessions, settlement_runs) == 1
    assert entries_of_kind(world.sessions, "settlement") == 1
    assert count(world.sessions, settlement_events) == 1


def test_missed_dates_are_settled_in_order_before_the_date_asked_for(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    [earlier] = schedule.settle(world.sessions, today - timedelta(days=3))
    assert (earlier.business_date, earlier.entries, earlier.lines) == (
        today - timedelta(days=3),
        0,
        [],
    )

    runs = settle_after_cutoff(world.sessions, today)
    assert [run.business_date for run in runs] == [today - timedelta(days=d) for d in (2, 1, 0)]
    assert [run.attempt for run in runs] == [1, 1, 1]
    assert [run.id for run in runs] == sorted(run.id for run in runs)
    assert [run.entries for run in runs] == [0, 0, 2]
    assert {line.partner_id for line in runs[-1].lines} == {traffic.payer.id, traffic.receiver.id}
    assert [run.cutoff for run in runs] == [
        datetime.combine(run.business_date + timedelta(days=1), time(0), SHANGHAI) for run in runs
    ]
    assert count(world.sessions, settlement_runs) == 4


def test_catch_up_settles_each_earlier_day_with_its_own_entries(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    two_days_ago = today - timedelta(days=2)
    at = datetime.combine(two_days_ago, time(23, 59), SHANGHAI)
    backdated = backdated_accrual(world.sessions, traffic.payer.id, at)

    runs = settle_after_cutoff(world.sessions, today)
    assert [run.business_date for run in runs] == [two_days_ago, today - timedelta(days=1), today]
    assert [run.attempt for run in runs] == [1, 1, 1]
    assert run_entries(world.sessions, runs[0].id) == {backdated}
    assert [(line.partner_id, line.issued_points, line.net_fen) for line in runs[0].lines] == [
        (traffic.payer.id, 1_000, 1_200)
    ]
    assert runs[1].entries == 0
    assert backdated not in run_entries(world.sessions, runs[2].id)
    assert runs[2].entries == 2
    assert all(run.zero_sum for run in runs)
    assert balance(world.sessions, exposure_account(traffic.payer.id)) == 0
    with world.sessions() as session:
        assert ledger.check_consistency(session) == []


def test_a_failed_self_check_keeps_nothing_and_a_repaired_ledger_settles(world: World) -> None:
    traffic = a_day_of_traffic(world)
    exposure = balance(world.sessions, exposure_account(traffic.payer.id))
    corrupt = text(
        "UPDATE point_lots SET remaining = remaining + :delta "
        "WHERE id = (SELECT min(id) FROM point_lots WHERE member_id = :member)"
    )
    with world.sessions() as session, session.begin():
        session.execute(corrupt, {"delta": -1, "member": traffic.member_id})

    with pytest.raises(netting.SelfCheckFailed, match="lots differ from their balance"):
        settle_after_cutoff(world.sessions, business_today())
    for table in (settlement_runs, settlement_items, settlement_lines, settlement_events):
        assert count(world.sessions, table) == 0, table.name
    assert entries_of_kind(world.sessions, "settlement") == 0
    assert balance(world.sessions, exposure_account(traffic.payer.id)) == exposure
    assert balance(world.sessions, "coalition:clearing") == 0

    with world.sessions() as session, session.begin():
        session.execute(corrupt, {"delta": 1, "member": traffic.member_id})
    [run] = settle_after_cutoff(world.sessions, business_today())
    assert (run.attempt, run.state, run.entries) == (1, "computed", 2)
    assert entries_of_kind(world.sessions, "settlement") == 1
    assert balance(world.sessions, exposure_account(traffic.payer.id)) == 0


def _approve(world: World, day: date) -> None:
    for _ in range(2):
        user_id, _headers = world.finance()
        with world.sessions() as session, session.begin():
            approval.approve(session, day, User(user_id, "finance"))


def test_an_entry_recorded_after_the_run_falls_into_the_next_date(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today, tomorrow = business_today(), business_today() + timedelta(days=1)
    [settled] = settle_after_cutoff(world.sessions, today)
    _approve(world, today)
    covered = run_entries(world.sessions, settled.id)

    late = accrue(world.sessions, traffic.payer.id, traffic.member_id, 10_000)
    [same] = settle_after_cutoff(world.sessions, today)
    assert (same.id, same.entries, same.state) == (settled.id, settled.entries, "approved")
    assert [asdict(line) for line in same.lines] == [asdict(line) for line in settled.lines]

    [next_run] = settle_after_cutoff(world.sessions, tomorrow)
    assert (next_run.business_date, next_run.attempt) == (tomorrow, 1)
    assert run_entries(world.sessions, next_run.id) == {late.entry_id}
    assert [(line.partner_id, line.issued_fen, line.net_fen) for line in next_run.lines] == [
        (traffic.payer.id, late.issue_value_fen, late.issue_value_fen)
    ]
    assert run_entries(world.sessions, settled.id) == covered
    assert settle_after_cutoff(world.sessions, today)[0] == same


def test_an_entry_committed_after_the_run_but_recorded_before_the_cutoff_falls_into_the_next_date(
    world: World,
) -> None:
    """A till roll written in a transaction that commits only after the day was settled: its
    entry is recorded (stamped) before the cut-off, yet the settled day stays as it was."""
    traffic = a_day_of_traffic(world)
    store = world.merchant(issue_price="0.8")
    member_id = new_member(world.sessions, [store.id])
    today, tomorrow = business_today(), business_today() + timedelta(days=1)

    with world.sessions() as late_session:
        late_session.begin()
        late = accrual.accrue(
            late_session,
            store.id,
            accrual.PurchaseReport(unique_id("t"), member_id, 30_000, datetime.now(SHANGHAI)),
        )
        [settled] = settle_after_cutoff(world.sessions, today)
        late_session.commit()

    assert late.entry_id is not None
    with world.sessions() as session:
        recorded_at = session.execute(
            select(journal_entries.c.recorded_at).where(journal_entries.c.id == late.entry_id)
        ).scalar_one()
    assert recorded_at < netting.cutoff(today)
    assert late.entry_id not in run_entries(world.sessions, settled.id)
    assert {line.partner_id for line in settled.lines} == {traffic.payer.id, traffic.receiver.id}
    assert settle_after_cutoff(world.sessions, today)[0] == settled

    [next_run] = settle_after_cutoff(world.sessions, tomorrow)
    assert run_entries(world.sessions, next_run.id) == {late.entry_id}
    assert [(line.partner_id, line.net_fen) for line in next_run.lines] == [
        (store.id, late.issue_value_fen)
    ]
