"""The partner API's bodies and answers about the calling partner itself: its profile, rates,
stores and API keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AfterValidator, Field, field_validator, model_validator

from clearinghouse.api.schemas import JsonInstant, RequestBody, ResponseModel
from clearinghouse.numbers import PlainDecimal
from partners.directory import MAX_OFFLINE_ALLOWANCE
from partners.keys import RETIREMENT_DAYS
from partners.signing import load_public_key_pem, public_key_to_pem


class PartnerOut(ResponseModel):
    id: str
    name: str
    kind: str
    status: str
    programme_asset: str | None
    expiring_notice_days: int = Field(
        description="How many days ahead the partner hears of its members' points expiring "
        "(the `points.expiring` webhook)."
    )


class ExpiringNoticeIn(RequestBody):
    days: int = Field(
        ge=1,
        le=90,
        description="How many days ahead to hear of members' points expiring (1 to 90).",
    )


class RatesOut(ResponseModel):
    version: int
    effective_from: datetime
    earn_rate: PlainDecimal
    issue_price: PlainDecimal
    redemption_value: PlainDecimal
    exchange_rate: PlainDecimal | None


class RatesResponse(ResponseModel):
    current: RatesOut | None
    history: list[RatesOut]


class StoreOut(ResponseModel):
    id: str
    name: str
    channel: str
    city: str | None
    latitude: float | None
    longitude: float | None
    status: str
    offline_allowance: int = Field(
        description="Points a member may redeem at the store in a business day while its till "
        "is offline, even beyond the member's points (the rest becomes points debt); 0: none."
    )


class OfflineAllowanceIn(RequestBody):
    points_per_member_per_day: int = Field(
        ge=0,
        le=MAX_OFFLINE_ALLOWANCE,
        description="Points a member may redeem at the store in a business day while its till "
        "is offline; 0 allows none.",
    )


KEY_ID = r"^[A-Za-z0-9._:-]{1,64}$"


def _ed25519_pem(value: str) -> str:
    try:
        load_public_key_pem(value.encode())
    except ValueError as exc:
        raise ValueError("an Ed25519 public key in PEM (SubjectPublicKeyInfo)") from exc
    return value


PublicKeyPem = Annotated[str, Field(max_length=1000), AfterValidator(_ed25519_pem)]


class KeyIn(RequestBody):
    public_key: PublicKeyPem = Field(
        description="The Ed25519 public key, PEM (as `openssl pkey -pubout` writes it)."
    )
    key_id: str | None = Field(default=None, pattern=KEY_ID, description="Generated if omitted.")
    store_id: str | None = Field(
        default=None, description="The one store the key acts for; omit it for all stores."
    )
    terminal_id: str | None = Field(
        default=None, description="The terminal of `store_id` that holds the key."
    )
    expires_at: JsonInstant | None = Field(
        default=None, description="When the key is refused from; never if omitted."
    )

    def key(self) -> Ed25519PublicKey:
        return load_public_key_pem(self.public_key.encode())


class RetireIn(RequestBody):
    days: float | None = Field(
        default=None, gt=0, le=365, description="Days the key keeps working."
    )
    retire_at: JsonInstant | None = Field(default=None, description="When the key stops working.")

    @model_validator(mode="after")
    def _one_deadline(self) -> RetireIn:
        if self.days is not None and self.retire_at is not None:
            raise ValueError("give days or retire_at, not both")
        return self

    def deadline(self, now: datetime) -> datetime:
        """The instant the key stops working: `retire_at`, else `days` (by default
        RETIREMENT_DAYS) from `now`."""
        if self.retire_at is not None:
            return self.retire_at
        return now + timedelta(days=self.days or RETIREMENT_DAYS)


class KeyOut(ResponseModel):
    id: str
    algorithm: str
    public_key: str = Field(description="The Ed25519 public key, PEM.")
    status: str = Field(description="active, retiring (until retire_at) or revoked.")
    store_id: str | None = Field(description="The store the key acts for; null: all stores.")
    terminal_id: str | None
    expires_at: datetime | None
    retire_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @field_validator("public_key", mode="before")
    @classmethod
    def _pem(cls, raw: Any) -> Any:
        # Stored as the key's 32 raw bytes; shown as the PEM the partner registered.
        if isinstance(raw, bytes):
            return public_key_to_pem(Ed25519PublicKey.from_public_bytes(raw)).decode()
        return raw
