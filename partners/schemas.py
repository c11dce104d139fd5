"""The partner API's answers about the calling partner itself: its profile, rates and stores."""

from __future__ import annotations

from datetime import datetime

from clearinghouse.api.schemas import ResponseModel
from clearinghouse.numbers import PlainDecimal


class PartnerOut(ResponseModel):
    id: str
    name: str
    kind: str
    status: str
    programme_asset: str | None


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
