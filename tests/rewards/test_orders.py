"""Reward orders through signed requests: a member who earned at one partner orders rewards
supplied by others through a front end, in two steps or one; cancellations, expired
reservations and returns give points, stock and codes back; limits hold; and the last units are
never sold twice, nor a code issued twice, under any concurrency."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest

from clearinghouse import clock
from clearinghouse.database import unit_of_work
from clearinghouse.rewards import orders, service
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.databases import World
from tests.builders.http import refused
from tests.builders.ids import unique_id
from tests.builders.points import accrue, available, new_member

ORDERS = "/v1/reward-orders"


def _supply(client: PartnerClient, **fields: Any) -> dict[str, Any]:
    body = {"title_zh": "奖励", "title_en": "Reward", "points": 500, "unit_value_fen": 400}
    reward: dict[str, Any] = client.post("/v1/rewards", {**body, **fields})
    return reward


def _order(client: PartnerClient, member: str, reward_id: str, **fields: Any) -> dict[str, Any]:
    order: dict[str, Any] = client.post(
        ORDERS, {"reward_id": reward_id, "member_id": member, **fields}
    )
    return order


def _points(client: PartnerClient, member: str) -> int:
    points: int = client.get(f"/v1/members/{member}")["available_points"]
    return points


def test_a_member_orders_a_coupon_in_two_steps_and_a_voucher_in_one(world: World) -> None:
    shop, cafe, cinema = world.merchant(), world.merchant(), world.merchant()
    as_shop, as_cafe, as_cinema = world.client(shop), world.client(cafe), world.client(cinema)
    member = enrol(as_shop)
    earned = buy(as_shop, member, 52_000)["points"]
    coupon = _supply(as_cinema, kind="coupon", points=400, unit_value_fen=350)
    codes = [unique_id("film") for _ in range(2)]
    as_cinema.post(f"/v1/rewards/{coupon['reward_id']}/codes", {"codes": codes})
    voucher = _supply(as_cafe, kind="voucher", points=300, unit_value_fen=250, stock=5)

    reserved = _order(as_shop, member, coupon["reward_id"])
    assert (reserved["state"], reserved["points"], reserved["value_fen"]) == ("reserved", 400, 350)
    assert reserved["codes"] == [codes[0]]
    assert reserved["supplier_id"] == cinema.id
    assert _points(as_shop, member) == earned - 400
    confirmed = as_shop.post(f"{ORDERS}/{reserved['order_id']}/confirm", None)
    assert (confirmed["state"], confirmed["codes"]) == ("confirmed", [codes[0]])
    # Confirming again changes nothing; the supplier reads the order too, the shop cannot
    # capture its hold itself.
    assert as_shop.post(f"{ORDERS}/{reserved['order_id']}/confirm", None) == confirmed
    assert as_cinema.get(f"{ORDERS}/{reserved['order_id']}")["state"] == "confirmed"
    refused(409, "hold_of_an_order", as_shop.post, f"/v1/holds/{reserved['hold_id']}/void", None)

    one_step = _order(as_shop, member, voucher["reward_id"], quantity=2, confirm=True)
    assert (one_step["state"], one_step["points"], one_step["value_fen"]) == (
        "confirmed",
        600,
        500,
    )
    assert _points(as_shop, member) == earned - 1_000
    assert as_cafe.get("/v1/rewards")[0]["stock_left"] == 3
    # Neither the coupon nor the voucher can be cancelled once confirmed.
    refused(409, "order_closed", as_shop.post, f"{ORDERS}/{one_step['order_id']}/cancel", None)
    # Another partner's order is unknown.
    refused(404, "order_not_found", as_cafe.get, f"{ORDERS}/{reserved['order_id']}")


def test_cancelled_and_expired_reservations_give_points_stock_and_codes_back(
    world: World, manual_clock: clock.Manual
) -> None:
    shop, cinema = world.merchant(), world.merchant()
    as_shop, as_cinema = world.client(shop), world.client(cinema)
    member = enrol(as_shop)
    earned = buy(as_shop, member, 52_000, occurred_at=manual_clock())["points"]
    coupon = _supply(as_cinema, kind="coupon")
    as_cinema.post(f"/v1/rewards/{coupon['reward_id']}/codes", {"codes": ["C-1"]})

    first = _order(as_shop, member, coupon["reward_id"])
    refused(409, "stock_exhausted", _order, as_shop, member, coupon["reward_id"])
    cancelled = as_shop.post(f"{ORDERS}/{first['order_id']}/cancel", None)
    assert (cancelled["state"], cancelled["codes"]) == ("cancelled", [])
    assert _points(as_shop, member) == earned

    second = _order(as_shop, member, coupon["reward_id"])
    assert second["codes"] == ["C-1"]
    assert orders.expire_orders(world.sessions) == 0
    # A day later (signed requests keep to the wall clock: the services are asked directly).
    manual_clock.set(clock.now() + timedelta(days=1))
    assert orders.expire_orders(world.sessions) == 1
    assert orders.expire_orders(world.sessions) == 0
    with unit_of_work(world.sessions) as session:
        assert orders.get_order(session, shop.id, second["order_id"]).state == "expired"
        assert service.get_reward(session, coupon["reward_id"]).stock_left == 1
        with pytest.raises(orders.OrderClosed):
            orders.confirm_order(session, shop.id, second["order_id"])
    assert available(world.sessions, member) == earned


def test_goods_are_shipped_delivered_and_returned_with_the_points(world: World) -> None:
    shop, mall = world.merchant(), world.merchant()
    as_shop, as_mall = world.client(shop), world.client(mall)
    member = enrol(as_shop)
    earned = buy(as_shop, member, 52_000)["points"]
    mug = _supply(as_mall, kind="goods", stock=3, points=700, per_member_limit=2)
    order = _order(as_shop, member, mug["reward_id"], confirm=True)
    assert (order["state"], order["fulfilment"]) == ("confirmed", "placed")
    path = f"{ORDERS}/{order['order_id']}/fulfilment"
    # Only the supplier fulfils, one step at a time.
    refused(404, "order_not_found", as_shop.post, path, {"state": "shipped"})
    refused(409, "order_closed", as_mall.post, path, {"state": "delivered"})
    assert as_mall.post(path, {"state": "shipped"})["fulfilment"] == "shipped"
    assert as_mall.post(path, {"state": "delivered"})["fulfilment"] == "delivered"
    returned = as_mall.post(path, {"state": "returned"})
    assert (returned["state"], returned["fulfilment"]) == ("returned", "returned")
    assert _points(as_shop, member) == earned
    assert as_mall.get("/v1/rewards")[0]["stock_left"] == 3
    # Goods not yet shipped are cancelled by the front end as a return.
    again = _order(as_shop, member, mug["reward_id"], confirm=True)
    assert as_shop.post(f"{ORDERS}/{again['order_id']}/cancel", None)["state"] == "cancelled"
    assert _points(as_shop, member) == earned


def test_limits_eligibility_and_bad_orders_are_refused(world: World) -> None:
    shop, mall = world.merchant(), world.merchant()
    as_shop, as_mall = world.client(shop), world.client(mall)
    member = enrol(as_shop)
    buy(as_shop, member, 52_000)
    daily = _supply(as_mall, kind="goods", per_member_daily_limit=1, points=100)
    _order(as_shop, member, daily["reward_id"])
    refused(409, "order_limit_reached", _order, as_shop, member, daily["reward_id"])
    golden = _supply(as_mall, kind="membership", tiers=["gold"], points=100)
    refused(409, "reward_not_eligible", _order, as_shop, member, golden["reward_id"])
    dear = _supply(as_mall, kind="goods", points=900_000)
    refused(422, "insufficient_balance", _order, as_shop, member, dear["reward_id"])
    ended = _supply(as_mall, kind="goods", points=100)
    as_mall.post(f"/v1/rewards/{ended['reward_id']}/withdraw", None)
    refused(409, "reward_unavailable", _order, as_shop, member, ended["reward_id"])
    refused(404, "reward_not_found", _order, as_shop, member, "RNOSUCHREWARD")
    # A member not linked to the front end is unknown to it.
    stranger = enrol(as_mall)
    refused(404, "member_not_found", _order, as_shop, stranger, daily["reward_id"])


def test_fifty_members_racing_for_the_last_ten_units_get_exactly_ten(world: World) -> None:
    shop, cinema = world.merchant(), world.merchant()
    as_cinema = world.client(cinema)
    coupon = _supply(as_cinema, kind="coupon", points=100)
    codes = [unique_id("seat") for _ in range(10)]
    as_cinema.post(f"/v1/rewards/{coupon['reward_id']}/codes", {"codes": codes})
    members = [new_member(world.sessions, [shop.id]) for _ in range(50)]
    earned = {member: accrue(world.sessions, shop.id, member, 52_000).points for member in members}
    barrier = threading.Barrier(len(members))
    results: list[orders.Order | Exception] = []

    def race(member: str) -> None:
        barrier.wait(timeout=60)
        try:
            with unit_of_work(world.sessions) as session:
                results.append(
                    orders.place_order(
                        session, shop.id, member, coupon["reward_id"], 1,
                        key=str(uuid.uuid4()), confirm=True,
                    )
                )  # fmt: skip
        except Exception as exc:  # the refusal is the result
            results.append(exc)

    threads = [threading.Thread(target=race, args=(m,), daemon=True) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an order hung"
    won = [r for r in results if isinstance(r, orders.Order)]
    lost = [r for r in results if not isinstance(r, orders.Order)]
    assert len(won) == 10
    assert {type(r).__name__ for r in lost} == {"StockExhausted"}, lost[:3]
    # Each code went to exactly one order; the losers kept their points.
    assert sorted(code for order in won for code in order.codes) == sorted(codes)
    winners = {order.member_id for order in won}
    for member in members:
        spent = 100 if member in winners else 0
        assert available(world.sessions, member) == earned[member] - spent


def test_a_reward_past_its_validity_cannot_be_ordered(
    world: World, manual_clock: clock.Manual
) -> None:
    shop, mall = world.merchant(), world.merchant()
    member = new_member(world.sessions, [shop.id])
    accrue(world.sessions, shop.id, member, 52_000, occurred_at=manual_clock())
    with unit_of_work(world.sessions) as session:
        spec = service.RewardSpec(
            "goods", "杯子", "Mug", 100, 100, valid_until=clock.now() + timedelta(days=1)
        )
        reward = service.create_reward(session, mall.id, spec)
    manual_clock.set(clock.now() + timedelta(days=2))
    with unit_of_work(world.sessions) as session, pytest.raises(orders.RewardUnavailable):
        orders.place_order(session, shop.id, member, reward.id, 1, key=str(uuid.uuid4()))
    assert available(world.sessions, member) > 0
    with unit_of_work(world.sessions) as session:
        assert service.get_reward(session, reward.id).stock_left is None
        assert service.browse(session, service.Browse(supplier_id=mall.id)) == []
