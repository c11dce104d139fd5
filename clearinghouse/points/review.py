"""An operator's decision on a risk case, and what follows it for the points the case held back:
pending points released to the member or reversed to the issuer, a held redemption voided. The
case is fraud's; its outcome is the points', so the flow lives here, below nothing that fraud
imports."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from clearinghouse.api.deps import WriteSession
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.schemas import CaseOut
from clearinghouse.points import holds, release
from clearinghouse.points.schemas import DecisionIn
from clearinghouse.users.deps import Operator
from clearinghouse.users.service import User

operator = APIRouter(prefix="/operator", tags=["risk"])


def approve_case(session: Session, case_id: str, user: User, note: str | None = None) -> fraud.Case:
    """Release what the case held back: pending points become available (with their lot), a
    held redemption may be captured."""
    row = fraud.decide(session, case_id, user, "approved", note)
    if row.operation == "accrual" and row.entry_id is not None:
        release.release_pending(session, row.entry_id, case_id)
    return fraud.get_case(session, case_id)


def reject_case(session: Session, case_id: str, user: User, note: str | None = None) -> fraud.Case:
    """Undo what the case held back: pending points are reversed to the issuer, a held
    redemption is voided."""
    row = fraud.decide(session, case_id, user, "rejected", note)
    if row.operation == "accrual" and row.entry_id is not None:
        release.reverse_pending(session, row.entry_id, case_id)
    if row.hold_id is not None:
        hold = holds.lock_hold(session, None, row.hold_id)
        if hold.state == "held":
            holds.void(session, row.partner_id, row.hold_id)
    return fraud.get_case(session, case_id)


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
