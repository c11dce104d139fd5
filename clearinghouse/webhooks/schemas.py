"""The webhook API's bodies and answers: endpoints, a secret shown once, deliveries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, get_args

from pydantic import Field

from clearinghouse.api.schemas import RequestBody, ResponseModel
from clearinghouse.webhooks.service import EVENT_TYPES, USUAL_EVENT_TYPES

EventType = Literal[
    "points.earned",
    "points.redeemed",
    "points.expiring",
    "points.expired",
    "purchase.clawback",
    "tier.changed",
    "case.decided",
    "settlement.computed",
    "settlement.approved",
    "settlement.paid",
    "reconciliation.completed",
    "key.retiring",
]
assert EventType.__args__ == EVENT_TYPES  # type: ignore[attr-defined]

URL = Field(
    max_length=2048,
    pattern=r"^https?://",
    description="Where events are posted: https:// (a public address).",
)


class EndpointIn(RequestBody):
    url: str = URL
    event_types: list[EventType] = Field(
        default_factory=lambda: [t for t in get_args(EventType) if t in USUAL_EVENT_TYPES],
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="The event types the endpoint receives: by default every type but "
        "`points.earned` and `points.redeemed`, which are sent only to endpoints naming them.",
    )


class EndpointUpdateIn(RequestBody):
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    event_types: list[EventType] | None = Field(
        default=None, min_length=1, max_length=len(EVENT_TYPES)
    )


class RotateIn(RequestBody):
    overlap_hours: int = Field(
        default=24,
        ge=0,
        le=168,
        description="How long the secrets in force now keep signing beside the new one.",
    )

    @property
    def overlap(self) -> timedelta:
        return timedelta(hours=self.overlap_hours)


class EndpointOut(ResponseModel):
    endpoint_id: str = Field(validation_alias="id")
    url: str
    event_types: list[str]
    status: str = Field(description="`active` or `disabled`.")
    failing_since: datetime | None = Field(
        description="Since when every attempt to it has failed; none while it answers."
    )
    disabled_reason: str | None
    created_at: datetime


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(
        description="The signing secret (`whsec_…`): shown only now, keep it to verify."
    )


class SecretOut(ResponseModel):
    secret: str = Field(description="The new signing secret, shown only now.")
    previous_valid_until: datetime = Field(
        description="Until when the secrets before it keep signing beside it."
    )


class DeliveryOut(ResponseModel):
    event_id: str = Field(description="The webhook-id of each delivery of the event.")
    type: str
    state: str = Field(description="`pending`, `delivered` or `failed`.")
    attempts: int = Field(description="Attempts in the current round of retries.")
    next_attempt_at: datetime
    created_at: datetime
    last_status: int | None = Field(description="The HTTP status of the last attempt, if any.")
    last_error: str | None = Field(description="Why the last attempt got no answer, if so.")


class WebhookBody(ResponseModel):
    """The envelope of every event's body; each event type's model adds its `type` and `data`
    (published in the OpenAPI document's webhooks section)."""

    version: Literal[1] = Field(description="The version of the event type's `data`.")
    timestamp: datetime = Field(description="When the change the event reports happened.")
    sequence: int = Field(
        description="Increasing in the order events were written: a member's events follow "
        "the order of the member's changes, so order them by it."
    )


class RemainingKey(ResponseModel):
    """A key of the partner that keeps working after another's deadline."""

    key_id: str
    store_id: str | None = Field(description="The store the key acts for; null: all stores.")
    terminal_id: str | None


class KeyRetiringData(ResponseModel):
    """What a `key.retiring` event tells the partner of one of its API keys near its deadline."""

    key_id: str
    store_id: str | None = Field(description="The store the key acts for; null: all stores.")
    terminal_id: str | None = Field(description="The terminal of the store that holds the key.")
    retires_at: datetime = Field(description="When the key stops working.")
    remaining_keys: list[RemainingKey] = Field(
        description="The partner's keys that keep working after that: active, and not expiring "
        "before it."
    )


class KeyRetiringWebhook(WebhookBody):
    """The body of a `key.retiring` webhook, signed the Standard Webhooks way
    (docs/webhooks.md)."""

    type: Literal["key.retiring"]
    data: KeyRetiringData
