"""A rejected date's entries wait for that date's next attempt: a later date's run, computed by
`clearinghouse settle` or by the server's job, never takes them, even when the rejection comes
after a later date was computed. A model of the dates (entries recorded on random days, dates
settled and rejected in a random order) says which run takes each entry, and what the
partners' payables and issuance exposure hold after each step."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from clearinghouse import clock
from clearinghouse.users.service import User
from partners.directory import exposure_account
from settlement import approval, netting, runs, schedule
from settlement.tables import settlement_runs, unsettled_entries
from tests.builders.databases import World, own_world
from tests.builders.dates import SHANGHAI, business_today
from tests.builders.ledger import balance
from tests.builders.settlement import backdated_accrual, run_entries
from tests.builders.users import staff
from tests.conftest import Databases
from tests.settlement.test_cli import run as run_cli

DAYS = 5


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12), SHANGHAI)


def _live(world: World, day: date) -> runs.Run:
    with world.sessions() as session:
        return runs.load_run(session, day)


def test_a_date_rejected_after_the_next_was_settled_keeps_its_entries(world: World) -> None:
    """The issue's sequence through the command: a purchase in the first date's run; the next
    date settled; the first rejected; a third date settled leaves the purchase alone, and the
    first date's attempt 2 takes it."""
    shop = world.merchant()
    first, second, third = (business_today() - timedelta(days=d) for d in (4, 3, 2))
    # A day settled before the first, so that the first is where the command starts.
    schedule.settle(world.sessions, first - timedelta(days=1))
    sweep = backdated_accrual(world.sessions, shop.id, _noon(first), value_fen=600)
    finance = staff(world.sessions, "finance")
    token = finance.headers["Authorization"].removeprefix("Bearer ")

    settled = run_cli(world, "settle", "--date", second.isoformat())
    assert settled.exit_code == 0, settled.stderr
    assert f"settlement {first} (attempt 1): computed, 1 entries" in settled.stdout
    rejected = run_cli(
        world, "settlement", "reject", first.isoformat(), "--reason", "wrong", "--token", token
    )
    assert rejected.exit_code == 0, rejected.stderr

    later = run_cli(world, "settle", "--date", third.isoformat())
    assert later.exit_code == 0, later.stderr
    assert f"settlement {third} (attempt 1): computed, 0 entries" in later.stdout
    assert run_entries(world.sessions, _live(world, third).id) == set()

    again = run_cli(world, "settle", "--date", first.isoformat())
    assert again.exit_code == 0, again.stderr
    assert f"settlement {first} (attempt 2): computed, 1 entries" in again.stdout
    run = _live(world, first)
    assert run_entries(world.sessions, run.id) == {sweep}
    assert [(line.partner_id, line.issued_fen, line.net_fen) for line in run.lines] == [
        (shop.id, 600, 600)
    ]
    assert balance(world.sessions, f"partner:{shop.id}:payable") == 600
    assert balance(world.sessions, exposure_account(shop.id)) == 0


def test_the_job_leaves_a_rejected_dates_entries_to_it(
    world: World, manual_clock: clock.Manual
) -> None:
    """The server's job settles each new yesterday; a date rejected after the next one was
    computed keeps its entries for its own next attempt."""
    shop = world.merchant()
    first = business_today() - timedelta(days=4)
    manual_clock.set(netting.cutoff(first - timedelta(days=1)))
    schedule.settle_due(world.sessions)
    entry = backdated_accrual(world.sessions, shop.id, _noon(first))

    manual_clock.set(netting.cutoff(first + timedelta(days=1)) + timedelta(minutes=5))
    done = schedule.settle_due(world.sessions)
    assert [(r.business_date, r.entries) for r in done.runs] == [
        (first, 1),
        (first + timedelta(days=1), 0),
    ]
    finance = staff(world.sessions, "finance")
    with world.sessions() as session, session.begin():
        approval.reject(session, first, User(finance.id, "finance"), "wrong rates")

    manual_clock.set(netting.cutoff(first + timedelta(days=2)) + timedelta(minutes=5))
    done = schedule.settle_due(world.sessions)
    assert [(r.business_date, r.entries) for r in done.runs] == [(first + timedelta(days=2), 0)]
    with world.sessions() as session:
        waiting = set(session.execute(select(unsettled_entries.c.entry_id)).scalars())
    assert waiting == {entry}

    [again] = schedule.settle(world.sessions, first)
    assert (again.attempt, run_entries(world.sessions, again.id)) == (2, {entry})


# --- the model ---------------------------------------------------------------------------------


