"""The catalogue and its latest orders across every partner, as operators watch them. Reads
only; operators change stock and withdraw rewards through `service`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from clearinghouse.rewards import service
from clearinghouse.rewards.service import Reward
from partners import directory

ORDERS_SHOWN = 50


@dataclass(frozen=True)
class Supplied:
    """A reward, priced as of now, and the name of its supplier."""

    reward: Reward
    supplier_name: str


@dataclass(frozen=True)
class PlacedOrder:
    """An order as operators list it: the front end that took it, for which member, what."""

    id: str
    created_at: datetime
    partner_id: str
    partner_name: str
    member_id: str
    reward_id: str
    title_zh: str
    title_en: str
    quantity: int
    points: int
    value_fen: int
    state: str
    fulfilment: str | None


def _names(tx: Tx) -> dict[str, str]:
    return {partner.id: partner.name for partner in directory.list_partners(tx.session)}


def catalogue(db: Session | Tx) -> list[Supplied]:
    """Every reward of every supplier, newest first."""
    tx = Tx.of(db)
    names = _names(tx)
    return [Supplied(reward, names[reward.supplier_id]) for reward in service.supplied_by(tx, None)]


def latest_orders(db: Session | Tx, limit: int = ORDERS_SHOWN) -> list[PlacedOrder]:
    """The orders placed most recently through any front end, newest first."""
    tx = Tx.of(db)
    rows = tx.all(
        "SELECT o.id, o.created_at, o.partner_id, o.member_id, o.reward_id, r.title_zh,"
        " r.title_en, o.quantity, o.points, o.value_fen, o.state, o.fulfilment"
        " FROM reward_orders o JOIN rewards r ON r.id = o.reward_id"
        " ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
        (limit,),
    )
    names = _names(tx)
    return [PlacedOrder(**row._asdict(), partner_name=names[row.partner_id]) for row in rows]
