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
from clearinghouse.webhooks.schemas import WebhookBody

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


class MemberEventData(ResponseModel):
    """Who an event about a member is about."""

    member_id: str
    customer_ref: str | None = Field(
        description="Your own reference for the member (as you linked them), if linked."
    )


class PointsEarnedData(MemberEventData):
    """What a `points.earned` event tells each partner the member is linked to."""

    reason: Literal["purchase", "referral_bonus", "engagement"]
    partner_id: str | None = Field(
        description="Where the points were earned: the partner of the purchase, or the partner "
        "funding a referral bonus (none when the coalition funds it)."
    )
    points: int = Field(description="The points earned.")
    debt_repaid: int = Field(description="Of them, the points that repaid a points debt.")
    status: Literal["available", "pending_review"] = Field(
        description="`pending_review`: the points wait, not spendable, for a risk review "
        "(`case.decided` follows)."
    )
    entry_id: int = Field(description="The ledger entry.")
    lot_expires_at: datetime | None = Field(description="When these points expire.")
    occurred_at: datetime
    partner_txn_id: str | None = Field(
        description="Your id of the purchase, when it was yours (none at another partner)."
    )
    store_id: str | None = Field(description="Your store, when the purchase was yours.")


class PointsRedeemedData(MemberEventData):
    """What a `points.redeemed` event tells each partner the member is linked to."""

    partner_id: str = Field(description="Where the points were spent.")
    points: int
    entry_id: int
    redeemed_at: datetime
    hold_id: str | None = Field(description="Your hold, when the redemption was yours.")
    partner_ref: str | None = Field(description="Your reference, when the redemption was yours.")
    store_id: str | None = Field(description="Your store, when the redemption was yours.")
    value_fen: int | None = Field(
        description="What the coalition pays you for the points, when the redemption was yours."
    )


class PointsExpiringData(MemberEventData):
    """A `points.expiring` reminder: some of the member's points expire soon."""

    points: int = Field(description="The points that expire at `expires_at` if not spent.")
    expires_at: datetime
    notice_days: int = Field(description="Your horizon: you hear this many days ahead.")


class PointsExpiredData(MemberEventData):
    """A `points.expired` event: points the member did not spend in time are gone."""

    points: int
    lots: int = Field(description="How many of the member's lots expired together.")
    entry_id: int
    expired_at: datetime


class PurchaseClawbackData(MemberEventData):
    """A `purchase.clawback` event: your refund took back points the member had spent, so the
    member owes them (later accruals repay the debt first)."""

    partner_txn_id: str
    refund_id: str
    points: int = Field(description="The points the refund took back in all.")
    from_available: int = Field(description="Of them, the points taken from the balance.")
    owed_points: int = Field(description="Of them, the points the member now owes.")
    entry_id: int


class TierChangedData(MemberEventData):
    """A `tier.changed` event, to each partner the member is linked to."""

    from_tier: str
    to_tier: str
    qualifying_points: int = Field(description="The points that count towards the tier now.")
    changed_at: datetime


class PointsEarnedWebhook(WebhookBody):
    """The body of a `points.earned` webhook (sent only to endpoints that name it)."""

    type: Literal["points.earned"]
    data: PointsEarnedData


class PointsRedeemedWebhook(WebhookBody):
    """The body of a `points.redeemed` webhook (sent only to endpoints that name it)."""

    type: Literal["points.redeemed"]
    data: PointsRedeemedData


class PointsExpiringWebhook(WebhookBody):
    type: Literal["points.expiring"]
    data: PointsExpiringData


class PointsExpiredWebhook(WebhookBody):
    type: Literal["points.expired"]
    data: PointsExpiredData


class PurchaseClawbackWebhook(WebhookBody):
    type: Literal["purchase.clawback"]
    data: PurchaseClawbackData


class TierChangedWebhook(WebhookBody):
    type: Literal["tier.changed"]
    data: TierChangedData
