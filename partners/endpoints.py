"""Partner API routes about the calling partner itself: its profile, rates and stores."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel

from clearinghouse.api.deps import PartnerAuth, ReadSession
from partners import directory, rates
from partners.rates import RatesNotFound

router = APIRouter(prefix="/v1", tags=["partner"])


class PartnerOut(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    programme_asset: str | None


class RatesOut(BaseModel):
    version: int
    effective_from: datetime
    earn_rate: Decimal
    issue_price: Decimal
    redemption_value: Decimal
    exchange_rate: Decimal | None

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


class RatesResponse(BaseModel):
    current: RatesOut | None
    history: list[RatesOut]


class StoreOut(BaseModel):
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


@router.get("/partner", summary="The calling partner")
def get_partner(session: ReadSession, auth: PartnerAuth) -> PartnerOut:
    partner = directory.get_partner(session, auth.partner_id)
    return PartnerOut(
        id=partner.id,
        name=partner.name,
        kind=partner.kind,
        status=partner.status,
        programme_asset=partner.programme_asset,
    )


@router.get("/partner/rates", summary="The partner's conversion rates: in effect now, and all")
def get_rates(session: ReadSession, auth: PartnerAuth) -> RatesResponse:
    try:
        current: RatesOut | None = RatesOut.of(rates.rates_at(session, auth.partner_id))
    except RatesNotFound:
        current = None
    history = [RatesOut.of(r) for r in rates.rate_history(session, auth.partner_id)]
    return RatesResponse(current=current, history=history)


@router.get("/stores", summary="The partner's stores and terminals")
def list_stores(session: ReadSession, auth: PartnerAuth) -> list[StoreOut]:
    return [_store_out(s) for s in directory.list_stores(session, auth.partner_id)]


@router.get("/stores/{store_id}", summary="One of the partner's stores")
def get_store(store_id: str, session: ReadSession, auth: PartnerAuth) -> StoreOut:
    return _store_out(directory.get_store(session, auth.partner_id, store_id))
