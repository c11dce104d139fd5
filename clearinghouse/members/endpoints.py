"""Partner API routes for members: link a customer, read a linked member's balance."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from clearinghouse.api.deps import PartnerAuth, ReadSession, WriteSession
from clearinghouse.members import service

router = APIRouter(prefix="/v1/members", tags=["members"])

MEMBER_ID = r"^M[0-9A-Z]{12}$"


class LinkMemberIn(BaseModel):
    customer_ref: str = Field(
        min_length=1, max_length=100, description="The partner's own id for this customer."
    )
    member_id: str | None = Field(
        default=None,
        pattern=MEMBER_ID,
        description="A coalition member id the customer showed; omit it to enrol a new member.",
    )


class MemberLinkOut(BaseModel):
    member_id: str
    customer_ref: str
    linked_at: datetime


class MemberOut(BaseModel):
    member_id: str
    customer_ref: str
    available_points: int


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Link a customer to a coalition member (enrolling a new member if needed)",
    responses={200: {"model": MemberLinkOut, "description": "The customer was already linked."}},
)
def link_member(
    body: LinkMemberIn, session: WriteSession, auth: PartnerAuth, response: Response
) -> MemberLinkOut:
    link, created = service.link_member(session, auth.partner_id, body.customer_ref, body.member_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return MemberLinkOut(
        member_id=link.member_id, customer_ref=link.customer_ref, linked_at=link.linked_at
    )


@router.get("/{member_id}", summary="A linked member's points")
def get_member(member_id: str, session: ReadSession, auth: PartnerAuth) -> MemberOut:
    link = service.linked_member(session, auth.partner_id, member_id)
    return MemberOut(
        member_id=link.member_id,
        customer_ref=link.customer_ref,
        available_points=service.available_points(session, member_id),
    )
