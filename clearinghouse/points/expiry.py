"""The daily expiry job: what is left of expired lots moves to `coalition:breakage`.

Idempotent: an expired lot is emptied once (its remaining becomes zero under the member's
lock), so running the job twice, or two at once, expires each point once. Points that come back
to an already expired lot later (a voided hold) are expired by the next run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.points import events, lots, wallet
from clearinghouse.points.tables import lot_movements, point_lots

BREAKAGE = "coalition:breakage"


@dataclass(frozen=True)
class ExpiryRun:
    members: int
    lots: int
    points: int


def _expire_member(session: Session, member_id: str, now: datetime) -> tuple[int, int]:
    wallet.lock_member(session, member_id)
    due = session.execute(
        select(point_lots.c.id, point_lots.c.remaining)
        .where(
            point_lots.c.member_id == member_id,
            point_lots.c.expires_at <= now,
            point_lots.c.remaining > 0,
        )
        .order_by(point_lots.c.id)
    ).all()
    total = sum(r.remaining for r in due)
    if not total:
        return 0, 0
    # The lots' latest movement makes the key unique even when the same amounts come back to the
    # same lots again later.
    last_move = session.execute(
        select(func.coalesce(func.max(lot_movements.c.id), 0)).where(
            lot_movements.c.lot_id.in_([r.id for r in due])
        )
    ).scalar_one()
    fingerprint = hashlib.sha256(
        (f"{last_move}|" + ";".join(f"{r.id}:{r.remaining}" for r in due)).encode()
    ).hexdigest()
    posted = ledger.post(
        session,
        ledger.transfer(
            kind="expiry",
            origin="job:expiry",
            idempotency_key=f"{member_id}:{fingerprint}",
            source=wallet.available_account(member_id),
            destination=BREAKAGE,
            amount=total,
            occurred_at=now,
            metadata={"member_id": member_id, "lots": [r.id for r in due]},
        ),
    )
    lots.move(session, posted.id, [(r.id, -r.remaining) for r in due])
    events.expired(session, member_id=member_id, points=total, lots=len(due), entry_id=posted.id)
    return len(due), total


def expire_lots(
    sessions: sessionmaker[Session], now: datetime | None = None, *, batch: int = 200
) -> ExpiryRun:
    """Expire every lot due at `now`, one member per transaction."""
    moment = now or clock.now()
    members_done = lots_done = points_done = 0
    last = ""
    while True:
        with sessions() as session, session.begin():
            rows = session.execute(
                select(point_lots.c.member_id)
                .where(
                    point_lots.c.expires_at <= moment,
                    point_lots.c.remaining > 0,
                    point_lots.c.member_id > last,
                )
                .order_by(point_lots.c.member_id)
                .distinct()
                .limit(batch)
            ).scalars()
            due_members = [member for member, _ in groupby(rows)]
        if not due_members:
            return ExpiryRun(members_done, lots_done, points_done)
        for member_id in due_members:
            with sessions() as session, session.begin():
                count, points = _expire_member(session, member_id, moment)
            if count:
                members_done += 1
                lots_done += count
                points_done += points
        last = due_members[-1]
