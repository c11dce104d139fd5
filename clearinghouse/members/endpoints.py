"""Partner API routes for members: link a customer, read a linked member's balance."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import Field

from clearinghouse import clock
from clearinghouse.api.schemas import RequestBody, ResponseModel
from clearinghouse.database import Tx
from clearinghouse.members import service
from clearinghouse.numbers import PlainDecimal
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.rules.tiers import tier_for
from partners.gate import Partner, Reply

router = APIRouter(prefix="/v1/members", tags=["members"])

MEMBER_ID = r"^M[0-9A-Z]{12}$"
MemberIdPath = Annotated[str, Path(pattern=MEMBER_ID, description="Coalition member id.")]


class LinkMemberIn(RequestBody):
    customer_ref: str = Field(
        min_length=1, max_length=100, description="The partner's own id for this customer."
    )
    member_id: str | None = Field(
        default=None,
        pattern=MEMBER_ID,
        description="A coalition member id the customer showed; omit it to enrol a new member.",
    )
    birth_month: int | None = Field(
        default=None, ge=1, le=12, description="For birthday-month offers; kept once given."
    )


class MemberLinkOut(ResponseModel):
    member_id: str
    customer_ref: str
    linked_at: datetime


class TierOut(ResponseModel):
    tier: str
    qualifying_points: int = Field(description="Points earned coalition-wide in the window.")
    next_tier: str | None
    points_to_next_tier: int | None
    progress: PlainDecimal = Field(description="Share of the way to the next tier, 0 to 1.")


class MemberOut(ResponseModel):
    member_id: str
    customer_ref: str
    available_points: int
    held_points: int = Field(description="Reserved by open redemption holds.")
    debt_points: int = Field(description="Owed after refunds of spent points; repaid first.")
    tier: TierOut


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Link a customer to a coalition member (enrolling a new member if needed)",
    response_model=MemberLinkOut,
    responses={200: {"model": MemberLinkOut, "description": "The customer was already linked."}},
)
async def link_member(body: LinkMemberIn, call: Partner) -> Response:
    def linked(tx: Tx) -> MemberLinkOut | Reply:
        link, created = service.link_member(
            tx, call.partner_id, body.customer_ref, body.member_id, body.birth_month
        )
        out = MemberLinkOut(
            member_id=link.member_id, customer_ref=link.customer_ref, linked_at=link.linked_at
        )
        return out if created else Reply(out, status.HTTP_200_OK)

    return await call.answer(linked)


@router.get("/{member_id}", summary="A linked member's points", response_model=MemberOut)
async def get_member(member_id: MemberIdPath, call: Partner) -> Response:
    def member(tx: Tx) -> MemberOut:
        now = clock.now()
        rules = rule_set_at(tx, now)
        start = now - timedelta(days=rules.policy.tier_window_days)
        view = service.member_view(tx, call.partner_id, member_id, start, now)
        status = tier_for(view.qualifying_points, rules.earning)
        return MemberOut(
            member_id=member_id,
            customer_ref=view.customer_ref,
            available_points=view.available,
            held_points=view.held,
            debt_points=view.debt,
            tier=TierOut(
                tier=status.tier,
                qualifying_points=status.qualifying_points,
                next_tier=status.next_tier,
                points_to_next_tier=status.points_to_next_tier,
                progress=status.progress,
            ),
        )

    return await call.answer(member)
