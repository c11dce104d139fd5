"""The risk API's answers: a case as operators review it, and its outcome as its partner sees
it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasPath, Field, field_validator

from clearinghouse.api.schemas import ResponseModel


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
