"""The campaigns API's bodies and answers: a partner's campaigns of engagement points and the
awards a front end makes from them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from clearinghouse.api.schemas import JsonInstant, RequestBody, ResponseModel
from clearinghouse.members.schemas import MEMBER_ID

Reason = Literal["sign_in", "survey", "review", "campaign_bonus"]
POINTS = Field(ge=1, le=10**9)


class CampaignIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    budget_points: int = Field(ge=1, le=10**12, description="What all its awards may give.")
    per_member_cap: int = Field(ge=1, le=10**9, description="Points a member may get in all.")
    daily_cap: int = Field(
        ge=1, le=10**9, description="Points a member may get in one business day."
    )
    starts_at: JsonInstant
    ends_at: JsonInstant


class CampaignOut(ResponseModel):
    campaign_id: str = Field(validation_alias="id")
    funder_partner_id: str | None = Field(description="None: the coalition funds it.")
    name: str
    budget_points: int
    remaining_points: int = Field(description="What is left of the budget to award.")
    per_member_cap: int
    daily_cap: int
    starts_at: datetime
    ends_at: datetime
    created_at: datetime


class AwardIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID, description="A member linked to you.")
    points: int = POINTS
    reason: Reason
    reference: str = Field(
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="Your own id of the award: the same one again answers the first award.",
    )


class AwardOut(ResponseModel):
    award_id: int = Field(validation_alias="id")
    campaign_id: str
    funder_partner_id: str | None = Field(description="None: the coalition funds it.")
    partner_id: str = Field(description="The partner that made the award.")
    member_id: str
    points: int
    reason: Reason
    reference: str
    entry_id: int = Field(description="The ledger entry (kind `engagement`).")
    business_date: date
    lot_expires_at: datetime = Field(description="When these points expire.")
    created_at: datetime
