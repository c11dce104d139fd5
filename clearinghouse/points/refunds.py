"""Refunds and reversals. A refunded purchase claws back its points in proportion to the money
refunded; whatever the member already spent becomes a points debt that later accruals repay
first (available points never go negative). A refunded redemption gives the points back to the
member, into the lots they came from, with those lots' expiry. Each reversal references the
entry it reverses and can never exceed it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.fraud import service as fraud
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.numbers import money, refund_points_share, refund_value_share
from clearinghouse.points import events, lots, operation, wallet
from clearinghouse.points.holds import lock_hold
from clearinghouse.points.tables import holds, offline_redemptions, point_lots
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.settleable import Settleable
from partners import rates
from partners.auth import PARTNER_WIDE, KeyScope
from partners.limits import issuance_legs


class PurchaseNotFound(NotFound):
    code = "purchase_not_found"
    title = "Unknown purchase"


def purchase(
    db: Session | Tx, partner_id: str, partner_txn_id: str, scope: KeyScope = PARTNER_WIDE
) -> Any:
    """The partner's purchase of this transaction id (PurchaseNotFound if none, or if the key's
    `scope` does not see it)."""
    row = Tx.of(db).first(
        "SELECT * FROM purchases WHERE partner_id = %s AND partner_txn_id = %s",
        (partner_id, partner_txn_id),
    )
    if row is None or not scope.sees(row.store_id):
        raise PurchaseNotFound(f"no purchase {partner_txn_id}")
    return row


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


_CONTEXT = "SELECT * FROM refund_context(%s, %s, %s, %s)"
_RECORD = (
    "SELECT record_refund(" + ledger.ENTRY_PARAMETERS + ", %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def refund_purchase(
    db: Session | Tx,
    partner_id: str,
    partner_txn_id: str,
    partner_refund_id: str,
    amount_fen: int,
    scope: KeyScope = PARTNER_WIDE,
) -> PurchaseRefund:
    """Refund `amount_fen` of a purchase (one the key's `scope` sees). The points clawed back
    are computed on the running total refunded, so partial refunds add up exactly to a full one.
    Three statements: the purchase (its member); the member's lock and what the refund needs
    (refund_context); the refund's writes (record_refund)."""
    tx = Tx.of(db)
    found = purchase(tx, partner_id, partner_txn_id, scope)
    return operation.run(
        tx,
        _Refund(
            partner_id, partner_txn_id, partner_refund_id, amount_fen, found.id, found.member_id
        ),
    )


@dataclass(frozen=True)
class _Refund:
    """A purchase's refund, as `operation.run` takes it."""

    partner_id: str
    partner_txn_id: str
    partner_refund_id: str
    amount_fen: int
    purchase_id: int
    member_id: str

    def lock(self, tx: Tx, screening: fraud.Screening) -> Any:
        # The rules for refunds judge the attempt alone: no history to gather.
        return tx.one(
            _CONTEXT,
            (
                self.purchase_id,
                self.member_id,
                self.partner_refund_id,
                wallet.available_account(self.member_id),
            ),
        )

    def replay(self, tx: Tx, purchase: Any) -> PurchaseRefund | None:
        if purchase.earlier_amount_fen is None:
            return None
        if purchase.earlier_amount_fen != self.amount_fen:
            raise Conflict(f"refund {self.partner_refund_id} was already made for another amount")
        return PurchaseRefund(
            self.partner_txn_id,
            self.partner_refund_id,
            purchase.earlier_amount_fen,
            purchase.earlier_points,
            purchase.earlier_from_available,
            purchase.earlier_to_debt,
            purchase.earlier_value_fen,
            purchase.earlier_entry_id,
        )

    def plan(self, tx: Tx, purchase: Any) -> _Clawback:
        if self.amount_fen <= 0:
            raise InvalidRequest("a refund is above zero fen")
        refunded_after = purchase.refunded_fen + self.amount_fen
        if refunded_after > purchase.amount_fen:
            raise RefundExceedsPurchase(
                f"only {purchase.amount_fen - purchase.refunded_fen} fen of purchase "
                f"{self.partner_txn_id} remain to refund"
            )
        # On the running totals: refunds in pieces add up to exactly all points and all value.
        points_after = refund_points_share(purchase.points, refunded_after, purchase.amount_fen)
        points = points_after - purchase.refunded_points
        value_after = refund_value_share(purchase.issue_value_fen, points_after, purchase.points)
        from_available = points if purchase.under_review else min(points, purchase.available)
        return _Clawback(
            self,
            purchase,
            points,
            value_after - purchase.refunded_value_fen,
            from_available,
            fraud.Attempt(
                operation="refund",
                partner_id=self.partner_id,
                member_id=self.member_id,
                occurred_at=clock.now(),
                points=points,
                amount_fen=self.amount_fen,
                store_id=purchase.store_id,
                points_already_spent=points > from_available,
            ),
        )


@dataclass(frozen=True)
class _Clawback:
    """The points and value a refund takes back. Under review it still goes ahead, and the case
    asks a person to look at the member (a refund after the points were spent)."""

    refund: _Refund
    purchase: Any
    points: int
    value: int
    from_available: int
    attempt: fraud.Attempt
    history: fraud.History = fraud.History()

    def post(self, tx: Tx, decision: fraud.Decision) -> operation.Posted[PurchaseRefund]:
        refund, purchase, points, value = self.refund, self.purchase, self.points, self.value
        partner_id, member_id = refund.partner_id, refund.member_id
        under_review = purchase.under_review
        from_available = self.from_available
        to_debt = points - from_available
        entry: ledger.Arguments = (None,) * 10
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
                legs += issuance_legs(partner_id, -value)
            entry = ledger.arguments(
                ledger.Entry(
                    kind="refund",
                    origin=f"partner:{partner_id}",
                    idempotency_key=f"refund:{refund.partner_txn_id}:{refund.partner_refund_id}",
                    postings=[leg for leg in legs if leg.amount],
                    occurred_at=clock.now(),
                    metadata={
                        **Settleable(partner_id, value).to_metadata(),
                        "partner_txn_id": refund.partner_txn_id,
                        "amount_fen": refund.amount_fen,
                    },
                    reverses=purchase.entry_id,
                )
            )
        entry_id = tx.scalar(
            _RECORD,
            (
                *entry,
                refund.purchase_id,
                member_id,
                refund.partner_refund_id,
                refund.amount_fen,
                points,
                from_available,
                to_debt,
                value,
                0 if under_review else from_available,
                purchase.own_lot,
            ),
        )
        if to_debt:
            events.clawback(
                tx,
                partner_id=partner_id,
                member_id=member_id,
                partner_txn_id=refund.partner_txn_id,
                refund_id=refund.partner_refund_id,
                points=points,
                from_available=from_available,
                owed_points=to_debt,
                entry_id=entry_id,
            )
        answer = PurchaseRefund(
            refund.partner_txn_id,
            refund.partner_refund_id,
            refund.amount_fen,
            points,
            from_available,
            to_debt,
            value,
            entry_id,
        )
        return operation.Posted(lambda _case_id: answer, entry_id=entry_id)


@dataclass(frozen=True)
class RedemptionRefund:
    hold_id: str
    points: int
    refunded_total: int
    entry_id: int


def redemption_refund_key(hold_id: str, key: str) -> str:
    """The idempotency key of a redemption's refund asked for with `key`."""
    return f"redemption-refund:{hold_id}:{key}"


def refund_redemption(
    session: Session,
    partner_id: str,
    hold_id: str,
    points: int,
    *,
    key: str,
    scope: KeyScope = PARTNER_WIDE,
) -> RedemptionRefund:
    """Give back `points` of a captured redemption (one the key's `scope` sees) into the lots
    they were spent from. An offline redemption that overdrew the member gives back first the
    points it left owing: to the member's debt while the member still owes them, else as a lot
    of their own (their debt was repaid by an accrual, which gave them no lot)."""
    hold = lock_hold(session, partner_id, hold_id, scope)
    entry_key = redemption_refund_key(hold_id, key)
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
    debt = wallet.debt_account(hold.member_id)
    # What the redemption left the member owing (an offline one beyond its points), from its
    # row rather than its entry, whose month may have left the database.
    owed = (
        session.execute(
            select(offline_redemptions.c.debt).where(offline_redemptions.c.hold_id == hold_id)
        ).scalar_one_or_none()
        or 0
    )
    # Owed points are given back first: refunds before this one gave back min(refunded, owed).
    from_owed = min(points, max(owed - hold.refunded, 0))
    to_debt = min(from_owed, max(-ledger.balance(session, debt), 0))
    legs = [
        ledger.Posting(str(ledger.Address.partner(partner_id, "redeemed")), -points),
        ledger.Posting(debt, to_debt),
        ledger.Posting(wallet.available_account(hold.member_id), points - to_debt),
    ]
    posted = ledger.post(
        session,
        ledger.Entry(
            kind="redemption_refund",
            origin=f"partner:{partner_id}",
            idempotency_key=entry_key,
            postings=[leg for leg in legs if leg.amount],
            occurred_at=clock.now(),
            metadata={
                # On the running total, so refunds in pieces give back exactly what was paid.
                **Settleable(
                    partner_id,
                    money(redemption * (hold.refunded + points))
                    - money(redemption * hold.refunded),
                ).to_metadata(),
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
    if points - from_owed:
        lots.restore(
            session,
            sorted(consumed, key=lambda m: _expiry(session, m[0])),
            points - from_owed,
            posted.id,
        )
    if from_owed - to_debt:
        now = clock.now()
        lots.create_lot(
            session,
            member_id=hold.member_id,
            source="redemption_refund",
            issuer_partner_id=partner_id,
            entry_id=posted.id,
            earned_at=now,
            expires_at=lots.expiry_for(
                now, rule_set_at(session, now).policy.expiry_months, get_settings().zone
            ),
            amount=from_owed - to_debt,
        )
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
