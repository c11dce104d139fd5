"""Refunds and reversals. A refunded purchase claws back its points in proportion to the money
refunded; whatever the member already spent becomes a points debt that later accruals repay
first (available points never go negative). A refunded redemption gives the points back to the
member, into the lots they came from, with those lots' expiry. Each reversal references the
entry it reverses and can never exceed it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.tables import fraud_cases
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.numbers import money
from clearinghouse.points import lots, wallet
from clearinghouse.points.holds import lock_hold
from clearinghouse.points.tables import holds, point_lots, purchases, refunds
from partners import rates
from partners.directory import exposure_account, headroom_account


class PurchaseNotFound(NotFound):
    code = "purchase_not_found"
    title = "Unknown purchase"


class RefundExceedsPurchase(Conflict):
    code = "refund_exceeds_original"
    title = "Refund beyond what remains of the original"


@dataclass(frozen=True)
class PurchaseRefund:
    partner_txn_id: str
    partner_refund_id: str
    amount_fen: int
    points: int
    from_available: int
    to_debt: int
    value_fen: int
    entry_id: int | None


def refund_purchase(
    session: Session, partner_id: str, partner_txn_id: str, partner_refund_id: str, amount_fen: int
) -> PurchaseRefund:
    """Refund `amount_fen` of a purchase. The points clawed back are computed on the running
    total refunded, so partial refunds add up exactly to a full one."""
    member_id = session.execute(
        select(purchases.c.member_id).where(
            purchases.c.partner_id == partner_id, purchases.c.partner_txn_id == partner_txn_id
        )
    ).scalar_one_or_none()
    if member_id is None:
        raise PurchaseNotFound(f"no purchase {partner_txn_id}")
    wallet.lock_member(session, member_id)
    purchase = session.execute(
        select(purchases)
        .where(purchases.c.partner_id == partner_id, purchases.c.partner_txn_id == partner_txn_id)
        .with_for_update(key_share=True)
    ).one()
    previous = session.execute(
        select(refunds).where(
            refunds.c.purchase_id == purchase.id,
            refunds.c.partner_refund_id == partner_refund_id,
        )
    ).first()
    if previous is not None:
        if previous.amount_fen != amount_fen:
            raise Conflict(f"refund {partner_refund_id} was already made for another amount")
        return PurchaseRefund(
            partner_txn_id,
            partner_refund_id,
            previous.amount_fen,
            previous.points,
            previous.from_available,
            previous.to_debt,
            previous.value_fen,
            previous.entry_id,
        )
    if amount_fen <= 0:
        raise InvalidRequest("a refund is above zero fen")
    refunded_after = purchase.refunded_fen + amount_fen
    if refunded_after > purchase.amount_fen:
        raise RefundExceedsPurchase(
            f"only {purchase.amount_fen - purchase.refunded_fen} fen of purchase "
            f"{partner_txn_id} remain to refund"
        )
    # Floor division claws back whole points and hands the fractions to the member; a full
    # refund reaches exactly all points and all value.
    points_after = purchase.points * refunded_after // purchase.amount_fen
    points = points_after - purchase.refunded_points
    # The value follows the points clawed back, so no fen moves without its points.
    value_after = (
        purchase.issue_value_fen * points_after // purchase.points if purchase.points else 0
    )
    value = value_after - purchase.refunded_value_fen
    under_review = purchase.entry_id is not None and (
        session.execute(
            select(fraud_cases.c.id).where(
                fraud_cases.c.entry_id == purchase.entry_id,
                fraud_cases.c.operation == "accrual",
                fraud_cases.c.state == "open",
            )
        ).first()
        is not None
    )
    available = ledger.balance(session, wallet.available_account(member_id))
    from_available = points if under_review else min(points, available)
    to_debt = points - from_available
    attempt = fraud.Attempt(
        operation="refund",
        partner_id=partner_id,
        member_id=member_id,
        occurred_at=datetime.now(UTC),
        points=points,
        amount_fen=amount_fen,
        store_id=purchase.store_id,
        points_already_spent=to_debt > 0,
    )
    # A refund only takes points back: under review it still goes ahead, and the case asks a
    # person to look at the member (a refund after the points were spent).
    decision = fraud.screen_now(Tx.of(session), attempt)
    entry_id: int | None = None
    if points:
        legs = [
            ledger.Posting(str(ledger.Address.partner(partner_id, "issued")), points),
            ledger.Posting(
                wallet.pending_account(member_id)
                if under_review
                else wallet.available_account(member_id),
                -from_available,
            ),
            ledger.Posting(wallet.debt_account(member_id), -to_debt),
        ]
        if value:
            legs += [
                ledger.Posting(exposure_account(partner_id), -value, "CNY"),
                ledger.Posting(headroom_account(partner_id), value, "CNY"),
            ]
        posted = ledger.post(
            session,
            ledger.Entry(
                kind="refund",
                origin=f"partner:{partner_id}",
                idempotency_key=f"refund:{partner_txn_id}:{partner_refund_id}",
                postings=[leg for leg in legs if leg.amount],
                occurred_at=datetime.now(UTC),
                metadata={
                    "partner_id": partner_id,
                    "value_fen": value,
                    "partner_txn_id": partner_txn_id,
                    "amount_fen": amount_fen,
                },
                reverses=purchase.entry_id,
            ),
        )
        entry_id = posted.id
        if from_available and not under_review:
            own_lot = session.execute(
                select(point_lots.c.id).where(point_lots.c.entry_id == purchase.entry_id)
            ).scalar_one_or_none()
            lots.consume(session, member_id, from_available, posted.id, first=own_lot)
        if decision.action == "review":
            fraud.open_case(session, attempt, decision, entry_id=posted.id)
    session.execute(
        update(purchases)
        .where(purchases.c.id == purchase.id)
        .values(
            refunded_fen=refunded_after,
            refunded_points=purchase.refunded_points + points,
            refunded_value_fen=purchase.refunded_value_fen + value,
        )
    )
    session.execute(
        refunds.insert().values(
            purchase_id=purchase.id,
            partner_refund_id=partner_refund_id,
            amount_fen=amount_fen,
            points=points,
            from_available=from_available,
            to_debt=to_debt,
            value_fen=value,
            entry_id=entry_id,
        )
    )
    return PurchaseRefund(
        partner_txn_id,
        partner_refund_id,
        amount_fen,
        points,
        from_available,
        to_debt,
        value,
        entry_id,
    )


@dataclass(frozen=True)
class RedemptionRefund:
    hold_id: str
    points: int
    refunded_total: int
    entry_id: int


def refund_redemption(
    session: Session, partner_id: str, hold_id: str, points: int, *, key: str
) -> RedemptionRefund:
    """Give back `points` of a captured redemption into the lots they were spent from."""
    hold = lock_hold(session, partner_id, hold_id)
    entry_key = f"redemption-refund:{hold_id}:{key}"
    earlier = ledger.find_entry(session, f"partner:{partner_id}", entry_key)
    if earlier is not None:
        # A retry whose first answer was lost: the first refund, whatever the clock says now.
        return RedemptionRefund(hold_id, points, hold.refunded, earlier)
    if hold.state != "captured":
        raise Conflict(f"hold {hold_id} is {hold.state}: only captured redemptions are refunded")
    if not 1 <= points <= hold.captured - hold.refunded:
        raise RefundExceedsPurchase(
            f"refund 1 to {hold.captured - hold.refunded} points of redemption {hold_id}"
        )
    redemption = rates.rates_version(session, partner_id, hold.rates_version).redemption_value
    posted = ledger.post(
        session,
        ledger.transfer(
            kind="redemption_refund",
            origin=f"partner:{partner_id}",
            idempotency_key=entry_key,
            source=str(ledger.Address.partner(partner_id, "redeemed")),
            destination=wallet.available_account(hold.member_id),
            amount=points,
            occurred_at=datetime.now(UTC),
            metadata={
                "partner_id": partner_id,
                # On the running total, so refunds in pieces give back exactly what was paid.
                "value_fen": money(redemption * (hold.refunded + points))
                - money(redemption * hold.refunded),
                "hold_id": hold_id,
            },
            reverses=hold.close_entry_id,
        ),
    )
    # What the redemption still holds of each lot: taken at hold, less what capture released
    # and what earlier refunds returned.
    spent: dict[int, int] = {}
    for entry in _redemption_entries(session, hold):
        for lot_id, amount in lots.movements_of(session, entry):
            spent[lot_id] = spent.get(lot_id, 0) - amount
    consumed = [(lot_id, -amount) for lot_id, amount in spent.items() if amount > 0]
    lots.restore(session, sorted(consumed, key=lambda m: _expiry(session, m[0])), points, posted.id)
    session.execute(
        update(holds).where(holds.c.id == hold_id).values(refunded=hold.refunded + points)
    )
    return RedemptionRefund(hold_id, points, hold.refunded + points, posted.id)


def _redemption_entries(session: Session, hold: Row[tuple[object, ...]]) -> list[int]:
    """The entries that moved the redemption's lots: hold, capture, earlier refunds."""
    refund_entries = session.execute(
        select(journal_entries.c.id).where(
            journal_entries.c.reverses_id == hold.close_entry_id,
            journal_entries.c.kind == "redemption_refund",
        )
    ).scalars()
    return [hold.hold_entry_id, hold.close_entry_id, *refund_entries]


def _expiry(session: Session, lot_id: int) -> datetime:
    expires_at: datetime = session.execute(
        select(point_lots.c.expires_at).where(point_lots.c.id == lot_id)
    ).scalar_one()
    return expires_at
