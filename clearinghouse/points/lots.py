"""Lots: every point a member holds belongs to a lot with an expiry date. Spending consumes the
oldest-expiring lots first; giving points back restores the lots they came from; what is left of
an expired lot goes to breakage. The sum of a member's open lots equals the member's available
balance (`check_lots` proves it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse.database import Tx
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


def _lot(row: Any) -> Lot:
    return Lot(**row._asdict())


def expiry_for(earned_at: datetime, months: int, zone: ZoneInfo) -> datetime:
    """The end of the month `months` after the month of earning, in the coalition's time zone:
    the first instant of the following month."""
    local = earned_at.astimezone(zone)
    index = local.year * 12 + (local.month - 1) + months + 1
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=zone)


def create_lot(
    db: Session | Tx,
    *,
    member_id: str,
    source: str,
    issuer_partner_id: str | None,
    entry_id: int,
    earned_at: datetime,
    expires_at: datetime,
    amount: int,
) -> int:
    lot_id: int = Tx.of(db).scalar(
        "INSERT INTO point_lots (member_id, source, issuer_partner_id, entry_id, earned_at,"
        " expires_at, amount, remaining) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (member_id, source, issuer_partner_id, entry_id, earned_at, expires_at, amount, amount),
    )
    return lot_id


# Moving points between lots is done by SQL functions (lots_move, lots_consume,
# lots_give_back), which the hold and redemption statements call too.


def move(db: Session | Tx, entry_id: int, movements: list[Movement]) -> None:
    """Apply movements to lots and record them against the entry that caused them."""
    if movements:
        Tx.of(db).execute(
            "SELECT lots_move(%s, %s::bigint[], %s::bigint[])",
            (entry_id, [lot for lot, _ in movements], [amount for _, amount in movements]),
        )


def consume(
    db: Session | Tx, member_id: str, points: int, entry_id: int, *, first: int | None = None
) -> None:
    """Take `points` from the member's open lots, lot `first` before the others if given, then
    the oldest-expiring. The caller holds the member's lock and has posted the entry."""
    Tx.of(db).execute("SELECT lots_consume(%s, %s, %s, %s)", (member_id, points, entry_id, first))


def restore(db: Session | Tx, consumed: list[Movement], points: int, entry_id: int) -> None:
    """Give `points` back to the lots `consumed` came from, the latest-expiring first (the
    oldest were the ones spent first, so they are the last to come back)."""
    back = list(reversed(consumed))
    Tx.of(db).execute(
        "SELECT lots_give_back(%s, %s::bigint[], %s::bigint[], %s)",
        (entry_id, [lot for lot, _ in back], [-amount for _, amount in back], points),
    )


def movements_of(db: Session | Tx, entry_id: int) -> list[Movement]:
    rows = Tx.of(db).all(
        "SELECT lot_id, amount FROM lot_movements WHERE entry_id = %s ORDER BY id", (entry_id,)
    )
    return [(r.lot_id, r.amount) for r in rows]


def open_lots(db: Session | Tx, member_id: str) -> list[Lot]:
    rows = Tx.of(db).all(
        "SELECT id, member_id, source, issuer_partner_id, entry_id, earned_at, expires_at,"
        " amount, remaining FROM point_lots WHERE member_id = %s AND remaining > 0"
        " ORDER BY expires_at, id",
        (member_id,),
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
