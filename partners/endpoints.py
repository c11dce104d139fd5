"""Partner API routes about the calling partner itself: its profile, rates and stores."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response

from clearinghouse.api.schemas import ResponseModel
from clearinghouse.database import Tx
from clearinghouse.numbers import PlainDecimal
from partners import directory, rates
from partners.gate import Partner
from partners.rates import RatesNotFound

router = APIRouter(prefix="/v1", tags=["partner"])


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

    @classmethod
    def of(cls, r: rates.Rates) -> RatesOut:
        return cls(
            version=r.version,
            effective_from=r.effective_from,
            earn_rate=r.earn_rate,
            issue_price=r.issue_price,
            redemption_value=r.redemption_value,
            exchange_rate=r.exchange_rate,
        )


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


def _store_out(store: directory.Store) -> StoreOut:
    return StoreOut(
        id=store.id,
        name=store.name,
        channel=store.channel,
        city=store.city,
        latitude=store.latitude,
        longitude=store.longitude,
        status=store.status,
    )


@router.get("/partner", summary="The calling partner", response_model=PartnerOut)
async def get_partner(call: Partner) -> Response:
    def partner(tx: Tx) -> PartnerOut:
        found = directory.get_partner(tx, call.partner_id)
        return PartnerOut(
            id=found.id,
            name=found.name,
            kind=found.kind,
            status=found.status,
            programme_asset=found.programme_asset,
        )

    return await call.answer(partner)


@router.get(
    "/partner/rates",
    summary="The partner's conversion rates: in effect now, and all",
    response_model=RatesResponse,
)
async def get_rates(call: Partner) -> Response:
    def partner_rates(tx: Tx) -> RatesResponse:
        try:
            current: RatesOut | None = RatesOut.of(rates.rates_at(tx, call.partner_id))
        except RatesNotFound:
            current = None
        history = [RatesOut.of(r) for r in rates.rate_history(tx, call.partner_id)]
        return RatesResponse(current=current, history=history)

    return await call.answer(partner_rates)


@router.get("/stores", summary="The partner's stores and terminals", response_model=list[StoreOut])
async def list_stores(call: Partner) -> Response:
    return await call.answer(
        lambda tx: [_store_out(s) for s in directory.list_stores(tx, call.partner_id)]
    )


@router.get("/stores/{store_id}", summary="One of the partner's stores", response_model=StoreOut)
async def get_store(store_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: _store_out(directory.get_store(tx, call.partner_id, store_id))
    )
