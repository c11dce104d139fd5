"""The liability history: outstanding points by issuer at the end of each business day, from
the lots and their movements, each counted from when it was recorded; its last point is the
liability report's outstanding. A purchase reported late never changes a day that had ended."""

from __future__ import annotations

import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.points import referrals
from clearinghouse.points.accrual import AccrualResult
from clearinghouse.points.expiry import expire_lots
from clearinghouse.points.lots import check_lots
from clearinghouse.points.tables import lot_movements, point_lots
from settlement.liability import liability_history, snapshot_closed_days
from settlement.reports import late_arrivals, liability_report
from settlement.tables import liability_snapshot_issuers
from tests.builders.databases import World
from tests.builders.points import (
    accrue,
    available,
    hold_and_capture,
    hold_and_void,
    new_member,
    refund_purchase,
    refund_redemption,
)
from tests.builders.settlement import settle_after_cutoff

SHANGHAI = ZoneInfo("Asia/Shanghai")


def history(
    sessions: sessionmaker[Session], days: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    with sessions() as session:
        return liability_history(session, days, now)


def report_points(sessions: sessionmaker[Session], now: datetime) -> dict[str, int]:
    with sessions() as session:
        report = liability_report(session, now)
    return {item["issuer"]: item["points"] for item in report["outstanding"]}


def last_movement_date(sessions: sessionmaker[Session]) -> date:
    """The business date the latest lot movement was recorded on (the database's clock)."""
    with sessions() as session:
        recorded = session.execute(select(func.max(lot_movements.c.recorded_at))).scalar_one()
    assert isinstance(recorded, datetime)
    return recorded.astimezone(SHANGHAI).date()


def accrue_on_time(
    sessions: sessionmaker[Session],
    partner_id: str,
    member_id: str,
    amount_fen: int,
    occurred_at: datetime,
) -> AccrualResult:
    """A purchase that occurred at `occurred_at` as if it had been reported then: its lot is
    recorded at its earning. (The database stamps a lot with its own clock, which a test cannot
    turn back; lots are working rows, not journal entries.)"""
    result = accrue(sessions, partner_id, member_id, amount_fen, occurred_at)
    with sessions() as session, session.begin():
        session.execute(
            update(point_lots)
            .where(point_lots.c.entry_id == result.entry_id)
            .values(recorded_at=point_lots.c.earned_at)
        )
    return result


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), SHANGHAI)


def test_an_empty_clearing_house_has_a_row_for_every_day_ending_now(world: World) -> None:
    now = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)  # 17:30 in Shanghai
    days = history(world.sessions, 5, now)
    assert [d["business_date"] for d in days] == [date(2026, 3, d) for d in range(6, 11)]
    assert [d["as_of"] for d in days[:-1]] == [end_of(date(2026, 3, d)) for d in range(6, 10)]
    assert days[-1]["as_of"] == now
    assert all(d["by_issuer"] == {} and d["total_points"] == 0 for d in days)


def test_the_business_day_is_the_coalitions(world: World) -> None:
    # 20:00 UTC on the 9th is already the 10th in Shanghai.
    now = datetime(2026, 3, 9, 20, 0, tzinfo=UTC)
    days = history(world.sessions, 2, now)
    assert [d["business_date"] for d in days] == [date(2026, 3, 9), date(2026, 3, 10)]
    assert days[0]["as_of"] == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)


def test_days_and_now_are_checked(world: World) -> None:
    with pytest.raises(ValueError, match="days"):
        history(world.sessions, 0)
    with pytest.raises(ValueError, match="time zone"):
        history(world.sessions, 3, datetime(2026, 3, 10, 9, 30))


def test_history_follows_earning_spending_and_refunds_day_by_day(world: World) -> None:
    payer = world.merchant()
    other = world.merchant()
    member = new_member(world.sessions, [payer.id, other.id])
    start = datetime.now(UTC)
    today = start.astimezone(SHANGHAI).date()
    earned = accrue_on_time(world.sessions, payer.id, member, 52_000, start - timedelta(days=3))
    second = accrue_on_time(world.sessions, other.id, member, 20_000, start - timedelta(days=1))
    assert earned.points > 300
    assert second.points > 0
    # The oldest-expiring lot (the payer's) pays; 100 of the 300 held go back to it.
    hold = hold_and_capture(world.sessions, other.id, member, 300, 200)
    refund_redemption(world.sessions, other.id, hold.id, 50)
    spent_on = last_movement_date(world.sessions)

    later = datetime.now(UTC) + timedelta(days=2)
    days = history(world.sessions, 7, later)

    assert [d["business_date"] for d in days] == [today + timedelta(days=n) for n in range(-4, 3)]
    by_date = {d["business_date"]: d for d in days}
    assert by_date[today - timedelta(days=4)]["by_issuer"] == {}
    assert by_date[today - timedelta(days=3)]["by_issuer"] == {payer.id: earned.points}
    assert by_date[today - timedelta(days=2)]["by_issuer"] == {payer.id: earned.points}
    for day, point in by_date.items():
        if today - timedelta(days=1) <= day < spent_on:
            assert point["by_issuer"] == {payer.id: earned.points, other.id: second.points}
        if day >= spent_on:
            assert point["by_issuer"] == {
                payer.id: earned.points - 150,
                other.id: second.points,
            }
        assert point["total_points"] == sum(point["by_issuer"].values())
    assert days[-1]["as_of"] == later
    assert days[-1]["by_issuer"] == report_points(world.sessions, later)


