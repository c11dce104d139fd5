"""The points API's request bodies and answers: purchases and their refunds, holds and
redemptions (offline ones too), lots and expiring points, referrals, exchanges, and an
operator's decision on a risk case."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from clearinghouse.api.schemas import JsonInstant, RequestBody, ResponseModel
from clearinghouse.members.schemas import MEMBER_ID
from clearinghouse.numbers import PlainDecimal

REF = r"^[A-Za-z0-9._:-]{1,64}$"


class PurchaseIn(RequestBody):
    partner_txn_id: str = Field(pattern=REF, description="Your own id of the transaction.")
    member_id: str = Field(pattern=MEMBER_ID)
    store_id: str | None = None
    amount_fen: int = Field(gt=0, le=10**12, description="Amount paid, in fen.")
    currency: str = Field(default="CNY", pattern="^CNY$")
    occurred_at: JsonInstant


class BreakdownLineOut(ResponseModel):
    rule: str
    description: str
    points: PlainDecimal


class AccrualOut(ResponseModel):
    purchase_id: int
    partner_txn_id: str
    member_id: str
    points: int
    debt_repaid: int = Field(description="Points of this accrual that repaid a points debt.")
    breakdown: list[BreakdownLineOut]
    rules_version: int
    rates_version: int
    issue_value_fen: int
    lot_expires_at: datetime | None
    tier: str
    review_case_id: str | None = Field(
        default=None,
        description="Set when the points wait, not spendable, for a risk review: see "
        "GET /v1/cases/{id}.",
    )


class RefundIn(RequestBody):
    refund_id: str = Field(pattern=REF, description="Your own id of this refund.")
    amount_fen: int = Field(gt=0, le=10**12)


class RefundOut(ResponseModel):
    partner_txn_id: str
    refund_id: str = Field(validation_alias="partner_refund_id")
    amount_fen: int
    points: int = Field(description="Points clawed back in all.")
    from_available: int
    to_debt: int = Field(description="Points the member had spent: now owed as a debt.")
    value_fen: int


class PurchaseOut(ResponseModel):
    partner_txn_id: str
    member_id: str
    store_id: str | None
    amount_fen: int
    occurred_at: datetime
    points: int
    refunded_fen: int
    refunded_points: int
    rules_version: int
    rates_version: int
    breakdown: list[BreakdownLineOut]


class HoldIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    points: int = Field(gt=0, le=10**12)
    store_id: str | None = None
    partner_ref: str | None = Field(default=None, pattern=REF)
    expires_in_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)


class RedeemIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    points: int = Field(gt=0, le=10**12)
    store_id: str | None = None
    partner_ref: str | None = Field(default=None, pattern=REF)


class OfflineRedeemIn(RedeemIn):
    store_id: str | None = Field(
        default=None,
        description="The store whose till approved the redemption (a store's key: its own).",
    )
    occurred_at: JsonInstant = Field(description="When the till approved it, while offline.")


class HoldOut(ResponseModel):
    hold_id: str = Field(validation_alias="id")
    member_id: str
    store_id: str | None
    partner_ref: str | None
    points: int = Field(validation_alias="amount")
    captured: int
    refunded: int
    state: str
    value_fen: int = Field(description="Cash value of the held (or captured) points.")
    rates_version: int
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None
    review_case_id: str | None = Field(
        default=None,
        description="Set while the hold waits for a risk review (capture answers 409 until "
        "then): see GET /v1/cases/{id}.",
    )


class OfflineRedemptionOut(HoldOut):
    debt_incurred: int = Field(
        description="Points the member's available points did not cover, now owed as points "
        "debt (within the store's offline allowance only)."
    )
    allowance_left: int = Field(
        description="What the store's offline allowance leaves the member at the store for the "
        "rest of that business day."
    )


class CaptureIn(RequestBody):
    points: int | None = Field(default=None, gt=0, le=10**12, description="Omit to capture all.")


class RedemptionRefundIn(RequestBody):
    points: int = Field(gt=0, le=10**12)


class RedemptionRefundOut(ResponseModel):
    hold_id: str
    points: int
    refunded_total: int


class LotOut(ResponseModel):
    earned_at: datetime
    expires_at: datetime
    points: int = Field(validation_alias="remaining")
    source: str


class ExpiringOut(ResponseModel):
    member_id: str
    days: int
    points: int
    lots: list[LotOut]


class ExpiringMemberOut(ResponseModel):
    member_id: str
    customer_ref: str
    points: int
    first_expiry: datetime


class ReferralIn(RequestBody):
    inviter_member_id: str = Field(pattern=MEMBER_ID)
    invitee_member_id: str = Field(pattern=MEMBER_ID)


class ReferralOut(ResponseModel):
    inviter_member_id: str
    invitee_member_id: str
    registered_at: datetime
    bonus_paid: bool = Field(validation_alias="bonus_entry_id")

    @field_validator("bonus_paid", mode="before")
    @classmethod
    def _paid(cls, bonus_entry_id: int | None) -> bool:
        """The bonus is paid once its entry is written."""
        return bonus_entry_id is not None


class ExchangeIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    direction: Literal["in", "out"] = Field(
        description="in: programme points to coalition points; out: the reverse."
    )
    points: int = Field(
        gt=0, le=10**12, description="Programme points going in, or coalition points going out."
    )


class ExchangeOut(ResponseModel):
    direction: str
    member_id: str
    programme_asset: str
    programme_points: int
    coalition_points: int
    fee_points: int
    rounding_points: int
    rate: PlainDecimal
    rates_version: int


class DecisionIn(RequestBody):
    note: str | None = Field(default=None, max_length=1000)
