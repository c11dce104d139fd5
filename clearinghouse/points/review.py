"""An operator's decision on a risk case, and what follows it for the points the case held back:
pending points released to the member or reversed to the issuer, a held redemption voided; and
the `case.decided` webhook that tells the case's partner, in the decision's transaction. The
case is fraud's; its outcome is the points', so the flow lives here, below nothing that fraud
imports."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from sqlalchemy.orm import Session

from clearinghouse.api.deps import WriteSession
from clearinghouse.database import Tx
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.schemas import CaseDecidedData, CaseOut, Outcome
from clearinghouse.points import holds, release
from clearinghouse.points.schemas import DecisionIn
from clearinghouse.users.deps import Operator
from clearinghouse.users.service import User
from clearinghouse.webhooks import service as webhooks

operator = APIRouter(prefix="/operator", tags=["risk"])


def approve_case(session: Session, case_id: str, user: User, note: str | None = None) -> fraud.Case:
    """Release what the case held back: pending points become available (with their lot), a
    held redemption may be captured."""
    row = fraud.decide(session, case_id, user, "approved", note)
    outcome: Outcome = "unchanged"
    if row.operation == "accrual" and row.entry_id is not None:
        release.release_pending(session, row.entry_id, case_id)
        outcome = "released"
    elif (
        row.hold_id is not None
        and holds.get_hold(session, row.partner_id, row.hold_id).state == "held"
    ):
        outcome = "capturable"
    return _announce(session, case_id, "approved", outcome)


def reject_case(session: Session, case_id: str, user: User, note: str | None = None) -> fraud.Case:
    """Undo what the case held back: pending points are reversed to the issuer, a held
    redemption is voided."""
    row = fraud.decide(session, case_id, user, "rejected", note)
    outcome: Outcome = "unchanged"
    if row.operation == "accrual" and row.entry_id is not None:
        release.reverse_pending(session, row.entry_id, case_id)
        outcome = "reversed"
    if row.hold_id is not None:
        hold = holds.lock_hold(session, None, row.hold_id)
        if hold.state == "held":
            holds.void(session, row.partner_id, row.hold_id)
            outcome = "voided"
    return _announce(session, case_id, "rejected", outcome)


def _announce(
    session: Session,
    case_id: str,
    decision: Literal["approved", "rejected"],
    outcome: Outcome,
) -> fraud.Case:
    """The decided case, told to its partner by a `case.decided` webhook in the decision's
    transaction (once its effects are written)."""
    case = fraud.get_case(session, case_id)
    if not webhooks.heard(session, "case.decided", case.partner_id):
        return case
    assert case.decided_at is not None
    partner_txn_id = None
    if case.entry_id is not None:
        partner_txn_id = Tx.of(session).scalar(
            "SELECT metadata->>'partner_txn_id' FROM journal_entries WHERE id = %s",
            (case.entry_id,),
        )
    data = CaseDecidedData(
        case_id=case.id,
        decision=decision,
        operation=case.operation,
        member_id=case.member_id,
        customer_ref=None,  # the partner's own, joined as the event is written
        points=case.attempt["points"],
        outcome=outcome,
        partner_txn_id=partner_txn_id,
        hold_id=case.hold_id,
        decided_at=case.decided_at,
    )
    webhooks.emit(
        session,
        case.partner_id,
        "case.decided",
        data.model_dump(mode="json"),
        member_id=case.member_id,
    )
    return case


@operator.post("/cases/{case_id}/approve", summary="Release what the case held back")
def approve(case_id: str, body: DecisionIn, session: WriteSession, user: Operator) -> CaseOut:
    return CaseOut.model_validate(
        fraud.with_actions(session, approve_case(session, case_id, user, body.note))
    )


@operator.post("/cases/{case_id}/reject", summary="Reverse what the case held back")
def reject(case_id: str, body: DecisionIn, session: WriteSession, user: Operator) -> CaseOut:
    return CaseOut.model_validate(
        fraud.with_actions(session, reject_case(session, case_id, user, body.note))
    )