def test_a_moment_before_a_movement_does_not_see_it(world: World) -> None:
    partner = world.merchant()
    member = new_member(world.sessions, [partner.id])
    earned = accrue(world.sessions, partner.id, member, 30_000, datetime.now(UTC))
    with world.sessions() as session:
        between = session.execute(select(func.clock_timestamp())).scalar_one()
    refund_purchase(world.sessions, partner.id, earned.partner_txn_id, 10_000)

    before = history(world.sessions, 1, between)[-1]
    after = history(world.sessions, 1)[-1]
    assert before["by_issuer"] == {partner.id: earned.points}
    assert after["by_issuer"] == report_points(world.sessions, datetime.now(UTC))
    assert after["total_points"] < earned.points


def test_coalition_bonuses_are_reported_as_the_coalitions(world: World) -> None:
    partner = world.merchant()
    inviter = new_member(world.sessions, [partner.id])
    invitee = new_member(world.sessions, [partner.id])
    with world.sessions() as session, session.begin():
        referrals.register_referral(session, partner.id, inviter, invitee)
    bought = accrue(world.sessions, partner.id, invitee, 10_000, datetime.now(UTC))

    now = datetime.now(UTC)
    last = history(world.sessions, 3, now)[-1]
    assert last["by_issuer"] == {partner.id: bought.points, "coalition": 500}
    assert list(last["by_issuer"]) == [issuer for issuer in report_points(world.sessions, now)]
    assert last["by_issuer"] == report_points(world.sessions, now)


def test_expired_lots_leave_the_history_at_their_expiry(world: World) -> None:
    partner = world.merchant()
    member = new_member(world.sessions, [partner.id])
    earned = accrue(world.sessions, partner.id, member, 40_000, datetime.now(UTC))
    hold_and_capture(world.sessions, partner.id, member, 100, 100)
    expires_at = earned.lot_expires_at
    assert expires_at is not None
    last_day = (expires_at - timedelta(microseconds=1)).astimezone(SHANGHAI).date()

    after_expiry = expires_at + timedelta(days=2)
    days = history(world.sessions, 6, after_expiry)
    by_date = {d["business_date"]: d["by_issuer"] for d in days}
    # The last day ends at the expiry instant itself, when the lot is no longer outstanding.
    assert by_date[last_day - timedelta(days=1)] == {partner.id: earned.points - 100}
    assert by_date[last_day] == {}
    assert days[-1]["by_issuer"] == {}

    expire_lots(world.sessions, after_expiry)
    assert history(world.sessions, 1, after_expiry)[-1]["by_issuer"] == {}
    assert report_points(world.sessions, after_expiry) == {}


# --- a property: random traffic, the history against a model and the liability report ------

operations = st.lists(
    st.tuples(
        st.sampled_from(["accrue", "accrue", "redeem", "void", "refund", "refund_redemption"]),
        st.integers(0, 1),  # which partner
        st.integers(1, 100),  # a size, in percent of what the operation may take
        st.integers(0, 5),  # for accruals, how many days ago the purchase happened
    ),
    min_size=1,
    max_size=5,  # at most five holds: a sixth within the hour goes to risk review
)


