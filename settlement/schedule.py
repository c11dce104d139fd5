"""Which dates are settled, in what order and when: `settle_through` computes a date after any
earlier open dates, each in a transaction of its own under the settlement lock, and `settle_due`
is the server's job (yesterday and any open date before it, every few minutes).

Exactly once: runs are serialised by an advisory lock; a date has at most one live run (a
unique index is the run key); re-running a settled date returns it unchanged; missed dates are
settled in order first; each date is computed in one transaction, so a failure leaves nothing.
An entry recorded after its date was settled falls into the next open date.

A date is settled only once it is over: a date whose cut-off has not passed by the clock is
refused (`DayNotOver`), so that an entry recorded later that day is never pushed into the next
day's run by a run taken too early. `settle_due` asks for yesterday, which is always over.

A date whose run fails is recorded as a failed try (`settlement_failures`) and tried again with
back-off; the dates after it are settled all the same, without its entries, which wait for it.
So do a rejected date's entries: they wait for its next attempt, and no later date's run takes
them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.errors import Conflict, DomainError
from settlement import netting, reports
from settlement.runs import FailedDate, Run, current_failure, failed_dates, live_row, run_of
from settlement.tables import settlement_failures, settlement_runs, unsettled_entries

log = logging.getLogger(__name__)

# The settlement job's back-off: a date whose run failed is tried again after BACKOFF_BASE,
# then after twice as long at each failure, at most BACKOFF_MAX apart.
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=4)
ERROR_LENGTH = 2_000  # characters of a failure's error kept and shown


class DayNotOver(Conflict):
    """A business date asked to be settled before its cut-off: its entries are still arriving.
    409, as the date's state (not the request's form) stands in the way; it can be asked again
    once the cut-off has passed."""

    code = "business_day_not_over"
    title = "The business date is not over"


def refuse_open(business_date: date, action: str = "settled") -> None:
    """Raise `DayNotOver` unless `business_date`'s cut-off has passed by the clock (at the
    cut-off itself the date is over: a run takes the entries recorded before it); `action`
    names what was asked in the message."""
    cut, now = netting.cutoff(business_date), clock.now()
    if cut > now:
        latest = netting.business_date_of(now) - timedelta(days=1)
        raise DayNotOver(
            f"{business_date.isoformat()} cannot be {action} before its cut-off, "
            f"{cut.isoformat()}; the latest date that can be settled is {latest.isoformat()}",
            cutoff=cut.isoformat(),
        )


@dataclass
class Settled:
    """What one call settled, in order, and the dates whose run failed in it: each failed try as
    recorded, with the error."""

    runs: list[Run] = field(default_factory=list)
    errors: list[tuple[FailedDate, Exception]] = field(default_factory=list)


def describe(error: BaseException) -> str:
    """An error in one line of at most ERROR_LENGTH characters: the driver's own for a database
    error (SQLAlchemy's would add the statement and its parameters)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    message = " ".join(f"{type(cause).__name__}: {cause}".split())
    return message if len(message) <= ERROR_LENGTH else message[: ERROR_LENGTH - 1] + "…"


def backoff(tries: int) -> timedelta:
    """How long the job waits after the `tries`-th failed try of a date."""
    return min(BACKOFF_BASE * (1 << min(max(tries - 1, 0), 16)), BACKOFF_MAX)


def _lock(session: Session) -> None:
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("settlement"))))


def _first_open_date(session: Session) -> date | None:
    """The day after the last live run's; without one, the day of the oldest entry awaiting
    settlement."""
    last = session.execute(
        select(func.max(settlement_runs.c.business_date)).where(
            settlement_runs.c.state != "rejected"
        )
    ).scalar_one()
    if last is not None:
        return last + timedelta(days=1)  # type: ignore[no-any-return]
    oldest = session.execute(select(func.min(unsettled_entries.c.recorded_at))).scalar_one()
    return None if oldest is None else netting.business_date_of(oldest)


def _record_failure(
    sessions: sessionmaker[Session], business_date: date, error: Exception
) -> FailedDate:
    """Keep a failed try of `business_date` (its run's work is rolled back)."""
    with sessions() as session, session.begin():
        _lock(session)
        attempt = (
            1
            + session.execute(
                select(func.count()).where(settlement_runs.c.business_date == business_date)
            ).scalar_one()
        )
        tries = (
            1
            + session.execute(
                select(func.count())
                .select_from(settlement_failures)
                .where(settlement_failures.c.business_date == business_date, current_failure)
            ).scalar_one()
        )
        now = clock.now()
        failed = FailedDate(
            business_date, attempt, tries, describe(error), now, now + backoff(tries)
        )
        session.execute(
            settlement_failures.insert().values(
                business_date=business_date,
                attempt=attempt,
                failed_at=failed.failed_at,
                retry_at=failed.retry_at,
                error=failed.error,
            )
        )
    return failed


