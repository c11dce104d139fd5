"""Partner API routes about the calling partner itself: its profile (and how far ahead it hears
of points expiring), rates and stores (and a store's offline allowance)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from clearinghouse.database import Tx
from partners import directory, rates
from partners.gate import Partner
from partners.key_endpoints import for_all_stores
from partners.rates import RatesNotFound
from partners.schemas import (
    ExpiringNoticeIn,
    OfflineAllowanceIn,
    PartnerOut,
    RatesOut,
    RatesResponse,
    StoreOut,
)

router = APIRouter(prefix="/v1", tags=["partner"])


@router.get("/partner", summary="The calling partner", response_model=PartnerOut)
async def get_partner(call: Partner) -> Response:
    return await call.answer(
        lambda tx: PartnerOut.model_validate(directory.get_partner(tx, call.partner_id))
    )


@router.put(
    "/partner/expiring-notice",
    summary="Set how many days ahead the partner hears of its members' points expiring",
    response_model=PartnerOut,
    dependencies=[Depends(for_all_stores)],
)
async def set_expiring_notice(body: ExpiringNoticeIn, call: Partner) -> Response:
    return await call.answer(
        lambda tx: PartnerOut.model_validate(
            directory.set_expiring_notice_days(tx.session, call.partner_id, body.days)
        )
    )


@router.get(
    "/partner/rates",
    summary="The partner's conversion rates: in effect now, and all",
    response_model=RatesResponse,
)
async def get_rates(call: Partner) -> Response:
    def partner_rates(tx: Tx) -> RatesResponse:
        try:
            current: RatesOut | None = RatesOut.model_validate(rates.rates_at(tx, call.partner_id))
        except RatesNotFound:
            current = None
        history = [RatesOut.model_validate(r) for r in rates.rate_history(tx, call.partner_id)]
        return RatesResponse(current=current, history=history)

    return await call.answer(partner_rates)


@router.get("/stores", summary="The partner's stores and terminals", response_model=list[StoreOut])
async def list_stores(call: Partner) -> Response:
    def stores(tx: Tx) -> list[StoreOut]:
        found = directory.list_stores(tx, call.partner_id, call.scope)
        return [StoreOut.model_validate(s) for s in found]

    return await call.answer(stores)


@router.get("/stores/{store_id}", summary="One of the partner's stores", response_model=StoreOut)
async def get_store(store_id: str, call: Partner) -> Response:
    def store(tx: Tx) -> StoreOut:
        found = directory.get_store(tx, call.partner_id, store_id, call.scope)
        return StoreOut.model_validate(found)

    return await call.answer(store)


@router.put(
    "/stores/{store_id}/offline-allowance",
    summary="Set how many points a member may redeem at the store in a business day while its "
    "till is offline, even beyond the member's points",
    response_model=StoreOut,
)
async def set_offline_allowance(store_id: str, body: OfflineAllowanceIn, call: Partner) -> Response:
    def store(tx: Tx) -> StoreOut:
        # A store's key acts for its own store only: another's is refused (403).
        call.scope.store_for(store_id)
        found = directory.set_offline_allowance(
            tx.session, store_id, body.points_per_member_per_day, partner_id=call.partner_id
        )
        return StoreOut.model_validate(found)

    return await call.answer(store)
