"""The liability day by day: outstanding points by issuer at the end of each business day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, DateTime, and_, column, func, select, values
from sqlalchemy.orm import Session

from clearinghouse.config import get_settings
from clearinghouse.points.tables import lot_movements, point_lots
from settlement.netting import cutoff


def liability_history(
    session: Session, days: int = 30, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Outstanding points by issuer at the end of each of the last `days` business days, today
    last (today's end is `now`). A lot counts at instant t from its earning until its expiry
    (earned_at <= t < expires_at), with what it held then: its amount plus its movements
    recorded up to t. At `now` this is `liability_report`'s outstanding, provided no movement
    is recorded after `now` and no lot is earned after it (accrual accepts purchases up to a few
    minutes in the future)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must carry a time zone")
    today = moment.astimezone(get_settings().zone).date()
    dates = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]
    # A day ends at its settlement cut-off (the next local midnight), so a day's liability and
    # its settlement draw the same line; the instants go to the database as one VALUES list.
    ends: list[tuple[date, datetime]] = [(day, min(cutoff(day), moment)) for day in dates]
    instants = values(
        column("business_date", Date),
        column("as_of", DateTime(timezone=True)),
        name="instants",
    ).data(ends)
    per_lot = (
        select(
            instants.c.business_date,
            point_lots.c.issuer_partner_id,
            (point_lots.c.amount + func.coalesce(func.sum(lot_movements.c.amount), 0)).label(
                "outstanding"
            ),
        )
        .select_from(instants)
        .join(
            point_lots,
            and_(
                point_lots.c.earned_at <= instants.c.as_of,
                point_lots.c.expires_at > instants.c.as_of,
            ),
        )
        .outerjoin(
            lot_movements,
            and_(
                lot_movements.c.lot_id == point_lots.c.id,
                lot_movements.c.recorded_at <= instants.c.as_of,
            ),
        )
        .group_by(instants.c.business_date, point_lots.c.id)
        .subquery()
    )
    outstanding = func.sum(per_lot.c.outstanding)
    rows = session.execute(
        select(per_lot.c.business_date, per_lot.c.issuer_partner_id, outstanding)
        .group_by(per_lot.c.business_date, per_lot.c.issuer_partner_id)
        # liability_report lists only issuers with points left.
        .having(outstanding > 0)
        .order_by(per_lot.c.business_date, per_lot.c.issuer_partner_id)
    ).all()
    by_date: dict[date, dict[str, int]] = {day: {} for day in dates}
    for business_date, issuer, points in rows:
        by_date[business_date][issuer or "coalition"] = int(points)
    return [
        {
            "business_date": day,
            "as_of": as_of,
            "by_issuer": by_date[day],
            "total_points": sum(by_date[day].values()),
        }
        for day, as_of in ends
    ]
