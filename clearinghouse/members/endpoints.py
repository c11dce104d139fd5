"""Partner API routes for members: link a customer, read a linked member's balance."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from fastapi import APIRouter, Response, status

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.members import service
from clearinghouse.members.schemas import LinkMemberIn, MemberIdPath, MemberLinkOut, MemberOut
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.rules.tiers import tier_for
from partners.gate import Partner, Reply

router = APIRouter(prefix="/v1/members", tags=["members"])


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
        out = MemberLinkOut.model_validate(link)
        return out if created else Reply(out, status.HTTP_200_OK)

    return await call.answer(linked)


@router.get("/{member_id}", summary="A linked member's points", response_model=MemberOut)
async def get_member(member_id: MemberIdPath, call: Partner) -> Response:
    def member(tx: Tx) -> MemberOut:
        now = clock.now()
        rules = rule_set_at(tx, now)
        start = now - timedelta(days=rules.policy.tier_window_days)
        view = service.member_view(tx, call.partner_id, member_id, start, now)
        tier = tier_for(view.qualifying_points, rules.earning)
        return MemberOut.model_validate({**asdict(view), "member_id": member_id, "tier": tier})

    return await call.answer(member)