def test_random_traffic_matches_the_model_and_the_liability_report(world: World) -> None:
    partners = [world.merchant().id, world.merchant(earn_rate="2").id]
    # Lots as the model sees them: (issuer, earned_at, amount), across all examples.
    lots: list[tuple[str, datetime, int]] = []

    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=operations)
    def check(ops: list[tuple[str, int, int, int]]) -> None:
        # A fresh member per example keeps the fraud rules' per-member velocity out of the way.
        member = new_member(world.sessions, partners)
        purchases: list[tuple[str, str, int]] = []
        captured: list[tuple[str, str, int]] = []
        for kind, which, size, days_ago in ops:
            partner = partners[which]
            if kind == "accrue":
                occurred_at = datetime.now(UTC) - timedelta(days=days_ago)
                amount_fen = 1_000 + 400 * size
                result = accrue_on_time(world.sessions, partner, member, amount_fen, occurred_at)
                assert result.review_case_id is None
                if result.points - result.debt_repaid:
                    lots.append((partner, occurred_at, result.points - result.debt_repaid))
                purchases.append((partner, result.partner_txn_id, amount_fen))
            elif kind in ("redeem", "void"):
                points = min(available(world.sessions, member), 100 + 10 * size)
                if points < 100:
                    continue
                if kind == "void":
                    hold_and_void(world.sessions, partner, member, points)
                else:
                    capture = max(1, math.ceil(points * size / 100))
                    hold = hold_and_capture(world.sessions, partner, member, points, capture)
                    captured.append((partner, hold.id, capture))
            elif kind == "refund" and purchases:
                partner, txn_id, amount_fen = purchases.pop()
                refund_purchase(world.sessions, partner, txn_id, max(1, amount_fen * size // 100))
            elif kind == "refund_redemption" and captured:
                partner, hold_id, capture = captured.pop()
                refund_redemption(world.sessions, partner, hold_id, max(1, capture * size // 100))

        now = datetime.now(UTC)
        days = history(world.sessions, 8, now)
        today = now.astimezone(SHANGHAI).date()
        for point in days[:-1]:
            # Every movement was recorded today, so a past day's end saw the lots whole.
            expected: dict[str, int] = defaultdict(int)
            for issuer, earned_at, amount in lots:
                if earned_at <= point["as_of"]:
                    expected[issuer] += amount
            assert point["business_date"] < today
            assert point["by_issuer"] == expected
            assert point["total_points"] == sum(expected.values())
        assert days[-1]["by_issuer"] == report_points(world.sessions, now)
        with world.sessions() as session:
            assert check_lots(session) == []

    check()


# --- daily snapshots: closed days are taken once and read from then on ------------------------


def recomputed(sessions: sessionmaker[Session], as_of: datetime) -> dict[str, int]:
    """Outstanding points by issuer at `as_of`, straight from the definition: every lot recorded
    by then and not expired, with its amount and its movements recorded by then."""
    with sessions() as session:
        lots = session.execute(select(point_lots)).all()
        movements = session.execute(select(lot_movements)).all()
    outstanding: dict[str, int] = defaultdict(int)
    for lot in lots:
        if lot.recorded_at <= as_of < lot.expires_at:
            held = lot.amount + sum(
                m.amount for m in movements if m.lot_id == lot.id and m.recorded_at <= as_of
            )
            outstanding[lot.issuer_partner_id or "coalition"] += held
    return {issuer: points for issuer, points in outstanding.items() if points > 0}


def snapshot_rows(sessions: sessionmaker[Session]) -> list[Any]:
    with sessions() as session:
        return session.execute(
            select(liability_snapshot_issuers).order_by(
                liability_snapshot_issuers.c.business_date,
                liability_snapshot_issuers.c.issuer_partner_id,
            )
        ).all()


def some_traffic(world: World) -> tuple[list[str], datetime]:
    """Two partners' purchases over the last week, spending and refunds; and the instant after."""
    partners = [world.merchant().id, world.merchant(earn_rate="2").id]
    member = new_member(world.sessions, partners)
    start = datetime.now(UTC)
    for days_ago, which, amount_fen in [(6, 0, 30_000), (4, 1, 12_000), (2, 0, 8_000)]:
        accrue_on_time(
            world.sessions, partners[which], member, amount_fen, start - timedelta(days=days_ago)
        )
    bought = accrue(world.sessions, partners[1], member, 9_000, start)
    hold = hold_and_capture(world.sessions, partners[0], member, 200, 150)
    refund_redemption(world.sessions, partners[0], hold.id, 50)
    refund_purchase(world.sessions, partners[1], bought.partner_txn_id, 4_000)
    return partners, datetime.now(UTC)


def test_snapshots_hold_what_the_lots_say_at_each_cutoff(world: World) -> None:
    _, now = some_traffic(world)
    later = now + timedelta(days=3)
    first_lot_day = (now - timedelta(days=6)).astimezone(SHANGHAI).date()
    before = history(world.sessions, 12, later)

    taken = snapshot_closed_days(world.sessions, later)

    today = later.astimezone(SHANGHAI).date()
    assert taken == [first_lot_day + timedelta(days=n) for n in range((today - first_lot_day).days)]
    after = history(world.sessions, 12, later)
    assert after == before
    assert [d["business_date"] for d in after] == [
        today - timedelta(days=n) for n in range(11, -1, -1)
    ]
    for point in after:
        assert point["by_issuer"] == recomputed(world.sessions, point["as_of"])
        assert point["total_points"] == sum(point["by_issuer"].values())
    assert {d["business_date"] for d in after if d["by_issuer"]} == {
        first_lot_day + timedelta(days=n) for n in range((today - first_lot_day).days + 1)
    }


def test_a_late_purchase_does_not_rewrite_a_closed_day(world: World) -> None:
    partner = world.merchant()
    member = new_member(world.sessions, [partner.id])
    now = datetime.now(UTC)
    first = accrue_on_time(world.sessions, partner.id, member, 20_000, now - timedelta(days=3))
    assert snapshot_closed_days(world.sessions, now)
    taken = snapshot_rows(world.sessions)
    before = history(world.sessions, 5, now)

    late = accrue(world.sessions, partner.id, member, 10_000, now - timedelta(days=2))
    after = history(world.sessions, 5, datetime.now(UTC))

    yesterday = after[-2]
    # Computed afresh or read from its snapshot, yesterday is what it was.
    assert recomputed(world.sessions, yesterday["as_of"]) == {partner.id: first.points}
    assert after[:-1] == before[:-1]
    assert yesterday["by_issuer"] == {partner.id: first.points}
    assert after[-1]["by_issuer"] == {partner.id: first.points + late.points}
    assert snapshot_closed_days(world.sessions, now) == []
    assert snapshot_rows(world.sessions) == taken


def test_a_closed_day_not_taken_yet_keeps_its_figure_when_a_late_purchase_arrives(
    world: World,
) -> None:
    """Just after midnight, before the snapshot job has run (or with no job running at all),
    closed days are computed from the lots: a purchase that occurred on one of them and arrives
    now counts from today, in the history and in the snapshot taken afterwards."""
    partner = world.merchant()
    member = new_member(world.sessions, [partner.id])
    now = datetime.now(UTC)
    first = accrue_on_time(world.sessions, partner.id, member, 20_000, now - timedelta(days=3))
    before = history(world.sessions, 5, now)
    assert before[-2]["by_issuer"] == {partner.id: first.points}

    late = accrue(world.sessions, partner.id, member, 10_000, now - timedelta(days=1))
    after = history(world.sessions, 5, datetime.now(UTC))

    assert after[:-1] == before[:-1]
    assert after[-1]["by_issuer"] == {partner.id: first.points + late.points}
    snapshot_closed_days(world.sessions, now)
    assert history(world.sessions, 5, datetime.now(UTC))[:-1] == before[:-1]

    # Settled with the day it arrived on, whose report names it a late arrival of the day before.
    today = after[-1]["business_date"]
    run = settle_after_cutoff(world.sessions, today)[-1]
    with world.sessions() as session:
        arrivals = late_arrivals(session, run)
    assert run.business_date == today
    assert (late.partner_txn_id, today - timedelta(days=1)) in [
        (arrival.partner_txn_id, arrival.occurred_date) for arrival in arrivals
    ]


def test_the_snapshot_job_takes_each_day_once_when_run_twice_or_at_once(world: World) -> None:
    some_traffic(world)
    later = datetime.now(UTC) + timedelta(days=2)

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: snapshot_closed_days(world.sessions, later), range(2)))

    taken = max(runs, key=len)
    assert sorted(runs, key=len) == [[], taken]
    assert len(taken) == 8
    rows = snapshot_rows(world.sessions)
    assert {row.business_date for row in rows} == set(taken)
    assert snapshot_closed_days(world.sessions, later) == []
    assert snapshot_closed_days(world.sessions, later + timedelta(days=1)) == [
        taken[-1] + timedelta(days=1)
    ]
    assert snapshot_rows(world.sessions)[: len(rows)] == rows


def test_a_year_of_history_reads_the_lots_only_for_today(world: World) -> None:
    partners, now = some_traffic(world)
    a_year_on = now + timedelta(days=366)
    assert len(snapshot_closed_days(world.sessions, a_year_on)) == 372
    engine = world.sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        days = history(world.sessions, 365, a_year_on)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    reading_lots = [params for statement, params in statements if "point_lots" in statement]
    assert len(reading_lots) == 1
    assert reading_lots[0] == {"at": a_year_on}
    assert len(days) == 365
    for point in (days[0], days[180], days[-2], days[-1]):
        assert point["by_issuer"] == recomputed(world.sessions, point["as_of"])
    assert set(days[0]["by_issuer"]) == set(partners)
