"""Lots: every point a member holds belongs to a lot with an expiry date. Spending consumes the
oldest-expiring lots first; giving points back restores the lots they came from; what is left of
an expired lot goes to breakage. The sum of a member's open lots equals the member's available
balance (`check_lots` proves it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from clearinghouse.ledger.tables import account_balances, accounts
from clearinghouse.points.tables import lot_movements, point_lots


@dataclass(frozen=True)
class Lot:
    id: int
    member_id: str
    source: str
    issuer_partner_id: str | None
    entry_id: int
    earned_at: datetime
    expires_at: datetime
    amount: int
    remaining: int


Movement = tuple[int, int]  # (lot id, points: negative when consumed, positive when restored)


def _lot(row: Row[tuple[object, ...]]) -> Lot:
    return Lot(**row._asdict())


def expiry_for(earned_at: datetime, months: int, zone: ZoneInfo) -> datetime:
    """The end of the month `months` after the month of earning, in the coalition's time zone:
    the first instant of the following month."""
    local = earned_at.astimezone(zone)
    index = local.year * 12 + (local.month - 1) + months + 1
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=zone)


def create_lot(
    session: Session,
    *,
    member_id: str,
    source: str,
    issuer_partner_id: str | None,
    entry_id: int,
    earned_at: datetime,
    expires_at: datetime,
    amount: int,
) -> int:
    return int(
        session.execute(
            point_lots.insert()
            .values(
                member_id=member_id,
                source=source,
                issuer_partner_id=issuer_partner_id,
                entry_id=entry_id,
                earned_at=earned_at,
                expires_at=expires_at,
                amount=amount,
                remaining=amount,
            )
            .returning(point_lots.c.id)
        ).scalar_one()
    )


def move(session: Session, entry_id: int, movements: list[Movement]) -> None:
    """Apply movements to lots and record them against the entry that caused them."""
    if not movements:
        return
    session.execute(
        lot_movements.insert(),
        [{"lot_id": lot, "entry_id": entry_id, "amount": amount} for lot, amount in movements],
    )
    for lot, amount in movements:
        session.execute(
            update(point_lots)
            .where(point_lots.c.id == lot)
            .values(remaining=point_lots.c.remaining + amount)
        )


def consume(
    session: Session, member_id: str, points: int, entry_id: int, *, first: int | None = None
) -> list[Movement]:
    """Take `points` from the member's open lots, lot `first` before the others if given, then
    the oldest-expiring. The caller holds the member's lock and has posted the entry."""
    open_lots = session.execute(
        select(point_lots.c.id, point_lots.c.remaining)
        .where(point_lots.c.member_id == member_id, point_lots.c.remaining > 0)
        .order_by((point_lots.c.id != (first or 0)), point_lots.c.expires_at, point_lots.c.id)
    ).all()
    movements: list[Movement] = []
    left = points
    for lot_id, remaining in open_lots:
        if left == 0:
            break
        take = min(left, remaining)
        movements.append((lot_id, -take))
        left -= take
    if left:
        # The ledger's floor already refused an overdraft; lots disagreeing is a broken invariant.
        raise RuntimeError(f"lots of member {member_id} hold {points - left} of {points} points")
    move(session, entry_id, movements)
    return movements


def restore(session: Session, consumed: list[Movement], points: int, entry_id: int) -> None:
    """Give `points` back to the lots `consumed` came from, the latest-expiring first (the
    oldest were the ones spent first, so they are the last to come back)."""
    back: list[Movement] = []
    left = points
    for lot_id, amount in reversed(consumed):
        if left == 0:
            break
        give = min(left, -amount)
        back.append((lot_id, give))
        left -= give
    if left:
        raise RuntimeError(f"cannot restore {points} points to lots that gave {points - left}")
    move(session, entry_id, back)


def movements_of(session: Session, entry_id: int) -> list[Movement]:
    rows = session.execute(
        select(lot_movements.c.lot_id, lot_movements.c.amount)
        .where(lot_movements.c.entry_id == entry_id)
        .order_by(lot_movements.c.id)
    )
    return [(r.lot_id, r.amount) for r in rows]


def open_lots(session: Session, member_id: str) -> list[Lot]:
    rows = session.execute(
        select(*point_lots.c)
        .where(point_lots.c.member_id == member_id, point_lots.c.remaining > 0)
        .order_by(point_lots.c.expires_at, point_lots.c.id)
    )
    return [_lot(r) for r in rows]


@dataclass(frozen=True)
class LotMismatch:
    member_id: str
    lots: int
    available: int


def check_lots(session: Session) -> list[LotMismatch]:
    """Members whose open lots do not add up to their available balance, and lots whose
    remaining differs from their amount plus their movements."""
    lot_totals = (
        select(point_lots.c.member_id, func.sum(point_lots.c.remaining).label("total"))
        .group_by(point_lots.c.member_id)
        .subquery()
    )
    balances = (
        select(accounts.c.owner_id.label("member_id"), account_balances.c.balance.label("total"))
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .where(accounts.c.owner_type == "member", accounts.c.kind == "available")
        .subquery()
    )
    lot_sum = func.coalesce(lot_totals.c.total, 0)
    balance = func.coalesce(balances.c.total, 0)
    rows = session.execute(
        select(func.coalesce(lot_totals.c.member_id, balances.c.member_id), lot_sum, balance)
        .select_from(
            lot_totals.join(balances, lot_totals.c.member_id == balances.c.member_id, full=True)
        )
        .where(lot_sum != balance)
    ).all()
    mismatches = [LotMismatch(r[0], int(r[1]), int(r[2])) for r in rows]
    moved = (
        select(lot_movements.c.lot_id, func.sum(lot_movements.c.amount).label("total"))
        .group_by(lot_movements.c.lot_id)
        .subquery()
    )
    drifted = session.execute(
        select(point_lots.c.member_id, point_lots.c.remaining, point_lots.c.amount)
        .outerjoin(moved, moved.c.lot_id == point_lots.c.id)
        .where(point_lots.c.remaining != point_lots.c.amount + func.coalesce(moved.c.total, 0))
    ).all()
    mismatches += [LotMismatch(r.member_id, int(r.remaining), int(r.amount)) for r in drifted]
    return mismatches
