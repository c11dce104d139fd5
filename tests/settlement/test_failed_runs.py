"""A settlement job that cannot wedge: a date whose run fails is recorded with its error, logged,
shown in the finance listing and the console, and makes `clearinghouse settle` exit non-zero;
the dates after it settle all the same, without its entries; the job tries it again with
back-off, by an injected clock, never sleeping."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from settlement import netting, runs, schedule
from settlement.tables import settlement_failures
from tests.builders.console import Console
from tests.builders.databases import World
from tests.builders.dates import SHANGHAI, business_today
from tests.builders.settlement import (
    a_day_of_traffic,
    after_cutoff,
    backdated_accrual,
    count,
    run_entries,
    settle_after_cutoff,
)
from tests.builders.users import person
from tests.settlement.test_cli import run as run_cli


def _late_yesterday() -> datetime:
    return datetime.combine(business_today() - timedelta(days=1), time(23, 0), SHANGHAI)


def _failed(world: World) -> list[runs.FailedDate]:
    with world.sessions() as session:
        return runs.failed_dates(session)


def test_a_failed_date_is_reported_and_the_next_date_settles_without_its_entries(
    world: World,
) -> None:
    traffic = a_day_of_traffic(world)
    today, yesterday = business_today(), business_today() - timedelta(days=1)
    # An entry the self-check refuses: settleable (it names its partner and has a value), but
    # its value is null.
    bad = backdated_accrual(
        world.sessions,
        traffic.payer.id,
        _late_yesterday(),
        metadata={"partner_id": traffic.payer.id, "value_fen": None},
    )

    with after_cutoff(today):
        done = schedule.settle_through(world.sessions, today)

    [(tried, error)] = done.errors
    assert (tried.business_date, tried.attempt, tried.tries) == (yesterday, 1, 1)
    assert isinstance(error, netting.SelfCheckFailed)
    assert "1 of the run's entries name no partner or no value" in str(error)
    # The next date settled all the same, with its own entries and without the failed date's.
    [run] = done.runs
    assert (run.business_date, run.attempt, run.entries) == (today, 1, 2)
    assert bad not in run_entries(world.sessions, run.id)
    assert run.zero_sum

    [failed] = _failed(world)
    assert failed == tried
    assert (failed.business_date, failed.attempt, failed.tries) == (yesterday, 1, 1)
    assert failed.error.startswith("SelfCheckFailed: ")
    assert failed.retry_at - failed.failed_at == schedule.BACKOFF_BASE

    # The finance listing shows the failed date among the settled ones, with its error.
    _, token = world.finance()
    listed = world.http.get("/finance/settlements", headers=token).json()["settlements"]
    assert [(s["business_date"], s["state"]) for s in listed] == [
        (today.isoformat(), "computed"),
        (yesterday.isoformat(), "failed"),
    ]
    assert listed[1]["error"] == failed.error
    assert (listed[1]["attempt"], listed[1]["failed_tries"]) == (1, 1)
    assert listed[0]["error"] is None

    # So does the console's settlement list.
    console = Console(world.http.app)  # type: ignore[arg-type]
    try:
        assert console.sign_in(person(world.sessions, "finance")).status_code == 303
        page = console.get("/console/settlements")
    finally:
        console.close()
    assert page.status_code == 200
    assert "state-failed" in page.text
    assert "Attempt 1: try 1 failed at" in page.text
    assert "SelfCheckFailed" in page.text

    # Asked again, the failed date is tried again at once and fails again; today stays as it was.
    with pytest.raises(netting.SelfCheckFailed), after_cutoff(today):
        schedule.settle(world.sessions, today)
    [failed] = _failed(world)
    assert failed.tries == 2
    with world.sessions() as session:
        assert runs.load_run(session, today) == run


def test_the_job_tries_a_failed_date_again_with_back_off(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    manual_clock: clock.Manual,
    caplog: pytest.LogCaptureFixture,
) -> None:
    traffic = a_day_of_traffic(world)
    yesterday = business_today() - timedelta(days=1)
    late = backdated_accrual(
        world.sessions,
        traffic.payer.id,
        _late_yesterday(),
        metadata={"partner_id": traffic.payer.id, "value_fen": 1_200},
    )
    failing = [True]
    compute = netting.compute

    def flaky(session: Session, day: date, floor: datetime | None) -> runs.Run:
        if failing[0]:
            raise RuntimeError("could not extend file: No space left on device")
        return compute(session, day, floor)

    monkeypatch.setattr(netting, "compute", flaky)
    start = manual_clock()

    def at(minutes: float) -> schedule.Settled:
        manual_clock.set(start + timedelta(minutes=minutes))
        return schedule.settle_due(world.sessions)

    with caplog.at_level(logging.ERROR, logger="settlement.schedule"):
        first = at(0)
    assert ([f.business_date for f, _ in first.errors], first.runs) == ([yesterday], [])
    # The job logs the failed try, with the traceback of a fault (not a domain error).
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == (
        f"settlement of {yesterday.isoformat()} failed (attempt 1, try 1): RuntimeError: could"
        f" not extend file: No space left on device; next try at"
        f" {(start + timedelta(minutes=5)).isoformat()}"
    )
    assert logged.exc_info is not None
    assert [(f.tries, f.retry_at) for f in _failed(world)] == [(1, start + timedelta(minutes=5))]

    # Before its back-off has passed, the job leaves the date alone.
    assert (at(4).errors, at(4).runs) == ([], [])
    assert count(world.sessions, settlement_failures) == 1

    second = at(5)
    assert [f.business_date for f, _ in second.errors] == [yesterday]
    [failed] = _failed(world)
    assert failed.tries == 2
    assert failed.retry_at == start + timedelta(minutes=5 + 10)
    assert failed.error == "RuntimeError: could not extend file: No space left on device"
    assert (at(14).errors, at(14).runs) == ([], [])

    # Fixed: the next try settles it, with its own entries, and the date is no longer failed.
    failing[0] = False
    third = at(15)
    assert third.errors == []
    [run] = third.runs
    assert (run.business_date, run.attempt, run.state) == (yesterday, 1, "computed")
    assert run_entries(world.sessions, run.id) == {late}
    assert _failed(world) == []
    assert count(world.sessions, settlement_failures) == 2  # kept, as history
    # Settled, yesterday is returned as it is.
    again = at(20)
    assert ([r.id for r in again.runs], again.errors) == ([run.id], [])


def test_the_back_off_doubles_up_to_its_limit() -> None:
    assert [schedule.backoff(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=m) for m in (5, 10, 20, 40)
    ]
    assert schedule.backoff(7) == schedule.BACKOFF_MAX
    assert schedule.backoff(10_000) == schedule.BACKOFF_MAX


def test_settle_exits_non_zero_with_the_error_and_settles_the_next_date(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today, yesterday = business_today(), business_today() - timedelta(days=1)
    backdated_accrual(
        world.sessions,
        traffic.payer.id,
        _late_yesterday(),
        metadata={"partner_id": traffic.payer.id, "value_fen": None},
    )

    with after_cutoff(today):
        settled = run_cli(world, "settle", "--date", today.isoformat())

    assert settled.exit_code == 1
    # One message on standard error, saying what failed: no traceback, no log records.
    assert settled.stderr.splitlines() == [
        f"error: the settlement of {yesterday.isoformat()} failed: SelfCheckFailed: 1 of the"
        " run's entries name no partner or no value"
    ]
    assert f"settlement {today} (attempt 1): computed, 2 entries" in settled.stdout


def test_the_trigger_queues_the_kinds_the_run_settles(world: World) -> None:
    """The trigger that queues entries for settlement names the settleable kinds itself: it must
    name the same as the code."""
    with world.sessions() as session:
        definition = session.execute(
            text(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgname = 'journal_entries_settleable'"
                # The journal's own, not its copies on each month's partition.
                " AND tgrelid = CAST('journal_entries' AS regclass)"
            )
        ).scalar_one()
    named = set(definition.split("ARRAY[", 1)[1].split("]", 1)[0].replace("::text", "").split(", "))
    assert {kind.strip("'") for kind in named} == set(netting.CATEGORIES)


def test_the_job_logs_a_domain_refusal_without_a_traceback(
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The self-check's refusal says what failed in its message; a traceback would add nothing
    but the code's path to it."""
    day = business_today() - timedelta(days=1)
    at = datetime.combine(business_today(), time(0, 5), SHANGHAI)
    failed = runs.FailedDate(day, 1, 1, "SelfCheckFailed: 2 balances differ", at, at)
    refused = schedule.Settled(errors=[(failed, netting.SelfCheckFailed("2 balances differ"))])
    monkeypatch.setattr(schedule, "settle_through", lambda *_args, **_kwargs: refused)

    with caplog.at_level(logging.ERROR, logger="settlement.schedule"):
        assert schedule.settle_due(sessions) is refused
    [logged] = caplog.records
    assert logged.getMessage() == (
        f"settlement of {day.isoformat()} failed (attempt 1, try 1): SelfCheckFailed: 2 balances"
        f" differ; next try at {at.isoformat()}"
    )
    assert logged.exc_info is None


def test_the_job_gives_runs_computed_before_late_arrivals_were_kept_theirs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_day_of_traffic(world)
    [run] = settle_after_cutoff(world.sessions, business_today())
    kept = text("SELECT late_arrivals FROM settlement_runs WHERE id = :id")
    with world.sessions() as session, session.begin():
        recorded = session.execute(kept, {"id": run.id}).scalar_one()
        assert recorded is not None
        session.execute(
            text("UPDATE settlement_runs SET late_arrivals = NULL WHERE id = :id"), {"id": run.id}
        )
    monkeypatch.setattr(schedule, "settle_through", lambda *_args, **_kwargs: schedule.Settled())
    schedule.settle_due(world.sessions)
    with world.sessions() as session:
        assert session.execute(kept, {"id": run.id}).scalar_one() == recorded
