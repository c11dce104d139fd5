"""The liability day by day: outstanding points by issuer at the end of each business day.

A closed day's figure is taken once, by `snapshot_closed_days`, and read from then on: a purchase
recorded later, even one that occurred on that day, counts from the day it is recorded on and
never rewrites a closed day. Only today's figure (and a closed day not yet taken) is computed
from the lots."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.points.tables import point_lots
from settlement.netting import business_date_of, cutoff
from settlement.tables import liability_snapshot_issuers, liability_snapshots

# Outstanding points by issuer at each of the ascending `instants`, in one pass over the lots and
# their movements rather than one per instant. A lot counts at instant t from its earning until
# its expiry (earned_at <= t < expires_at), with what it held then: its amount plus its movements
# recorded up to t. So each lot and each movement is a piece that starts counting at one instant
# (the lot's earning, or the movement's recording if later) and stops at the lot's expiry; a
# piece counts from the first instant at or after its start (width_bucket finds it: the
# thresholds are inclusive below, hence the microsecond, PostgreSQL's resolution) and is taken
# back from the first at or after its expiry. Per issuer, a running sum over the instants adds up
# the pieces. Pieces gone before the first instant or starting after the last never count.
_FIGURES = text(
    """
    WITH pieces AS (
        SELECT l.issuer_partner_id AS issuer, l.earned_at AS starts, l.expires_at AS ends,
               l.amount AS points
        FROM point_lots l
        WHERE l.expires_at > :first AND l.earned_at <= :last
        UNION ALL
        SELECT l.issuer_partner_id, greatest(m.recorded_at, l.earned_at), l.expires_at, m.amount
        FROM point_lots l JOIN lot_movements m ON m.lot_id = l.id
        WHERE l.expires_at > :first AND greatest(m.recorded_at, l.earned_at) <= :last
          AND greatest(m.recorded_at, l.earned_at) < l.expires_at
    ), changes AS (
        SELECT coalesce(issuer, '') AS issuer,
               width_bucket(starts - interval '1 microsecond', :instants) + 1 AS n,
               points
        FROM pieces
        UNION ALL
        SELECT coalesce(issuer, ''),
               width_bucket(ends - interval '1 microsecond', :instants) + 1,
               -points
        FROM pieces WHERE ends <= :last
    ), deltas AS (
        SELECT issuer, n, sum(points) AS points FROM changes GROUP BY issuer, n
    ), running AS (
        SELECT i.n, d.issuer,
               sum(coalesce(delta.points, 0)) OVER (PARTITION BY d.issuer ORDER BY i.n) AS points
        FROM generate_series(1, cardinality(:instants)) AS i(n)
        CROSS JOIN (SELECT DISTINCT issuer FROM deltas) AS d
        LEFT JOIN deltas AS delta ON delta.n = i.n AND delta.issuer = d.issuer
    )
    SELECT n, nullif(issuer, '') AS issuer, points FROM running
    -- liability_report lists only issuers with points left.
    WHERE points > 0
    ORDER BY n, nullif(issuer, '')
    """
).bindparams(bindparam("instants", type_=ARRAY(DateTime(timezone=True))))


# Outstanding points by issuer at :at from what each lot holds now, without its history: a lot
# alive at :at (earned_at <= :at < expires_at) counts its remaining points less its movements
# recorded after :at, so the figure is _FIGURES's at that instant. When :at is now, no movement
# comes after it and the query reads only the open lots, whatever the journal's length.
_OUTSTANDING_AT = text(
    """
    SELECT nullif(issuer, '') AS issuer, sum(points) AS points FROM (
        SELECT coalesce(issuer_partner_id, '') AS issuer, remaining AS points
        FROM point_lots
        WHERE remaining > 0 AND expires_at > :at AND earned_at <= :at
        UNION ALL
        SELECT coalesce(l.issuer_partner_id, ''), -m.amount
        FROM lot_movements m JOIN point_lots l ON l.id = m.lot_id
        WHERE m.recorded_at > :at AND l.expires_at > :at AND l.earned_at <= :at
    ) AS pieces
    GROUP BY issuer
    HAVING sum(points) > 0
    """
)


def _outstanding_at(session: Session, at: datetime) -> dict[str | None, int]:
    """Outstanding points by issuer at `at` (as `_figures` counts them), read from the lots'
    remaining points: the figure of the day still open."""
    rows = session.execute(_OUTSTANDING_AT, {"at": at}).all()
    return {issuer: int(points) for issuer, points in sorted(rows, key=_issuer_order)}


def _issuer_order(row: Any) -> tuple[bool, str]:
    return (row[0] is None, row[0] or "")


def _figures(session: Session, instants: list[datetime]) -> list[dict[str | None, int]]:
    """Outstanding points by issuer (None: the coalition) at each of the ascending `instants`,
    in the order of liability_report (by issuer, the coalition last)."""
    by_instant: list[dict[str | None, int]] = [{} for _ in instants]
    if not instants:
        return by_instant
    rows = session.execute(
        _FIGURES, {"instants": instants, "first": instants[0], "last": instants[-1]}
    )
    for n, issuer, points in rows:
        by_instant[n - 1][issuer] = int(points)
    return by_instant


def _day(business_date: date, as_of: datetime, figures: dict[str | None, int]) -> dict[str, Any]:
    by_issuer = {issuer or "coalition": points for issuer, points in figures.items()}
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
    first snapshot is of the first lot's day); a closed day after the last one, not taken yet,
    is computed like today. At `now` this is `liability_report`'s outstanding, provided no
    movement is recorded after `now` and no lot is earned after it (accrual accepts purchases up
    to a few minutes in the future)."""
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
    figures = dict(zip(closed, _figures(session, list(ends.values())), strict=True))
    if not before_snapshots(today):
        ends[today] = min(cutoff(today), moment)
        figures[today] = _outstanding_at(session, ends[today])
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
    on the first run, every day since the first lot's. Return the days taken. Safe to run twice
    or at once: runs are serialised by an advisory lock, and a day is taken only once."""
    moment = now or clock.now()
    last_closed = business_date_of(moment) - timedelta(days=1)
    with sessions() as session, session.begin():
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("liability_snapshots"))))
        last_taken = session.execute(select(func.max(liability_snapshots.c.business_date))).scalar()
        if last_taken is not None:
            first = last_taken + timedelta(days=1)
        else:
            first_earned = session.execute(select(func.min(point_lots.c.earned_at))).scalar()
            if first_earned is None:
                return []
            first = business_date_of(first_earned)
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
            for day, figures in zip(days, _figures(session, ends), strict=True)
            for issuer, points in figures.items()
        ]
        if issuers:
            session.execute(insert(liability_snapshot_issuers), issuers)
    return days
