"""A member who earned at one partner redeems catalogue rewards supplied by others: a coupon
(two steps), a voucher (one step) and a donation to a charity, all through the first partner's
front end. The day's settlement pays each supplier exactly its unit values, charges the issuing
partner its issue price, and is zero-sum to the fen."""

from __future__ import annotations

from typing import Any

from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.http import refused
from tests.builders.partners import make_partner
from tests.builders.settlement import settle_after_cutoff

ORDERS = "/v1/reward-orders"


def _supply(client: PartnerClient, **fields: Any) -> str:
    reward_id: str = client.post(
        "/v1/rewards", {"title_zh": "奖励", "title_en": "Reward", **fields}
    )["reward_id"]
    return reward_id


def test_suppliers_are_paid_their_unit_values_and_the_issuer_its_issue_price(
    world: World,
) -> None:
    shop = world.merchant(issue_price="1.2")
    cinema, cafe = world.merchant(), world.merchant()
    charity = make_partner(world.sessions, kind="charity")
    as_shop, as_cinema, as_cafe = world.client(shop), world.client(cinema), world.client(cafe)
    as_charity = world.client(charity)
    member = enrol(as_shop)
    accrual = buy(as_shop, member, 52_000)

    coupon = _supply(as_cinema, kind="coupon", points=400, unit_value_fen=350)
    as_cinema.post(f"/v1/rewards/{coupon}/codes", {"codes": ["FILM-1"]})
    voucher = _supply(as_cafe, kind="voucher", points=300, unit_value_fen=250, stock=9)
    donation = _supply(as_charity, kind="charity", points=100, unit_value_fen=100)
    # Only a charity supplies donations, and a charity only donations.
    refused(
        422,
        "validation_error",
        as_cafe.post,
        "/v1/rewards",
        {"kind": "charity", "title_zh": "捐", "title_en": "Give", "points": 1, "unit_value_fen": 1},
    )

    reserved = as_shop.post(ORDERS, {"reward_id": coupon, "member_id": member})
    as_shop.post(f"{ORDERS}/{reserved['order_id']}/confirm", None)
    as_shop.post(
        ORDERS, {"reward_id": voucher, "member_id": member, "quantity": 2, "confirm": True}
    )
    given = as_shop.post(ORDERS, {"reward_id": donation, "member_id": member, "confirm": True})
    assert given["receipt_reference"] == given["order_id"]
    assert reserved["receipt_reference"] is None

    [run] = settle_after_cutoff(world.sessions, business_today())
    lines = {line.partner_id: line for line in run.lines}
    assert (lines[cinema.id].catalogue_points, lines[cinema.id].catalogue_fen) == (400, 350)
    assert (lines[cafe.id].catalogue_points, lines[cafe.id].catalogue_fen) == (600, 500)
    assert (lines[charity.id].catalogue_points, lines[charity.id].catalogue_fen) == (100, 100)
    for supplier in (cinema, cafe, charity):
        assert lines[supplier.id].net_fen == -lines[supplier.id].catalogue_fen
    issued = lines[shop.id]
    assert issued.issued_points == accrual["points"]
    assert issued.issued_fen == accrual["issue_value_fen"]
    assert issued.net_fen == accrual["issue_value_fen"]
    assert issued.catalogue_fen == 0  # the front end is neither paid nor charged
    assert run.zero_sum
    assert run.coalition_fen == issued.issued_fen - 350 - 500 - 100


def _reconciled(client: PartnerClient, day: str, *lines: str) -> tuple[int, int, int]:
    csv = "\n".join(["txn_id,type,amount_fen,points", *lines]) + "\n"
    result = client.post("/v1/reconciliations", {"business_date": day, "csv": csv})
    return result["lines"], result["matched"], result["breaks"]


def test_a_supplier_reconciles_its_orders_and_the_front_end_its_own_day(world: World) -> None:
    shop, mall = world.merchant(), world.merchant()
    as_shop, as_mall = world.client(shop), world.client(mall)
    member = enrol(as_shop)
    bought = buy(as_shop, member, 52_000, txn="T-1")
    mug = _supply(as_mall, kind="goods", points=500, unit_value_fen=420, stock=5)
    kept = as_shop.post(ORDERS, {"reward_id": mug, "member_id": member, "confirm": True})
    sent_back = as_shop.post(ORDERS, {"reward_id": mug, "member_id": member, "confirm": True})
    as_shop.post(f"{ORDERS}/{sent_back['order_id']}/cancel", None)
    today = business_today().isoformat()
    # The supplier's day: two orders confirmed, one of them given back.
    assert _reconciled(
        as_mall,
        today,
        f"{kept['order_id']},reward_order,420,500",
        f"{sent_back['order_id']},reward_order,420,500",
        f"{sent_back['order_id']},reward_return,420,500",
    ) == (3, 3, 0)
    # The front end's day holds its purchase alone: an order's hold is not its redemption.
    assert _reconciled(as_shop, today, f"T-1,purchase,52000,{bought['points']}") == (1, 1, 0)
