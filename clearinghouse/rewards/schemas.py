"""The rewards API's bodies and answers: a supplier's rewards, prices, stock and codes, and the
catalogue a front end browses."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from clearinghouse.api.schemas import JsonInstant, RequestBody, ResponseModel
from clearinghouse.rewards.service import MAX_STOCK_CHANGE

Kind = Literal["coupon", "voucher", "goods", "membership", "charity"]
TITLE = Field(min_length=1, max_length=200)
DESCRIPTION = Field(default="", max_length=4000)
LIMIT = Field(default=None, ge=1, le=10**6, description="Units; none: no limit.")
LISTED = Field(default=None, max_length=100, description="None: open to every one.")


class RewardIn(RequestBody):
    kind: Kind
    title_zh: str = TITLE
    title_en: str = TITLE
    description_zh: str = DESCRIPTION
    description_en: str = DESCRIPTION
    points: int = Field(ge=1, le=10**9, description="The price in points of one unit.")
    unit_value_fen: int = Field(
        ge=0, le=10**10, description="What the supplier is paid for each unit delivered, in fen."
    )
    stock: int | None = Field(
        default=None,
        ge=0,
        le=10**9,
        description="Units to order; none: unlimited. A coupon's stock is its uploaded codes.",
    )
    per_member_daily_limit: int | None = LIMIT
    per_member_limit: int | None = Field(
        default=None, ge=1, le=10**6, description="Units a member may order while it is valid."
    )
    tiers: list[str] | None = LISTED
    channels: list[str] | None = LISTED
    cities: list[str] | None = LISTED
    valid_from: JsonInstant | None = None
    valid_until: JsonInstant | None = None


class RewardUpdateIn(RequestBody):
    """The fields to change; a field sent as null removes a limit or an eligibility list."""

    title_zh: str | None = Field(default=None, min_length=1, max_length=200)
    title_en: str | None = Field(default=None, min_length=1, max_length=200)
    description_zh: str | None = Field(default=None, max_length=4000)
    description_en: str | None = Field(default=None, max_length=4000)
    unit_value_fen: int | None = Field(default=None, ge=0, le=10**10)
    per_member_daily_limit: int | None = LIMIT
    per_member_limit: int | None = LIMIT
    tiers: list[str] | None = LISTED
    channels: list[str] | None = LISTED
    cities: list[str] | None = LISTED
    valid_until: JsonInstant | None = None


class PriceIn(RequestBody):
    points: int = Field(ge=1, le=10**9)
    effective_from: JsonInstant | None = Field(
        default=None, description="Now if left out; never in the past."
    )


class PriceOut(ResponseModel):
    version: int
    points: int
    effective_from: datetime


class StockIn(RequestBody):
    add: int = Field(
        ge=-MAX_STOCK_CHANGE,
        le=MAX_STOCK_CHANGE,
        description="Units to add (negative: to take away, not below 0).",
    )


class CodesIn(RequestBody):
    codes: list[str] = Field(min_length=1, max_length=10_000)


class RewardOut(ResponseModel):
    reward_id: str = Field(validation_alias="id")
    supplier_id: str
    kind: str
    title_zh: str
    title_en: str
    description_zh: str
    description_en: str
    points: int | None = Field(description="The price in points in effect now.")
    price_version: int | None
    unit_value_fen: int
    stock_left: int | None = Field(description="Units left to order; none: unlimited.")
    per_member_daily_limit: int | None
    per_member_limit: int | None
    tiers: list[str] | None
    channels: list[str] | None
    cities: list[str] | None
    valid_from: datetime
    valid_until: datetime | None
    status: str = Field(description="`active` or `withdrawn`.")


class CatalogueOut(ResponseModel):
    rewards: list[RewardOut]
    member_points: int | None = Field(
        description="The member's points available, when the catalogue was asked for a member: "
        "only rewards they can afford and may order (their tier) are listed."
    )


class OrderIn(RequestBody):
    reward_id: str = Field(min_length=1, max_length=40)
    member_id: str = Field(pattern=r"^M[0-9A-Z]{12}$")
    quantity: int = Field(default=1, ge=1, le=100)
    store_id: str | None = Field(
        default=None, description="Your store the member orders at (its channel and city)."
    )
    confirm: bool = Field(
        default=False,
        description="Confirm at once (one step); otherwise the order is reserved until "
        "confirmed, cancelled or expired.",
    )


class FulfilmentIn(RequestBody):
    state: Literal["shipped", "ready", "delivered", "collected", "returned"]


class OrderOut(ResponseModel):
    order_id: str = Field(validation_alias="id")
    reward_id: str
    supplier_id: str
    kind: str
    partner_id: str = Field(description="The partner whose front end took the order.")
    member_id: str
    store_id: str | None
    quantity: int
    points: int = Field(description="The points the order costs (price x quantity).")
    price_version: int
    unit_value_fen: int
    value_fen: int = Field(description="What the supplier is paid for the order, in fen.")
    hold_id: str
    state: str = Field(description="`reserved`, `confirmed`, `cancelled`, `expired` or `returned`.")
    fulfilment: str | None = Field(
        description="Goods only: `placed`, `shipped`, `ready`, `delivered`, `collected`, "
        "`returned`."
    )
    codes: list[str] = Field(description="A coupon's codes, drawn for this order.")
    receipt_reference: str | None = Field(
        description="A confirmed donation's receipt reference (to a charity)."
    )
    expires_at: datetime = Field(description="Until when a reserved order holds its units.")
    review_case_id: str | None = Field(
        description="An open risk case on its points: confirmation waits for it."
    )
    created_at: datetime
    confirmed_at: datetime | None
    closed_at: datetime | None