def _waiting_before(session: Session, target: date, held: dict[date, FailedDate]) -> date | None:
    """The latest date before `target` whose entries wait for a run of its own, or None: a date
    whose run failed (`held`), or whose every run was rejected. The entries recorded before its
    cut-off are that date's, or an earlier one's, never `target`'s."""
    rejected = (
        select(settlement_runs.c.business_date)
        .where(settlement_runs.c.business_date < target)
        .group_by(settlement_runs.c.business_date)
        .having(func.bool_and(settlement_runs.c.state == "rejected"))
        .subquery()
    )
    latest_rejected = session.execute(select(func.max(rejected.c.business_date))).scalar_one()
    waiting = [day for day in held if day < target]
    if latest_rejected is not None:
        waiting.append(latest_rejected)
    return max(waiting, default=None)


def _next_date(
    session: Session,
    business_date: date,
    held: dict[date, FailedDate],
    tried: set[date],
    now: datetime | None,
) -> date | None:
    """The next date to compute on the way to `business_date`, or None when there is none: a
    failed date that is due again (any, when `now` is None), or else the first open date that
    has not failed, up to `business_date`."""
    due = [
        day
        for day, failed in held.items()
        if day <= business_date and day not in tried and (now is None or failed.retry_at <= now)
    ]
    fresh: date | None = None
    if live_row(session, business_date) is None:
        first = _first_open_date(session)
        day = business_date if first is None or first > business_date else first
        while day <= business_date and day in held:
            day += timedelta(days=1)
        fresh = day if day <= business_date else None
    candidates = [*due, *([fresh] if fresh is not None else [])]
    return min(candidates) if candidates else None


def settle_through(
    sessions: sessionmaker[Session], business_date: date, *, patient: bool = False
) -> Settled:
    """Settle `business_date` after any earlier open dates, in order, each in a transaction of
    its own; a date already settled is returned as it is. A date whose run fails is recorded
    (`failed_dates`) and returned with its error (the caller reports it), and the dates after
    it are settled without its entries. Dates that failed before are tried again first: all
    of them (a person asked), or when `patient` (the job) only those whose back-off has passed
    by the clock. A date whose cut-off has not passed is refused (`DayNotOver`) before anything
    is settled."""
    refuse_open(business_date)
    done = Settled()
    tried: set[date] = set()
    while True:
        target: date | None = None
        try:
            with sessions() as session, session.begin():
                _lock(session)
                held = {f.business_date: f for f in failed_dates(session)}
                target = _next_date(
                    session, business_date, held, tried, clock.now() if patient else None
                )
                if target is None:
                    existing = live_row(session, business_date)
                    if existing is not None and all(r.id != existing.id for r in done.runs):
                        done.runs.append(run_of(session, existing))
                    return done
                tried.add(target)
                waiting = _waiting_before(session, target, held)
                floor = None if waiting is None else netting.cutoff(waiting)
                run = netting.compute(session, target, floor)
                reports.record_late_arrivals(session, run)
        except Exception as error:
            if target is None:
                raise
            done.errors.append((_record_failure(sessions, target, error), error))
            continue
        done.runs.append(run)
        if target == business_date:
            return done


def settle(sessions: sessionmaker[Session], business_date: date) -> list[Run]:
    """Settle `business_date`, after any earlier open dates, in order (see `settle_through`);
    return the runs. A date already settled is returned as it is. When a date's run failed,
    raises its error once every date has been tried; a date not over yet is refused
    (`DayNotOver`)."""
    done = settle_through(sessions, business_date)
    if done.errors:
        raise done.errors[0][1]
    return done.runs


def settle_due(sessions: sessionmaker[Session]) -> Settled:
    """Settle yesterday (coalition time, by the clock) and any open date before it, trying dates
    whose run failed again once their back-off has passed; the server runs this every few
    minutes, so a date is settled soon after its cut-off. Safe to repeat. A failed date is
    recorded and logged, never raised: the dates after it are settled all the same. Yesterday's
    cut-off is today's first instant, so the job never asks for a date that is not over. Runs
    computed before runs kept their late arrivals are given them."""
    yesterday = clock.today(get_settings().zone) - timedelta(days=1)
    done = settle_through(sessions, yesterday, patient=True)
    with sessions() as session, session.begin():
        reports.keep_missing_late_arrivals(session)
    for failed, error in done.errors:
        log.error(
            "settlement of %s failed (attempt %d, try %d): %s; next try at %s",
            failed.business_date.isoformat(),
            failed.attempt,
            failed.tries,
            failed.error,
            failed.retry_at.isoformat(),
            # A domain error's message says what failed; any other error is a fault, traced.
            exc_info=None if isinstance(error, DomainError) else error,
        )
    return done
