"""Settlement runs as they are stored and read: a partner's side of a run (`Line`), a date's run
with its totals (`Run`), a date whose run failed (`FailedDate`), and what finance reads of them:
a date's live run, the listing of dates, a run's history (`Event`) and approvals (`Approval`),
and the reconciliation breaks open for a date.

Every change of a run adds to its history through `record_event`, and each partner in a run
hears of its computation, approval and payment by webhook (`settlement.events.announce`).
Computing a run is `settlement.netting`'s, changing its state `settlement.approval`'s, and
recording a failed try `settlement.schedule`'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from clearinghouse.errors import NotFound
from clearinghouse.users.service import User
from settlement import categories
from settlement.tables import (
    reconciliations,
    settlement_approvals,
    settlement_events,
    settlement_failures,
    settlement_lines,
    settlement_runs,
)

CLEARING = "coalition:clearing"


class SettlementNotFound(NotFound):
    code = "settlement_not_found"
    title = "No settlement for that date"


@dataclass
class Line:
    """A partner's side of a run: points and fen by category, a pair of fields for each of
    `settlement.categories.CATEGORIES` in its order (a test holds them to it)."""

    partner_id: str
    issued_points: int = 0
    issued_fen: int = 0
    reversed_points: int = 0
    reversed_fen: int = 0
    redeemed_points: int = 0
    redeemed_fen: int = 0
    redemption_refunded_points: int = 0
    redemption_refunded_fen: int = 0
    exchange_in_points: int = 0
    exchange_in_fen: int = 0
    exchange_out_points: int = 0
    exchange_out_fen: int = 0
    catalogue_points: int = 0
    catalogue_fen: int = 0
    catalogue_returned_points: int = 0
    catalogue_returned_fen: int = 0

    @property
    def net_fen(self) -> int:
        return sum(
            category.sign * int(getattr(self, category.fen_column))
            for category in categories.CATEGORIES
        )

    def add(self, category: str, points: int, fen: int) -> None:
        setattr(self, f"{category}_points", getattr(self, f"{category}_points") + points)
        setattr(self, f"{category}_fen", getattr(self, f"{category}_fen") + fen)


@dataclass
class Run:
    id: int
    business_date: date
    attempt: int
    cutoff: datetime
    state: str
    bank_reference: str | None
    entries: int
    computed_at: datetime
    lines: list[Line] = field(default_factory=list)

    @property
    def partners_net_fen(self) -> int:
        return sum(line.net_fen for line in self.lines)

    @property
    def partners_pay_fen(self) -> int:
        """What the partners with a positive net pay the coalition."""
        return sum(max(line.net_fen, 0) for line in self.lines)

    @property
    def partners_receive_fen(self) -> int:
        """What the coalition pays the partners with a negative net."""
        return sum(-min(line.net_fen, 0) for line in self.lines)

    clearing_fen: int = 0
    """The coalition's leg of the posted settlement entry (what it receives, negated)."""

    @property
    def coalition_fen(self) -> int:
        """The coalition's revenue for the day (spread, fees): what it keeps, as posted."""
        return -self.clearing_fen

    @property
    def computed_early(self) -> bool:
        """Computed before its cut-off had passed (a run of a date not over, which the day
        boundary now refuses): entries recorded on its date after it are in a later run."""
        return self.computed_at < self.cutoff

    @property
    def zero_sum(self) -> bool:
        """The partners' nets and the coalition's revenue, as posted, cancel to the fen."""
        return self.partners_net_fen - self.coalition_fen == 0


@dataclass(frozen=True)
class FailedDate:
    """A date whose run failed and has not been computed since: its attempt, how many tries of
    it failed, the last one's error, and when the job tries again."""

    business_date: date
    attempt: int
    tries: int
    error: str
    failed_at: datetime
    retry_at: datetime
    state: str = "failed"


@dataclass(frozen=True)
class Event:
    """A step in the history of a date's runs: a change of state (`from_state` is None when the
    run was computed) or a first approval, by whom (None: the job) and when."""

    attempt: int
    from_state: str | None
    to_state: str
    user: str | None
    note: str | None
    at: datetime


@dataclass(frozen=True)
class Approval:
    """A person's approval of a date's live run."""

    user: str
    at: datetime


def live_row(session: Session, business_date: date) -> Any:
    """The row of the date's live run (the one not rejected), or None."""
    return session.execute(
        select(settlement_runs).where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
    ).first()


def record_event(
    session: Session, run_id: int, before: str | None, after: str, user: User | None, note: str
) -> None:
    session.execute(
        settlement_events.insert().values(
            run_id=run_id,
            from_state=before,
            to_state=after,
            user_id=user.id if user else None,
            note=note,
        )
    )


