"""The points lifecycle's events, from real signed requests and the real jobs to a receiver on
127.0.0.1: points earned and redeemed (to partners that name them), a tier changed and points
expired (to every partner the member is linked to, each with its own customer reference), a
refund that left the member owing points (to the refunding partner), and the reminders of
points about to expire, at each partner's own horizon and once only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from clearinghouse import clock
from clearinghouse.points.expiry import expire_lots
from clearinghouse.points.reminders import remind_expiring
from clearinghouse.points.schemas import (
    PointsEarnedWebhook,
    PointsExpiredWebhook,
    PointsExpiringWebhook,
    PointsRedeemedWebhook,
    PurchaseClawbackWebhook,
    TierChangedWebhook,
)
from clearinghouse.webhooks.worker import process_webhooks
from partners.client import PartnerClient
from tests.builders.calls import buy, purchase_body, redeem, refund
from tests.builders.databases import World
from tests.builders.webhooks import Receiver, add_endpoint, receiver, verified

MODELS: dict[str, Any] = {
    "points.earned": PointsEarnedWebhook,
    "points.redeemed": PointsRedeemedWebhook,
    "points.expiring": PointsExpiringWebhook,
    "points.expired": PointsExpiredWebhook,
    "purchase.clawback": PurchaseClawbackWebhook,
    "tier.changed": TierChangedWebhook,
}


def _events(secret: str, hooks: Receiver) -> list[Any]:
    """What the receiver got, each verified and held to its published model, in `sequence`."""
    bodies = []
    for got in hooks.received:
        bodies.append(verified(secret, got, MODELS[json.loads(got.body)["type"]]))
    return sorted(bodies, key=lambda body: body.sequence)


def _linked(client: PartnerClient, ref: str, member_id: str | None = None) -> str:
    body = {"customer_ref": ref} | ({} if member_id is None else {"member_id": member_id})
    linked: str = client.post("/v1/members", body)["member_id"]
    return linked


def test_earnings_tiers_and_redemptions_reach_every_linked_partner_that_listens(
    world: World,
) -> None:
    shop, cafe = world.merchant(), world.merchant()
    as_shop, as_cafe = world.client(shop), world.client(cafe)
    member = _linked(as_shop, "shop-ann")
    _linked(as_cafe, "cafe-ann", member)
    with receiver() as shop_hooks, receiver() as cafe_hooks:
        _, shop_secret = add_endpoint(
            world.sessions,
            shop.id,
            shop_hooks.url,
            ("points.earned", "points.redeemed", "tier.changed"),
        )
        _, cafe_secret = add_endpoint(
            world.sessions, cafe.id, cafe_hooks.url, ("points.earned", "tier.changed")
        )
        body = purchase_body(member, 1_000_000, store_id=shop.store_id)
        accrual = as_shop.post("/v1/purchases", body)
        spent = redeem(as_shop, member, 300)
        assert process_webhooks(world.sessions) == 5
    assert accrual["tier"] != "normal"

    earned, tier, redeemed = _events(shop_secret, shop_hooks)
    assert (earned.type, tier.type, redeemed.type) == (
        "points.earned",
        "tier.changed",
        "points.redeemed",
    )
    assert earned.data.model_dump(include={"member_id", "customer_ref", "partner_id"}) == {
        "member_id": member,
        "customer_ref": "shop-ann",
        "partner_id": shop.id,
    }
    assert (earned.data.points, earned.data.status, earned.data.reason) == (
        accrual["points"],
        "available",
        "purchase",
    )
    assert (earned.data.partner_txn_id, earned.data.store_id) == (
        body["partner_txn_id"],
        shop.store_id,
    )
    assert earned.data.lot_expires_at == datetime.fromisoformat(accrual["lot_expires_at"])
    assert (tier.data.from_tier, tier.data.to_tier) == ("normal", accrual["tier"])
    assert (redeemed.data.points, redeemed.data.hold_id) == (300, spent["hold_id"])
    assert redeemed.data.value_fen == spent["value_fen"]

    # The other partner hears of the member's earning and tier with its own reference, and
    # reads nothing of the shop's own: not its transaction, nor the redemption it did not ask for.
    cafe_earned, cafe_tier = _events(cafe_secret, cafe_hooks)
    assert cafe_earned.data.customer_ref == cafe_tier.data.customer_ref == "cafe-ann"
    assert cafe_earned.data.partner_id == shop.id
    assert (cafe_earned.data.partner_txn_id, cafe_earned.data.store_id) == (None, None)
    assert cafe_earned.data.entry_id == earned.data.entry_id
    assert cafe_tier.data.to_tier == tier.data.to_tier


def test_a_refund_that_leaves_the_member_owing_is_a_clawback(world: World) -> None:
    shop = world.merchant()
    as_shop = world.client(shop)
    member = _linked(as_shop, "ann")
    bought = buy(as_shop, member, 52_000)
    redeem(as_shop, member, bought["points"])
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, shop.id, hooks.url)
        taken = refund(as_shop, bought["partner_txn_id"], 52_000)
        assert process_webhooks(world.sessions) == 1
    [clawback] = _events(secret, hooks)
    assert clawback.type == "purchase.clawback"
    assert clawback.data.model_dump(exclude={"entry_id"}) == {
        "member_id": member,
        "customer_ref": "ann",
        "partner_txn_id": bought["partner_txn_id"],
        "refund_id": taken["refund_id"],
        "points": bought["points"],
        "from_available": 0,
        "owed_points": bought["points"],
    }


def test_each_partner_is_reminded_at_its_own_horizon_once_then_hears_of_the_expiry(
    world: World, manual_clock: clock.Manual
) -> None:
    shop, cafe = world.merchant(), world.merchant()
    as_shop, as_cafe = world.client(shop), world.client(cafe)
    member = _linked(as_shop, "shop-ann")
    _linked(as_cafe, "cafe-ann", member)
    # The cafe hears 3 days ahead; the shop keeps the default, 14.
    assert as_cafe.put("/v1/partner/expiring-notice", {"days": 3})["expiring_notice_days"] == 3
    assert as_shop.get("/v1/partner")["expiring_notice_days"] == 14
    accrual = buy(as_shop, member, 52_000, occurred_at=manual_clock())
    expires_at = datetime.fromisoformat(accrual["lot_expires_at"])
    with receiver() as shop_hooks, receiver() as cafe_hooks:
        _, shop_secret = add_endpoint(world.sessions, shop.id, shop_hooks.url)
        _, cafe_secret = add_endpoint(world.sessions, cafe.id, cafe_hooks.url)

        manual_clock.set(expires_at - timedelta(days=20))
        assert remind_expiring(world.sessions) == 0
        manual_clock.set(expires_at - timedelta(days=10))
        assert remind_expiring(world.sessions) == 1  # the shop's 14 days; not the cafe's 3
        assert remind_expiring(world.sessions) == 0  # safe to repeat
        manual_clock.set(expires_at - timedelta(days=2))
        assert remind_expiring(world.sessions) == 1  # the cafe's turn; the shop heard already
        manual_clock.set(expires_at + timedelta(seconds=1))
        assert expire_lots(world.sessions).points == accrual["points"]
        assert process_webhooks(world.sessions) == 4

    shop_expiring, shop_expired = _events(shop_secret, shop_hooks)
    cafe_expiring, cafe_expired = _events(cafe_secret, cafe_hooks)
    for expiring, ref, days in ((shop_expiring, "shop-ann", 14), (cafe_expiring, "cafe-ann", 3)):
        assert expiring.type == "points.expiring"
        assert expiring.data.model_dump() == {
            "member_id": member,
            "customer_ref": ref,
            "points": accrual["points"],
            "expires_at": expires_at.astimezone(UTC),
            "notice_days": days,
        }
    for expired, ref in ((shop_expired, "shop-ann"), (cafe_expired, "cafe-ann")):
        assert expired.type == "points.expired"
        assert (expired.data.customer_ref, expired.data.points) == (ref, accrual["points"])
        assert expired.data.lots == 1
    assert shop_expired.data.entry_id == cafe_expired.data.entry_id
