"""The risk API's answers: a case as operators review it, and its outcome as its partner sees
it, in an answer or in the `case.decided` webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasPath, Field, field_validator

from clearinghouse.api.schemas import ResponseModel
from clearinghouse.webhooks.schemas import WebhookBody

Outcome = Literal["released", "reversed", "capturable", "voided", "unchanged"]
"""What a decision did with the points a case held back (CaseDecidedData.outcome)."""


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


class PartnerCaseOut(ResponseModel):
    case_id: str = Field(validation_alias="id")
    operation: str
    decision: str
    state: str
    reasons: list[str] = Field(validation_alias=AliasPath("verdicts", "rules"))

    @field_validator("reasons", mode="before")
    @classmethod
    def _reasons(cls, rules: list[dict[str, Any]]) -> list[str]:
        """Each rule's verdict carries its reason."""
        return [rule["reason"] for rule in rules]


class CaseDecidedData(ResponseModel):
    """What a `case.decided` event tells the partner of a case an operator decided."""

    case_id: str
    decision: Literal["approved", "rejected"]
    operation: str = Field(
        description="The request the case was opened on: `accrual`, `hold`, `redemption`, "
        "`refund` or `exchange`."
    )
    member_id: str | None
    customer_ref: str | None = Field(
        description="Your own reference for the member (as you linked them), if linked."
    )
    points: int = Field(description="The points of the request.")
    outcome: Outcome = Field(
        description="What became of the points the case held back: `released` to the member "
        "(an accrual approved), `reversed` to the issuer (an accrual rejected), `capturable` "
        "(a hold approved, which may now be captured), `voided` (a hold rejected: its points "
        "went back to the member), or `unchanged` (nothing was held back: a refund or an "
        "exchange goes ahead under review; or the hold had closed already)."
    )
    partner_txn_id: str | None = Field(
        description="The partner's transaction id of an accrual's or a refund's case."
    )
    hold_id: str | None = Field(description="The hold of a hold's or a redemption's case.")
    decided_at: datetime


class CaseDecidedWebhook(WebhookBody):
    """The body of a `case.decided` webhook, signed the Standard Webhooks way
    (docs/webhooks.md)."""

    type: Literal["case.decided"]
    data: CaseDecidedData
