"""What an operator's decision on an accrual under review does: approval makes the pending
points available (with their lot), rejection reverses the accrual entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.config import get_settings
from clearinghouse.points import lots, wallet
from clearinghouse.points.policy import rule_set_at
from clearinghouse.points.tables import purchases


def _purchase(session: Session, entry_id: int) -> Any:
    return session.execute(select(purchases).where(purchases.c.entry_id == entry_id)).one()


def release_pending(session: Session, entry_id: int, case_id: str) -> None:
    purchase = _purchase(session, entry_id)
    wallet.lock_member(session, purchase.member_id)
    now = datetime.now(UTC)
    posted = ledger.post(
        session,
        ledger.transfer(
            kind="fraud_release",
            origin="operator",
            idempotency_key=f"release:{case_id}",
            source=wallet.pending_account(purchase.member_id),
            destination=wallet.available_account(purchase.member_id),
            amount=purchase.points,
            occurred_at=now,
            metadata={"case_id": case_id, "member_id": purchase.member_id},
        ),
    )
    policy = rule_set_at(session, purchase.occurred_at).policy
    lots.create_lot(
        session,
        member_id=purchase.member_id,
        source="purchase",
        issuer_partner_id=purchase.partner_id,
        entry_id=posted.id,
        earned_at=purchase.occurred_at,
        expires_at=lots.expiry_for(purchase.occurred_at, policy.expiry_months, get_settings().zone),
        amount=purchase.points,
    )


def reverse_pending(session: Session, entry_id: int, case_id: str) -> None:
    purchase = _purchase(session, entry_id)
    wallet.lock_member(session, purchase.member_id)
    legs = [
        ledger.Posting(p.address, -p.amount, p.asset)
        for p in ledger.entry_postings(session, entry_id)
    ]
    ledger.post(
        session,
        ledger.Entry(
            kind="fraud_reversal",
            origin="operator",
            idempotency_key=f"reverse:{case_id}",
            postings=legs,
            occurred_at=datetime.now(UTC),
            metadata={
                "case_id": case_id,
                "partner_id": purchase.partner_id,
                "value_fen": purchase.issue_value_fen,
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
