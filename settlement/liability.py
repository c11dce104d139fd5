"""The liability day by day: outstanding points by issuer at the end of each business day.

A day is the day points were *recorded* on, as for settlement: a lot counts from the instant it
was written (clearinghouse.points.outstanding), so a purchase reported late, even one that
occurred on a closed day, counts from the day it arrives and never rewrites a closed day, whether
that day is read from its snapshot or computed. A closed day's figure is taken once, by
`snapshot_closed_days`, and read from then on, so that a long history reads no lots; only today's
figure (and a closed day not yet taken) is computed from the lots."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.points import outstanding
from settlement.netting import business_date_of, cutoff
from settlement.tables import liability_snapshot_issuers, liability_snapshots


def _day(business_date: date, as_of: datetime, figures: dict[str | None, int]) -> dict[str, Any]:
    by_issuer = {
        issuer or outstanding.COALITION_ISSUER: points for issuer, points in figures.items()
    }
    return {
        "business_date": business_date,
        "as_of": as_of,
        "by_issuer": by_issuer,
        "total_points": sum(by_issuer.values()),
    }


def liability_history(
    session: Session, days: int = 30, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Outstanding points by issuer at the end of each of the last `days` business days, today
    last (today's end is `now`). A day ends at its settlement cut-off (the next local midnight),
    so a day's liability and its settlement draw the same line.

    A closed day reads its snapshot. Before the first snapshot nothing was outstanding (the
    first snapshot is of the day the first lot was recorded on); a closed day after the last
    one, not taken yet, is computed like today, with the same figure its snapshot will hold.
    At `now` this is `liability_report`'s outstanding, provided nothing is recorded after
    `now`."""
    if days < 1:
        raise ValueError("days must be at least 1")
    moment = now or clock.now()
    if moment.tzinfo is None:
        raise ValueError("now must carry a time zone")
    today = business_date_of(moment)
    dates = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]

    first_taken = session.execute(select(func.min(liability_snapshots.c.business_date))).scalar()
    taken: dict[date, tuple[datetime, dict[str | None, int]]] = {}
    if first_taken is not None and days > 1:
        rows = session.execute(
            select(
                liability_snapshots.c.business_date,
                liability_snapshots.c.as_of,
                liability_snapshot_issuers.c.issuer_partner_id,
                liability_snapshot_issuers.c.points,
            )
            .outerjoin(liability_snapshot_issuers)
            .where(liability_snapshots.c.business_date.between(dates[0], dates[-2]))
            .order_by(
                liability_snapshots.c.business_date,
                liability_snapshot_issuers.c.issuer_partner_id,
            )
        ).all()
        for business_date, as_of, issuer, points in rows:
            held = taken.setdefault(business_date, (as_of, {}))[1]
            if points is not None:
                held[issuer] = int(points)

    def before_snapshots(day: date) -> bool:
        return first_taken is not None and day < first_taken

    closed = [day for day in dates[:-1] if day not in taken and not before_snapshots(day)]
    ends = {day: cutoff(day) for day in closed}
    figures = dict(zip(closed, outstanding.at_instants(session, list(ends.values())), strict=True))
    if not before_snapshots(today):
        ends[today] = min(cutoff(today), moment)
        figures[today] = outstanding.at_instant(session, ends[today])
    history = []
    for day in dates:
        if day in taken:
            history.append(_day(day, *taken[day]))
        elif day in figures:
            history.append(_day(day, ends[day], figures[day]))
        else:
            history.append(_day(day, cutoff(day), {}))
    return history


def snapshot_closed_days(
    sessions: sessionmaker[Session], now: datetime | None = None
) -> list[date]:
    """Take the liability of every closed business day not taken yet, in one pass over the lots;
    on the first run, every day since the first lot was recorded. Return the days taken. Safe
    to run twice or at once: runs are serialised by an advisory lock, and a day is taken only
    once."""
    moment = now or clock.now()
    last_closed = business_date_of(moment) - timedelta(days=1)
    with sessions() as session, session.begin():
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("liability_snapshots"))))
        last_taken = session.execute(select(func.max(liability_snapshots.c.business_date))).scalar()
        if last_taken is not None:
            first = last_taken + timedelta(days=1)
        else:
            first_recorded = outstanding.first_recording(session)
            if first_recorded is None:
                return []
            first = business_date_of(first_recorded)
        days = [first + timedelta(days=n) for n in range((last_closed - first).days + 1)]
        if not days:
            return []
        ends = [cutoff(day) for day in days]
        session.execute(
            insert(liability_snapshots),
            [
                {"business_date": day, "as_of": as_of, "taken_at": moment}
                for day, as_of in zip(days, ends, strict=True)
            ],
        )
        issuers = [
            {"business_date": day, "issuer_partner_id": issuer, "points": points}
            for day, figures in zip(days, outstanding.at_instants(session, ends), strict=True)
            for issuer, points in figures.items()
        ]
        if issuers:
            session.execute(insert(liability_snapshot_issuers), issuers)
    return days
