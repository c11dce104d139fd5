"""What an operator's decision on an accrual under review does: approval makes the pending
points available (with their lot), rejection reverses the accrual entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.points import lots, wallet
from clearinghouse.points.referrals import pay_referral_bonus
from clearinghouse.points.tables import purchases
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.settleable import Settleable
from partners.limits import issuance_legs


def _purchase(session: Session, entry_id: int) -> Any:
    return session.execute(select(purchases).where(purchases.c.entry_id == entry_id)).one()


def release_pending(session: Session, entry_id: int, case_id: str) -> None:
    purchase = _purchase(session, entry_id)
    wallet.lock_member(session, purchase.member_id)
    now = clock.now()
    left = purchase.points - purchase.refunded_points
    owed = max(-ledger.balance(session, wallet.debt_account(purchase.member_id)), 0)
    repaid = min(left, owed)
    legs = [
        ledger.Posting(wallet.pending_account(purchase.member_id), -left),
        ledger.Posting(wallet.available_account(purchase.member_id), left - repaid),
        ledger.Posting(wallet.debt_account(purchase.member_id), repaid),
    ]
    rules = rule_set_at(session, purchase.occurred_at)
    if left:
        ledger.post(
            session,
            ledger.Entry(
                kind="fraud_release",
                origin="operator",
                idempotency_key=f"release:{case_id}",
                postings=[leg for leg in legs if leg.amount],
                occurred_at=now,
                metadata={"case_id": case_id, "member_id": purchase.member_id},
            ),
        )
    if left - repaid:
        lots.create_lot(
            session,
            member_id=purchase.member_id,
            source="purchase",
            issuer_partner_id=purchase.partner_id,
            entry_id=entry_id,
            earned_at=purchase.occurred_at,
            expires_at=lots.expiry_for(
                purchase.occurred_at, rules.policy.expiry_months, get_settings().zone
            ),
            amount=left - repaid,
        )
    pay_referral_bonus(session, purchase.member_id, rules)


def reverse_pending(session: Session, entry_id: int, case_id: str) -> None:
    purchase = _purchase(session, entry_id)
    wallet.lock_member(session, purchase.member_id)
    left = purchase.points - purchase.refunded_points
    value = purchase.issue_value_fen - purchase.refunded_value_fen
    legs = [
        ledger.Posting(str(ledger.Address.partner(purchase.partner_id, "issued")), left),
        ledger.Posting(wallet.pending_account(purchase.member_id), -left),
        *issuance_legs(purchase.partner_id, -value),
    ]
    legs = [leg for leg in legs if leg.amount]
    if legs:
        ledger.post(
            session,
            ledger.Entry(
                kind="fraud_reversal",
                origin="operator",
                idempotency_key=f"reverse:{case_id}",
                postings=legs,
                occurred_at=clock.now(),
                metadata={
                    "case_id": case_id,
                    **Settleable(purchase.partner_id, value).to_metadata(),
                    "member_id": purchase.member_id,
                },
                reverses=entry_id,
            ),
        )
    session.execute(
        update(purchases)
        .where(purchases.c.id == purchase.id)
        .values(refunded_points=purchase.points, refunded_value_fen=purchase.issue_value_fen)
    )
