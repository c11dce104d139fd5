"""The daily reminders of points about to expire: each partner hears, `expiring_notice_days`
ahead (its own horizon), of every member linked to it with points expiring, once per member
and expiry time (`points.expiring`), so it can remind its members. Safe to run again and at
once: a reminder already written is not written twice."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.points.schemas import PointsExpiringData
from clearinghouse.webhooks import service as webhooks
from partners.directory import list_partners

CHUNK = 500
"""Reminders written per transaction."""

_EXPIRING = (
    "SELECT l.member_id, p.expires_at, sum(p.remaining) AS points"
    " FROM member_links l JOIN point_lots p ON p.member_id = l.member_id"
    " WHERE l.partner_id = %s AND p.remaining > 0 AND p.expires_at > %s AND p.expires_at <= %s"
    " GROUP BY l.member_id, p.expires_at ORDER BY l.member_id, p.expires_at"
)


def remind_expiring(sessions: sessionmaker[Session]) -> int:
    """Write the `points.expiring` reminders due now for every partner that receives them;
    return how many were written."""
    now = clock.now()
    with sessions() as session, session.begin():
        partners = [
            p
            for p in list_partners(session)
            if p.status == "active" and webhooks.heard(session, "points.expiring", p.id)
        ]
    written = 0
    for partner in partners:
        with sessions() as session, session.begin():
            tx = Tx.of(session)
            until = now + timedelta(days=partner.expiring_notice_days)
            due = tx.all(_EXPIRING, (partner.id, now, until))
        for start in range(0, len(due), CHUNK):
            with sessions() as session, session.begin():
                written += len(
                    webhooks.emit_all(
                        session,
                        [
                            webhooks.Event(
                                partner.id,
                                "points.expiring",
                                PointsExpiringData(
                                    member_id=row.member_id,
                                    customer_ref=None,
                                    points=row.points,
                                    expires_at=row.expires_at,
                                    notice_days=partner.expiring_notice_days,
                                ).model_dump(mode="json"),
                                member_id=row.member_id,
                                once=f"points.expiring:{row.member_id}:{row.expires_at.isoformat()}",
                            )
                            for row in due[start : start + CHUNK]
                        ],
                    )
                )
    return written
