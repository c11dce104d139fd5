"""What the points lifecycle tells partners by webhook, in the transaction of the change: points
earned and redeemed (to the partners that mirror balances), a tier changed, points expired, a
refund that left a member owing points. Each goes to every partner the member is linked to,
except the clawback, which is the refunding partner's own; the partner whose request made the
change also reads its own references (transaction, hold, store). The bodies are the
`*Webhook` models of clearinghouse.points.schemas, published in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.points.schemas import (
    PointsEarnedData,
    PointsExpiredData,
    PointsRedeemedData,
    PurchaseClawbackData,
    TierChangedData,
)
from clearinghouse.webhooks import service as webhooks


def earned(
    db: Session | Tx,
    *,
    member_id: str,
    partner_id: str | None,
    reason: str,
    points: int,
    debt_repaid: int,
    pending: bool,
    entry_id: int,
    lot_expires_at: datetime | None,
    occurred_at: datetime,
    partner_txn_id: str | None = None,
    store_id: str | None = None,
) -> None:
    """`points.earned`: a purchase's accrual (the purchase's partner reads its transaction id
    and store) or a referral bonus."""
    if not webhooks.heard(db, "points.earned"):
        return
    data = PointsEarnedData.model_validate(
        {
            "member_id": member_id,
            "customer_ref": None,
            "reason": reason,
            "partner_id": partner_id,
            "points": points,
            "debt_repaid": debt_repaid,
            "status": "pending_review" if pending else "available",
            "entry_id": entry_id,
            "lot_expires_at": lot_expires_at,
            "occurred_at": occurred_at,
            "partner_txn_id": None,
            "store_id": None,
        }
    )
    actor = None
    if partner_id is not None and partner_txn_id is not None:
        actor = (partner_id, {"partner_txn_id": partner_txn_id, "store_id": store_id})
    webhooks.emit_to_linked(
        db, member_id, "points.earned", data.model_dump(mode="json"), actor=actor
    )


def redeemed(
    db: Session | Tx,
    *,
    member_id: str,
    partner_id: str,
    points: int,
    entry_id: int,
    hold_id: str,
    partner_ref: str | None,
    store_id: str | None,
    value_fen: int,
) -> None:
    """`points.redeemed`: a hold captured (in full or in part), or a one-step redemption."""
    if not webhooks.heard(db, "points.redeemed"):
        return
    data = PointsRedeemedData(
        member_id=member_id,
        customer_ref=None,
        partner_id=partner_id,
        points=points,
        entry_id=entry_id,
        redeemed_at=clock.now(),
        hold_id=None,
        partner_ref=None,
        store_id=None,
        value_fen=None,
    )
    own = {"hold_id": hold_id, "partner_ref": partner_ref, "store_id": store_id}
    webhooks.emit_to_linked(
        db,
        member_id,
        "points.redeemed",
        data.model_dump(mode="json"),
        actor=(partner_id, {**own, "value_fen": value_fen}),
    )


def tier_changed(
    db: Session | Tx, *, member_id: str, from_tier: str, to_tier: str, qualifying_points: int
) -> None:
    if not webhooks.heard(db, "tier.changed"):
        return
    data = TierChangedData(
        member_id=member_id,
        customer_ref=None,
        from_tier=from_tier,
        to_tier=to_tier,
        qualifying_points=qualifying_points,
        changed_at=clock.now(),
    )
    webhooks.emit_to_linked(db, member_id, "tier.changed", data.model_dump(mode="json"))


def expired(db: Session | Tx, *, member_id: str, points: int, lots: int, entry_id: int) -> None:
    if not webhooks.heard(db, "points.expired"):
        return
    data = PointsExpiredData(
        member_id=member_id,
        customer_ref=None,
        points=points,
        lots=lots,
        entry_id=entry_id,
        expired_at=clock.now(),
    )
    webhooks.emit_to_linked(db, member_id, "points.expired", data.model_dump(mode="json"))


def clawback(
    db: Session | Tx,
    *,
    partner_id: str,
    member_id: str,
    partner_txn_id: str,
    refund_id: str,
    points: int,
    from_available: int,
    owed_points: int,
    entry_id: int,
) -> None:
    """`purchase.clawback`, to the refunding partner: its refund left the member owing points."""
    if not webhooks.heard(db, "purchase.clawback", partner_id):
        return
    data = PurchaseClawbackData(
        member_id=member_id,
        customer_ref=None,
        partner_txn_id=partner_txn_id,
        refund_id=refund_id,
        points=points,
        from_available=from_available,
        owed_points=owed_points,
        entry_id=entry_id,
    )
    webhooks.emit(
        db, partner_id, "purchase.clawback", data.model_dump(mode="json"), member_id=member_id
    )
