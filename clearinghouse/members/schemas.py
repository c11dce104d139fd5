"""The members API's request bodies and answers, and the member id a path carries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import Field

from clearinghouse.api.schemas import RequestBody, ResponseModel
from clearinghouse.numbers import PlainDecimal

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
    available_points: int = Field(validation_alias="available")
    held_points: int = Field(
        validation_alias="held", description="Reserved by open redemption holds."
    )
    debt_points: int = Field(
        validation_alias="debt", description="Owed after refunds of spent points; repaid first."
    )
    tier: TierOut
