"""Outstanding points by issuer, read from the lots and their movements: at one instant, at
many instants in one pass, and what expires soon (in all, and by linked member). The
coalition's liability (settlement's history and report) is built on these; None is the
coalition's own issue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clearinghouse.members.service import partner_links
from clearinghouse.points.tables import point_lots

# Outstanding points by issuer at each of the ascending `instants`, in one pass over the lots and
# their movements rather than one per instant. A lot counts at instant t from its recording
# until its expiry (recorded_at <= t < expires_at), with what it held then: its amount plus its
# movements recorded up to t. A lot counts from when it was recorded, not from when its points
# were earned: a purchase reported days late earns as of the day it occurred but was not owed
# before it arrived, so no day that had ended before it arrived ever counts it. So each lot and
# each movement is a piece that starts counting at one instant (the lot's recording, or the
# movement's recording if later) and stops at the lot's expiry; a piece counts from the first
# instant at or after its start (width_bucket finds it: the thresholds are inclusive below,
# hence the microsecond, PostgreSQL's resolution) and is taken back from the first at or after
# its expiry. Per issuer, a running sum over the instants adds up the pieces. Pieces gone before
# the first instant or starting after the last never count.
_AT_INSTANTS = text(
    """
    WITH pieces AS (
        SELECT l.issuer_partner_id AS issuer, l.recorded_at AS starts, l.expires_at AS ends,
               l.amount AS points
        FROM point_lots l
        WHERE l.expires_at > :first AND l.recorded_at <= :last AND l.recorded_at < l.expires_at
        UNION ALL
        SELECT l.issuer_partner_id, greatest(m.recorded_at, l.recorded_at), l.expires_at, m.amount
        FROM point_lots l JOIN lot_movements m ON m.lot_id = l.id
        WHERE l.expires_at > :first AND greatest(m.recorded_at, l.recorded_at) <= :last
          AND greatest(m.recorded_at, l.recorded_at) < l.expires_at
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
# alive at :at (recorded_at <= :at < expires_at) counts its remaining points less its movements
# recorded after :at, so the figure is _AT_INSTANTS's at that instant. When :at is now, no movement
# comes after it and the query reads only the open lots, whatever the journal's length.
_AT_INSTANT = text(
    """
    SELECT nullif(issuer, '') AS issuer, sum(points) AS points FROM (
        SELECT coalesce(issuer_partner_id, '') AS issuer, remaining AS points
        FROM point_lots
        WHERE remaining > 0 AND expires_at > :at AND recorded_at <= :at
        UNION ALL
        SELECT coalesce(l.issuer_partner_id, ''), -m.amount
        FROM lot_movements m JOIN point_lots l ON l.id = m.lot_id
        WHERE m.recorded_at > :at AND l.expires_at > :at AND l.recorded_at <= :at
    ) AS pieces
    GROUP BY issuer
    HAVING sum(points) > 0
    """
)


COALITION_ISSUER = "coalition"
"""How reports name the issuer of the coalition's own points (bonuses), which no partner
issued: the None key of the figures here."""


def at_instant(session: Session, at: datetime) -> dict[str | None, int]:
    """Outstanding points by issuer at `at` (as `at_instants` counts them), read from the lots'
    remaining points: cheap when `at` is now or recent."""
    rows = session.execute(_AT_INSTANT, {"at": at}).all()
    return {issuer: int(points) for issuer, points in sorted(rows, key=_issuer_order)}


def _issuer_order(row: Any) -> tuple[bool, str]:
    return (row[0] is None, row[0] or "")


def at_instants(session: Session, instants: list[datetime]) -> list[dict[str | None, int]]:
    """Outstanding points by issuer (None: the coalition) at each of the ascending `instants`,
    by issuer, the coalition last."""
    by_instant: list[dict[str | None, int]] = [{} for _ in instants]
    if not instants:
        return by_instant
    rows = session.execute(
        _AT_INSTANTS, {"instants": instants, "first": instants[0], "last": instants[-1]}
    )
    for n, issuer, points in rows:
        by_instant[n - 1][issuer] = int(points)
    return by_instant


def expiring_within(session: Session, at: datetime, days: int) -> int:
    """Points left in lots that expire after `at` and within `days` of it."""
    points: int = session.execute(
        select(func.coalesce(func.sum(point_lots.c.remaining), 0)).where(
            point_lots.c.remaining > 0,
            point_lots.c.expires_at > at,
            point_lots.c.expires_at <= at + timedelta(days=days),
        )
    ).scalar_one()
    return int(points)


def lapsed(session: Session, at: datetime) -> int:
    """Points left in lots that expired by `at` and that the expiry job has not yet moved to
    breakage: no longer outstanding, still in their members' available balances."""
    points: int = session.execute(
        select(func.coalesce(func.sum(point_lots.c.remaining), 0)).where(
            point_lots.c.remaining > 0, point_lots.c.expires_at <= at
        )
    ).scalar_one()
    return int(points)


def first_recording(session: Session) -> datetime | None:
    """When the first lot was recorded, if any was."""
    first: datetime | None = session.execute(select(func.min(point_lots.c.recorded_at))).scalar()
    return first


@dataclass(frozen=True)
class ExpiringMember:
    member_id: str
    customer_ref: str
    points: int
    first_expiry: datetime


def expiring_members(
    session: Session, partner_id: str, horizon: datetime, limit: int, after: str | None = None
) -> list[ExpiringMember]:
    """The members linked to the partner with points in lots expiring by `horizon`, by member
    id (those after `after`), `limit` of them."""
    links = partner_links(partner_id)
    query = (
        select(
            links.c.member_id,
            links.c.customer_ref,
            func.sum(point_lots.c.remaining),
            func.min(point_lots.c.expires_at),
        )
        .join(point_lots, point_lots.c.member_id == links.c.member_id)
        .where(point_lots.c.remaining > 0, point_lots.c.expires_at <= horizon)
        .group_by(links.c.member_id, links.c.customer_ref)
        .order_by(links.c.member_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(links.c.member_id > after)
    return [
        ExpiringMember(member_id, customer_ref, int(points), first_expiry)
        for member_id, customer_ref, points, first_expiry in session.execute(query)
    ]
