"""The review queue for operators (bearer token, role operator), and each partner's view of
the outcome of its own cases (signed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from clearinghouse.api.deps import ReadSession
from clearinghouse.fraud import service
from clearinghouse.fraud.schemas import CaseDecidedWebhook, CaseOut, PartnerCaseOut
from clearinghouse.users.deps import Operator
from partners.gate import Partner

operator = APIRouter(prefix="/operator", tags=["risk"])
partner = APIRouter(prefix="/v1", tags=["risk"])
webhooks = APIRouter(tags=["risk"])
"""What risk review posts to partners' endpoints (docs/webhooks.md): published in the OpenAPI
document's webhooks section, never served."""


@operator.get("/cases", summary="Risk cases, oldest first (open ones by default)")
def list_cases(
    session: ReadSession,
    user: Operator,
    state: Annotated[str | None, Query(pattern="^(open|approved|rejected|blocked)$")] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CaseOut]:
    return [
        CaseOut.model_validate(service.with_actions(session, case))
        for case in service.list_cases(session, state, limit)
    ]


@operator.get("/cases/{case_id}", summary="One case: the rules, their inputs and versions")
def get_case(case_id: str, session: ReadSession, user: Operator) -> CaseOut:
    case = service.get_case(session, case_id)
    return CaseOut.model_validate(service.with_actions(session, case))


@partner.get(
    "/cases/{case_id}",
    summary="The outcome of a risk case on the partner's request",
    response_model=PartnerCaseOut,
)
async def partner_case(case_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: PartnerCaseOut.model_validate(
            service.get_case(tx.session, case_id, call.partner_id)
        )
    )


@webhooks.post("case.decided", summary="A case on the partner's request was approved or rejected")
def case_decided(body: CaseDecidedWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `case.decided`."""
