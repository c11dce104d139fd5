"""The day boundary: a business date is settled only once its cut-off (the next midnight,
coalition time) has passed by the clock, whether the command, a function or the server's job
asks; before it the date is refused, and nothing is written."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clearinghouse import clock
from settlement import netting, schedule
from settlement.tables import settlement_runs
from tests.builders.databases import World
from tests.builders.settlement import a_day_of_traffic, count
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
