"""The day boundary: a business date is settled only once its cut-off (the next midnight,
coalition time) has passed by the clock, whether the command, a function or the server's job
asks; before it the date is refused, and nothing is written. A run computed before its cut-off
(as runs were before the boundary) is flagged, and neither approved nor paid until then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clearinghouse import clock
from settlement import netting, schedule
from settlement.tables import settlement_runs
from tests.builders.databases import World
from tests.builders.http import assert_problem
from tests.builders.settlement import a_day_of_traffic, computed_early, count
from tests.settlement.test_cli import run as run_cli


def test_today_is_refused_before_its_cut_off_and_settled_at_it(
    world: World, manual_clock: clock.Manual
) -> None:
    a_day_of_traffic(world)
    today = netting.business_date_of(manual_clock())
    cut = netting.cutoff(today)

    manual_clock.set(cut - timedelta(microseconds=1))
    with pytest.raises(schedule.DayNotOver) as refused:
        schedule.settle(world.sessions, today)
    assert refused.value.status == 409
    assert refused.value.code == "business_day_not_over"
    assert refused.value.detail == (
        f"{today.isoformat()} cannot be settled before its cut-off, {cut.isoformat()}; the "
        f"latest date that can be settled is {(today - timedelta(days=1)).isoformat()}"
    )
    with pytest.raises(schedule.DayNotOver):
        schedule.settle_through(world.sessions, today)
    assert count(world.sessions, settlement_runs) == 0

    manual_clock.set(cut)
    [run] = schedule.settle(world.sessions, today)
    assert (run.business_date, run.entries, run.cutoff) == (today, 2, cut)


def test_a_future_date_is_refused_and_yesterday_is_settled(
    world: World, manual_clock: clock.Manual
) -> None:
    a_day_of_traffic(world)
    today = netting.business_date_of(manual_clock())
    with pytest.raises(schedule.DayNotOver, match="cannot be settled before its cut-off"):
        schedule.settle(world.sessions, today + timedelta(days=3))
    assert count(world.sessions, settlement_runs) == 0

    # Yesterday is over: settled, without today's traffic, which waits for today's run.
    [run] = schedule.settle(world.sessions, today - timedelta(days=1))
    assert (run.business_date, run.entries) == (today - timedelta(days=1), 0)


def test_settle_refuses_today_and_exits_non_zero(world: World, manual_clock: clock.Manual) -> None:
    a_day_of_traffic(world)
    today = netting.business_date_of(manual_clock())

    refused = run_cli(world, "settle", "--date", today.isoformat())
    assert refused.exit_code == 1
    assert (
        f"error: {today.isoformat()} cannot be settled before its cut-off, "
        f"{netting.cutoff(today).isoformat()}" in refused.stderr
    )
    assert count(world.sessions, settlement_runs) == 0

    settled = run_cli(world, "settle")  # yesterday, by default
    assert settled.exit_code == 0, settled.stderr
    assert f"settlement {today - timedelta(days=1)} (attempt 1): computed, 0 entries" in (
        settled.stdout
    )


def test_the_job_settles_yesterday_only_until_midnight(
    world: World, manual_clock: clock.Manual
) -> None:
    a_day_of_traffic(world)
    today = netting.business_date_of(manual_clock())
    cut = netting.cutoff(today)

    manual_clock.set(cut - timedelta(microseconds=1))
    done = schedule.settle_due(world.sessions)
    assert done.errors == []
    assert [run.business_date for run in done.runs] == [today - timedelta(days=1)]

    # At midnight today is yesterday: the job settles it, with its traffic.
    manual_clock.set(cut)
    done = schedule.settle_due(world.sessions)
    assert [(run.business_date, run.entries) for run in done.runs] == [(today, 2)]


def test_a_run_computed_early_is_flagged_and_neither_approved_nor_paid_before_its_cut_off(
    world: World, manual_clock: clock.Manual
) -> None:
    a_day_of_traffic(world)
    today = netting.business_date_of(manual_clock())
    yesterday, cut = today - timedelta(days=1), netting.cutoff(today)
    computed_early(world.sessions, today)
    _, as_alice = world.finance()
    _, as_bob = world.finance("approver")
    path = f"/finance/settlements/{today}"

    shown = world.http.get(path, headers=as_alice).json()
    assert (shown["computed_early"], datetime.fromisoformat(shown["computed_at"])) == (
        True,
        manual_clock(),
    )
    [listed] = world.http.get("/finance/settlements", headers=as_alice).json()["settlements"]
    assert (listed["business_date"], listed["computed_early"]) == (today.isoformat(), True)
    report_csv = world.http.get(f"{path}/report.csv", headers=as_alice).text.splitlines()
    assert report_csv[-2:] == [
        "business_date,section,computed_at,cutoff",
        f"{today},COMPUTED_EARLY,{manual_clock().isoformat()},{cut.astimezone(UTC).isoformat()}",
    ]
    refused = assert_problem(
        world.http.post(f"{path}/approve", headers=as_alice), 409, "business_day_not_over"
    )
    assert refused["detail"].startswith(f"{today} cannot be approved before its cut-off, ")
    token = as_bob["Authorization"].removeprefix("Bearer ")
    by_cli = run_cli(world, "settlement", "approve", today.isoformat(), "--token", token)
    assert by_cli.exit_code == 1
    assert by_cli.stderr.startswith(f"error: {today} cannot be approved before its cut-off, ")
    shown_cli = run_cli(world, "settlement", "show", today.isoformat())
    assert f"; computed early, at {manual_clock().isoformat()}" in shown_cli.stdout

    # Its cut-off passed, it may be approved, with a warning.
    manual_clock.set(cut)
    assert world.http.post(f"{path}/approve", headers=as_alice).status_code == 200
    approved = world.http.post(f"{path}/approve", headers=as_bob).json()
    assert approved["state"] == "approved"
    [warning] = approved["warnings"]
    assert warning.startswith("computed early, at ")
    assert warning.endswith(
        f"before its cut-off, {cut.isoformat()}: entries recorded on this date after it are"
        " settled in a later date's run"
    )

    # Paying it, with a clock behind its cut-off, is refused all the same.
    manual_clock.set(cut - timedelta(seconds=1))
    paid = {"bank_reference": "B-1"}
    refused = assert_problem(
        world.http.post(f"{path}/paid", json=paid, headers=as_alice), 409, "business_day_not_over"
    )
    assert refused["detail"].startswith(f"{today} cannot be paid before its cut-off, ")
    manual_clock.set(cut)
    assert world.http.post(f"{path}/paid", json=paid, headers=as_alice).status_code == 200

    # A run computed after its cut-off is not flagged.
    schedule.settle(world.sessions, yesterday)
    on_time = world.http.get(f"/finance/settlements/{yesterday}", headers=as_alice).json()
    assert on_time["computed_early"] is False
    on_time_csv = world.http.get(f"/finance/settlements/{yesterday}/report.csv", headers=as_alice)
    assert "COMPUTED_EARLY" not in on_time_csv.text