def load_run(session: Session, business_date: date) -> Run:
    row = live_row(session, business_date)
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    return run_of(session, row)


def lines_of(session: Session, run_id: int) -> list[Line]:
    return [
        Line(**{k: v for k, v in r._asdict().items() if k not in ("run_id", "net_fen")})
        for r in session.execute(
            select(settlement_lines)
            .where(settlement_lines.c.run_id == run_id)
            .order_by(settlement_lines.c.partner_id)
        )
    ]


def run_of(session: Session, row: Any) -> Run:
    """The run of a `settlement_runs` row, with its lines and the clearing leg of its entry."""
    return Run(
        row.id,
        row.business_date,
        row.attempt,
        row.cutoff,
        row.state,
        row.bank_reference,
        row.entries,
        row.computed_at,
        lines_of(session, row.id),
        row.clearing_fen,
    )


def list_runs(session: Session, limit: int = 60, before: date | None = None) -> list[Run]:
    """The live runs, newest date first; only those before the date `before`, if given."""
    query = select(settlement_runs).where(settlement_runs.c.state != "rejected")
    if before is not None:
        query = query.where(settlement_runs.c.business_date < before)
    rows = session.execute(
        query.order_by(settlement_runs.c.business_date.desc()).limit(limit)
    ).all()
    return [run_of(session, row) for row in rows]


# A failure is current while no run of its attempt or a later one has been computed.
current_failure = ~exists().where(
    settlement_runs.c.business_date == settlement_failures.c.business_date,
    settlement_runs.c.attempt >= settlement_failures.c.attempt,
)


def failed_dates(
    session: Session, limit: int | None = None, before: date | None = None
) -> list[FailedDate]:
    """The dates whose run failed and has not been computed since, newest first; only those
    before the date `before`, if given."""
    last = func.max(settlement_failures.c.id)
    query = (
        select(
            settlement_failures.c.business_date,
            func.max(settlement_failures.c.attempt).label("attempt"),
            func.count().label("tries"),
            last.label("last_id"),
        )
        .where(current_failure)
        .group_by(settlement_failures.c.business_date)
        .order_by(settlement_failures.c.business_date.desc())
    )
    if before is not None:
        query = query.where(settlement_failures.c.business_date < before)
    if limit is not None:
        query = query.limit(limit)
    summary = query.subquery()
    rows = session.execute(
        select(summary, settlement_failures.c.error, settlement_failures.c.failed_at)
        .add_columns(settlement_failures.c.retry_at)
        .join(settlement_failures, settlement_failures.c.id == summary.c.last_id)
        .order_by(summary.c.business_date.desc())
    ).all()
    return [
        FailedDate(r.business_date, r.attempt, r.tries, r.error, r.failed_at, r.retry_at)
        for r in rows
    ]


def list_dates(
    session: Session, limit: int = 60, before: date | None = None
) -> list[Run | FailedDate]:
    """The live runs and the dates whose run failed (and has not been computed since), newest
    date first; only those before the date `before`, if given."""
    dated: list[Run | FailedDate] = [
        *list_runs(session, limit, before),
        *failed_dates(session, limit, before),
    ]
    return sorted(dated, key=lambda item: item.business_date, reverse=True)[:limit]


def history(session: Session, business_date: date) -> list[Event]:
    """Every step of every run of the date, rejected ones included, in the order taken."""
    rows = session.execute(
        select(settlement_events, settlement_runs.c.attempt)
        .join(settlement_runs, settlement_runs.c.id == settlement_events.c.run_id)
        .where(settlement_runs.c.business_date == business_date)
        .order_by(settlement_events.c.id)
    )
    return [Event(r.attempt, r.from_state, r.to_state, r.user_id, r.note, r.at) for r in rows]


def approvals(session: Session, business_date: date) -> list[Approval]:
    """The approvals of the date's live run, oldest first."""
    rows = session.execute(
        select(settlement_approvals.c.user_id, settlement_approvals.c.at)
        .join(settlement_runs, settlement_runs.c.id == settlement_approvals.c.run_id)
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
        .order_by(settlement_approvals.c.at)
    )
    return [Approval(r.user_id, r.at) for r in rows]


def open_breaks(session: Session, business_date: date) -> int:
    count = session.execute(
        select(func.coalesce(func.sum(reconciliations.c.break_count), 0)).where(
            reconciliations.c.business_date == business_date,
            reconciliations.c.resolved_at.is_(None),
        )
    ).scalar_one()
    return int(count)
