"""Rewards API routes: a supplier manages its own rewards (a key for all its stores), and any
partner's front end browses the catalogue for its members."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from clearinghouse import ledger
from clearinghouse.database import Tx
from clearinghouse.members.schemas import MEMBER_ID
from clearinghouse.members.service import linked_member
from clearinghouse.points import wallet
from clearinghouse.rewards import orders, service
from clearinghouse.rewards.schemas import (
    CatalogueOut,
    CodesIn,
    FulfilmentIn,
    Kind,
    OrderIn,
    OrderOut,
    PriceIn,
    PriceOut,
    RewardIn,
    RewardOut,
    RewardUpdateIn,
    StockIn,
)
from partners.gate import Partner
from partners.key_endpoints import for_all_stores

router = APIRouter(prefix="/v1", tags=["rewards"])
supplier = APIRouter(prefix="/v1/rewards", tags=["rewards"], dependencies=[Depends(for_all_stores)])


orders_router = APIRouter(prefix="/v1/reward-orders", tags=["rewards"])


def _out(reward: service.Reward) -> RewardOut:
    return RewardOut.model_validate(asdict(reward))


@supplier.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Supply a reward to the coalition's catalogue",
    response_model=RewardOut,
)
async def create_reward(body: RewardIn, call: Partner) -> Response:
    spec = service.RewardSpec(**body.model_dump())
    return await call.answer(lambda tx: _out(service.create_reward(tx, call.partner_id, spec)))


@supplier.get("", summary="The rewards the partner supplies", response_model=list[RewardOut])
async def list_rewards(call: Partner) -> Response:
    return await call.answer(lambda tx: [_out(r) for r in service.supplied_by(tx, call.partner_id)])


@supplier.put(
    "/{reward_id}", summary="Change one of the partner's rewards", response_model=RewardOut
)
async def update_reward(reward_id: str, body: RewardUpdateIn, call: Partner) -> Response:
    changes = body.model_dump(exclude_unset=True)
    return await call.answer(
        lambda tx: _out(service.update_reward(tx, call.partner_id, reward_id, changes))
    )


@supplier.post(
    "/{reward_id}/prices",
    status_code=status.HTTP_201_CREATED,
    summary="A new price in points, in effect from now or a later time",
    response_model=PriceOut,
)
async def set_price(reward_id: str, body: PriceIn, call: Partner) -> Response:
    return await call.answer(
        lambda tx: PriceOut.model_validate(
            asdict(
                service.set_price(tx, call.partner_id, reward_id, body.points, body.effective_from)
            )
        )
    )


@supplier.post(
    "/{reward_id}/stock",
    summary="Add units to the reward's stock (or take some away)",
    response_model=RewardOut,
)
async def add_stock(reward_id: str, body: StockIn, call: Partner) -> Response:
    return await call.answer(
        lambda tx: _out(service.add_stock(tx, call.partner_id, reward_id, body.add))
    )


@supplier.post(
    "/{reward_id}/codes",
    summary="Add coupon codes to the reward's pool (each is issued once)",
    response_model=RewardOut,
)
async def upload_codes(reward_id: str, body: CodesIn, call: Partner) -> Response:
    return await call.answer(
        lambda tx: _out(service.upload_codes(tx, call.partner_id, reward_id, body.codes))
    )


@supplier.post(
    "/{reward_id}/withdraw",
    summary="Take the reward out of the catalogue",
    response_model=RewardOut,
)
async def withdraw(reward_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: _out(service.withdraw(tx, call.partner_id, reward_id)))


@router.get(
    "/catalogue",
    summary="The rewards members may order now, cheapest first",
    response_model=CatalogueOut,
)
async def catalogue(
    call: Partner,
    kind: Kind | None = None,
    supplier_id: str | None = None,
    city: str | None = None,
    channel: str | None = None,
    member_id: Annotated[
        str | None,
        Query(
            pattern=MEMBER_ID,
            description="A member linked to you: only what they can afford and may order.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    def browsed(tx: Tx) -> CatalogueOut:
        tier = points = None
        if member_id is not None:
            linked_member(tx, call.partner_id, member_id)
            points = ledger.balance(tx.session, wallet.available_account(member_id))
            tier = wallet.current_tier(tx.session, member_id)
        query = service.Browse(kind, supplier_id, city, channel, tier, points, limit)
        return CatalogueOut(
            rewards=[_out(r) for r in service.browse(tx, query)], member_points=points
        )

    return await call.answer(browsed)


def _order(order: orders.Order) -> OrderOut:
    return OrderOut.model_validate({**asdict(order), "receipt_reference": order.receipt_reference})


@orders_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Order a reward for a member: reserve it, or confirm at once",
    response_model=OrderOut,
)
async def place_order(body: OrderIn, call: Partner) -> Response:
    def placed(tx: Tx) -> OrderOut:
        return _order(
            orders.place_order(
                tx,
                call.partner_id,
                body.member_id,
                body.reward_id,
                body.quantity,
                key=call.idempotency_key,
                store_id=call.scope.store_for(body.store_id),
                confirm=body.confirm,
                scope=call.scope,
            )
        )

    return await call.answer(placed)


@orders_router.get(
    "/{order_id}",
    summary="An order the partner took, or of a reward it supplies",
    response_model=OrderOut,
)
async def get_order(order_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: _order(orders.get_order(tx, call.partner_id, order_id)))


@orders_router.post(
    "/{order_id}/confirm",
    summary="Confirm a reserved order: its points go to the supplier",
    response_model=OrderOut,
)
async def confirm_order(order_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: _order(orders.confirm_order(tx, call.partner_id, order_id)))


@orders_router.post(
    "/{order_id}/cancel",
    summary="Cancel a reserved order, or goods not yet shipped: points and stock come back",
    response_model=OrderOut,
)
async def cancel_order(order_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: _order(orders.cancel_order(tx, call.partner_id, order_id)))


@orders_router.post(
    "/{order_id}/fulfilment",
    summary="The supplier moves a goods order on: shipped or ready, delivered or collected, "
    "returned",
    response_model=OrderOut,
)
async def fulfil(order_id: str, body: FulfilmentIn, call: Partner) -> Response:
    return await call.answer(
        lambda tx: _order(orders.fulfil(tx, call.partner_id, order_id, body.state))
    )