@dataclass
class Dates:
    """What the dates must hold, from the steps alone: the entries of each live run, the entries
    awaiting settlement (with the date they were recorded on), how many runs each date had, and
    each entry's partner and value."""

    days: list[date]
    live: dict[date, set[int]] = field(default_factory=dict)
    waiting: dict[int, date] = field(default_factory=dict)
    attempts: dict[date, int] = field(default_factory=lambda: defaultdict(int))
    never_settled: set[int] = field(default_factory=set)
    ever_settled: set[int] = field(default_factory=set)
    partner: dict[int, str] = field(default_factory=dict)
    value: dict[int, int] = field(default_factory=dict)

    def owner(self, recorded: date) -> date:
        """The date whose run takes an entry recorded on `recorded`: the first date, on or after
        it, without a live run."""
        day = recorded
        while day in self.live:
            day += timedelta(days=1)
        return day

    def to_compute(self, target: date) -> list[date]:
        """The dates a settle of `target` computes, in order: none if it has a live run; the
        dates after the last live one up to it; or, for a date before that (rejected), itself."""
        if target in self.live:
            return []
        last = max(self.live)
        if target < last:
            return [target]
        return [last + timedelta(days=d) for d in range(1, (target - last).days + 1)]

    def compute(self, day: date) -> None:
        taken = {entry for entry, recorded in self.waiting.items() if self.owner(recorded) == day}
        for entry in taken:
            del self.waiting[entry]
        self.never_settled -= taken
        self.ever_settled |= taken
        self.live[day] = taken
        self.attempts[day] += 1


step = st.one_of(
    st.tuples(st.just("record"), st.integers(0, DAYS - 1), st.integers(0, 1), st.integers(0, 23)),
    st.tuples(st.just("settle"), st.integers(0, DAYS - 1), st.just(0), st.just(0)),
    st.tuples(st.just("reject"), st.integers(0, DAYS - 1), st.just(0), st.just(0)),
)


def _check(world: World, model: Dates) -> None:
    for day, entries in model.live.items():
        run = _live(world, day)
        assert (run.attempt, run.state) == (model.attempts[day], "computed"), day
        assert run_entries(world.sessions, run.id) == entries, day
    with world.sessions() as session:
        waiting = set(session.execute(select(unsettled_entries.c.entry_id)).scalars())
        dated = set(
            session.execute(
                select(settlement_runs.c.business_date).where(settlement_runs.c.state != "rejected")
            ).scalars()
        )
    assert waiting == set(model.waiting)
    assert dated == set(model.live)
    for partner_id in set(model.partner.values()):
        mine = {entry for entry, owner in model.partner.items() if owner == partner_id}
        payable = sum(model.value[e] for entries in model.live.values() for e in entries & mine)
        exposure = sum(model.value[e] for e in model.never_settled & mine)
        # A partner's payable account is opened by the first run that gives it a line.
        if any(model.partner[e] == partner_id for e in model.ever_settled):
            assert balance(world.sessions, f"partner:{partner_id}:payable") == payable
        assert balance(world.sessions, exposure_account(partner_id)) == exposure


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    # Every example costs a database of its own: report the first failure as found.
    phases=[Phase.explicit, Phase.generate],
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(step, min_size=4, max_size=16))
# The sequence: an entry in the first date's run, the second date settled, the first
# rejected, the third settled, then the first again.
@example(
    steps=[
        ("record", 0, 0, 12),
        ("settle", 1, 0, 0),
        ("reject", 0, 0, 0),
        ("settle", 2, 0, 0),
        ("settle", 0, 0, 0),
    ]
)
# A late arrival in the third date's run (recorded on the first, after it was settled); the
# third rejected, then the first: the first's attempt 2 leaves it to the third.
@example(
    steps=[
        ("settle", 1, 0, 0),
        ("record", 0, 1, 9),
        ("settle", 2, 0, 0),
        ("reject", 2, 0, 0),
        ("reject", 0, 0, 0),
        ("settle", 0, 0, 0),
        ("settle", 2, 0, 0),
    ]
)
def test_each_entry_is_settled_by_the_date_the_model_says(
    databases: Databases, steps: list[tuple[str, int, int, int]]
) -> None:
    with own_world(databases) as world:
        start = business_today() - timedelta(days=DAYS + 2)
        model = Dates([start + timedelta(days=d) for d in range(DAYS)])
        shops = [world.merchant().id, world.merchant().id]
        finance = User(staff(world.sessions, "finance").id, "finance")
        # The day before the first is settled: the dates after it are settled in order.
        schedule.settle(world.sessions, start - timedelta(days=1))
        model.live[start - timedelta(days=1)] = set()
        model.attempts[start - timedelta(days=1)] = 1

        for kind, index, which, hour in steps:
            day = model.days[index]
            if kind == "record":
                value = 100 + 7 * len(model.value)
                at = datetime.combine(day, time(hour, 30), SHANGHAI)
                entry = backdated_accrual(world.sessions, shops[which], at, value_fen=value)
                model.waiting[entry] = day
                model.never_settled.add(entry)
                model.partner[entry], model.value[entry] = shops[which], value
            elif kind == "settle":
                expected = model.to_compute(day)
                settled = schedule.settle(world.sessions, day)
                assert [run.business_date for run in settled] == (expected or [day])
                for computed in expected:
                    model.compute(computed)
            elif day in model.live:
                with world.sessions() as session, session.begin():
                    approval.reject(session, day, finance, "the model rejects it")
                for entry in model.live.pop(day):
                    model.waiting[entry] = day
            _check(world, model)
