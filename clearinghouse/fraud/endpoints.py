"""The review queue for operators (bearer token, role operator), and each partner's view of
the outcome of its own cases (signed)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field
from sqlalchemy.orm import Session

from clearinghouse.api.deps import ReadSession
from clearinghouse.api.schemas import ResponseModel
from clearinghouse.database import Tx
from clearinghouse.fraud import service
from clearinghouse.users.deps import Operator
from partners.gate import Partner

operator = APIRouter(prefix="/operator", tags=["risk"])
partner = APIRouter(prefix="/v1", tags=["risk"])


class CaseActionOut(ResponseModel):
    action: str
    user: str | None
    note: str | None
    at: datetime


class CaseOut(ResponseModel):
    id: str
    partner_id: str
    member_id: str | None
    operation: str
    decision: str
    state: str
    verdicts: dict[str, Any] = Field(description="Each rule's verdict, its inputs and versions.")
    attempt: dict[str, Any] = Field(description="The request the rules judged.")
    entry_id: int | None
    hold_id: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    actions: list[CaseActionOut]


def case_out(session: Session, case: service.Case) -> CaseOut:
    return CaseOut.model_validate(
        {**asdict(case), "actions": service.case_actions(session, case.id)}
    )


@operator.get("/cases", summary="Risk cases, oldest first (open ones by default)")
def list_cases(
    session: ReadSession,
    user: Operator,
    state: Annotated[str | None, Query(pattern="^(open|approved|rejected|blocked)$")] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CaseOut]:
    return [case_out(session, c) for c in service.list_cases(session, state, limit)]


@operator.get("/cases/{case_id}", summary="One case: the rules, their inputs and versions")
def get_case(case_id: str, session: ReadSession, user: Operator) -> CaseOut:
    return case_out(session, service.get_case(session, case_id))


class PartnerCaseOut(ResponseModel):
    case_id: str
    operation: str
    decision: str
    state: str
    reasons: list[str]


@partner.get(
    "/cases/{case_id}",
    summary="The outcome of a risk case on the partner's request",
    response_model=PartnerCaseOut,
)
async def partner_case(case_id: str, call: Partner) -> Response:
    def outcome(tx: Tx) -> PartnerCaseOut:
        case = service.get_case(tx.session, case_id, call.partner_id)
        return PartnerCaseOut(
            case_id=case.id,
            operation=case.operation,
            decision=case.decision,
            state=case.state,
            reasons=[rule["reason"] for rule in case.verdicts["rules"]],
        )

    return await call.answer(outcome)
