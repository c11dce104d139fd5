"""Issuance limits (积分预算): how much unsettled issuance, in fen, a partner may run up.

The limit lives in the ledger itself, in CNY: `partner:<id>:headroom` holds what the partner may
still issue and cannot go below zero; every accrual moves the points' issue value from headroom
to `partner:<id>:exposure`, in the same entry as the points. An accrual beyond the limit is
therefore refused by the ledger's floor, atomically, like any overdraft. Settlement moves
settled exposure back to headroom."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.errors import InvalidRequest
from partners.directory import exposure_account, headroom_account, lock_partner

CREDIT_LINES = "coalition:credit_lines"


def issuance_legs(partner_id: str, value_fen: int) -> list[ledger.Posting]:
    """The legs that move `value_fen` of issue value from the partner's headroom to its
    exposure, as an issue of points does; a negative value moves it back (a refund, a reversal,
    settlement)."""
    return [
        ledger.Posting(headroom_account(partner_id), -value_fen, "CNY"),
        ledger.Posting(exposure_account(partner_id), value_fen, "CNY"),
    ]


def issuance_limit(session: Session, partner_id: str) -> tuple[int, int]:
    """(limit, exposure) in fen."""
    headroom = ledger.balance(session, headroom_account(partner_id))
    exposure = ledger.balance(session, exposure_account(partner_id))
    return headroom + exposure, exposure


def set_issuance_limit(session: Session, partner_id: str, limit_fen: int) -> int:
    """Set the partner's limit; refused below its current unsettled exposure."""
    lock_partner(session, partner_id)
    if limit_fen < 0:
        raise InvalidRequest("an issuance limit is zero or more fen")
    current, exposure = issuance_limit(session, partner_id)
    if limit_fen < exposure:
        raise InvalidRequest(
            f"partner {partner_id} already has {exposure} fen of unsettled issuance; "
            "the limit cannot be lower"
        )
    delta = limit_fen - current
    if delta:
        ledger.post(
            session,
            ledger.transfer(
                kind="issuance_limit",
                origin="operator",
                idempotency_key=f"limit:{partner_id}:{uuid.uuid4()}",
                source=CREDIT_LINES,
                destination=headroom_account(partner_id),
                amount=delta,
                asset="CNY",
                occurred_at=clock.now(),
                metadata={"partner_id": partner_id, "limit_fen": limit_fen},
            ),
        )
    return limit_fen
