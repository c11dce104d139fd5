"""The rewards catalogue through signed requests: a supplier manages its own rewards (prices,
stock, coupon codes), any partner browses them for its members, and bad input gets a clear
problem and changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from clearinghouse import clock
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.http import refused
from tests.builders.ids import unique_id

COUPON = {
    "kind": "coupon",
    "title_zh": "咖啡券",
    "title_en": "Coffee coupon",
    "points": 800,
    "unit_value_fen": 600,
}


def _supply(client: PartnerClient, **fields: Any) -> dict[str, Any]:
    reward: dict[str, Any] = client.post("/v1/rewards", {**COUPON, **fields})
    return reward


def _browse(client: PartnerClient, **query: Any) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    found: list[dict[str, Any]] = client.get(f"/v1/catalogue?{params}")["rewards"]
    return found


def test_a_supplier_prices_stocks_and_withdraws_its_reward(
    client: PartnerClient, other_client: PartnerClient, partner: Any
) -> None:
    voucher = _supply(
        client,
        kind="voucher",
        title_en="10 yuan voucher",
        title_zh="10元代金券",
        points=1_000,
        unit_value_fen=900,
        stock=5,
        per_member_daily_limit=1,
        cities=["Shanghai", "Hangzhou"],
    )
    reward_id = voucher["reward_id"]
    assert voucher["supplier_id"] == partner.id
    assert (voucher["points"], voucher["price_version"], voucher["stock_left"]) == (1_000, 1, 5)
    assert voucher["cities"] == ["Hangzhou", "Shanghai"]
    assert voucher["status"] == "active"

    later = clock.now() + timedelta(days=1)
    price = client.post(
        f"/v1/rewards/{reward_id}/prices", {"points": 1_200, "effective_from": later.isoformat()}
    )
    assert (price["version"], price["points"]) == (2, 1_200)
    # Not in effect yet: the catalogue still sells it at 1,000.
    [shown] = _browse(other_client, supplier_id=partner.id)
    assert (shown["points"], shown["title_zh"]) == (1_000, "10元代金券")

    assert client.post(f"/v1/rewards/{reward_id}/stock", {"add": 3})["stock_left"] == 8
    assert client.post(f"/v1/rewards/{reward_id}/stock", {"add": -8})["stock_left"] == 0
    refused(409, "stock_exhausted", client.post, f"/v1/rewards/{reward_id}/stock", {"add": -1})
    # Out of stock: out of the catalogue.
    assert _browse(other_client, supplier_id=partner.id) == []
    client.post(f"/v1/rewards/{reward_id}/stock", {"add": 2})

    changed = client.put(f"/v1/rewards/{reward_id}", {"cities": None, "title_en": "Voucher"})
    assert (changed["cities"], changed["title_en"]) == (None, "Voucher")
    withdrawn = client.post(f"/v1/rewards/{reward_id}/withdraw", None)
    assert withdrawn["status"] == "withdrawn"
    assert _browse(other_client, supplier_id=partner.id) == []
    assert [r["reward_id"] for r in client.get("/v1/rewards")][0] == reward_id


def test_coupon_codes_are_the_coupons_stock_and_each_is_uploaded_once(
    client: PartnerClient,
) -> None:
    coupon = _supply(client)
    reward_id = coupon["reward_id"]
    assert coupon["stock_left"] == 0
    codes = [unique_id("code") for _ in range(3)]
    assert client.post(f"/v1/rewards/{reward_id}/codes", {"codes": codes})["stock_left"] == 3
    refused(
        409,
        "duplicate_codes",
        client.post,
        f"/v1/rewards/{reward_id}/codes",
        {"codes": [unique_id("code"), codes[0]]},
    )
    refused(
        409, "duplicate_codes", client.post, f"/v1/rewards/{reward_id}/codes", {"codes": ["A", "A"]}
    )
    # Nothing of a refused upload was kept.
    assert client.get("/v1/rewards")[0]["stock_left"] == 3
    problem = refused(
        422, "validation_error", client.post, f"/v1/rewards/{reward_id}/stock", {"add": 1}
    )
    assert "codes" in problem["detail"]


def test_a_front_end_browses_what_its_member_can_afford_where_they_are(
    client: PartnerClient, other_client: PartnerClient, partner: Any
) -> None:
    cheap = _supply(client, points=500, cities=["Shanghai"], kind="goods", stock=10)
    dear = _supply(client, points=50_000, kind="goods", stock=10)
    member = enrol(other_client)
    earned = buy(other_client, member, 52_000)["points"]
    assert 500 < earned < 50_000
    answer = other_client.get(f"/v1/catalogue?supplier_id={partner.id}&member_id={member}")
    assert answer["member_points"] == earned
    assert [r["reward_id"] for r in answer["rewards"]] == [cheap["reward_id"]]
    both = _browse(other_client, supplier_id=partner.id, kind="goods")
    assert [r["reward_id"] for r in both] == [cheap["reward_id"], dear["reward_id"]]
    assert _browse(other_client, supplier_id=partner.id, kind="goods", city="Beijing") == [dear]
    # A member not linked to the front end is unknown to it.
    refused(404, "member_not_found", client.get, f"/v1/catalogue?member_id={member}")


@pytest.mark.parametrize(
    "fields",
    [
        {"points": 0},
        {"kind": "goods", "stock": -1},
        {"kind": "lottery"},
        {"stock": 5},
        {"title_en": ""},
        {"valid_until": "2020-01-01T00:00:00+00:00"},
        {"unit_value_fen": -1},
    ],
)
def test_bad_rewards_are_refused_and_nothing_is_supplied(
    client: PartnerClient, fields: dict[str, Any]
) -> None:
    before = len(client.get("/v1/rewards"))
    refused(422, "validation_error", client.post, "/v1/rewards", {**COUPON, **fields})
    assert len(client.get("/v1/rewards")) == before


def test_another_partners_reward_cannot_be_changed(
    client: PartnerClient, other_client: PartnerClient
) -> None:
    reward_id = _supply(client, kind="goods", stock=1)["reward_id"]
    path = f"/v1/rewards/{reward_id}"
    refused(404, "reward_not_found", other_client.put, path, {"title_en": "Mine now"})
    refused(404, "reward_not_found", other_client.post, f"{path}/stock", {"add": 100})
    refused(404, "reward_not_found", other_client.post, f"{path}/prices", {"points": 1})
    refused(404, "reward_not_found", other_client.post, f"{path}/withdraw", None)
    [mine] = [r for r in client.get("/v1/rewards") if r["reward_id"] == reward_id]
    assert (mine["title_en"], mine["stock_left"], mine["points"], mine["status"]) == (
        "Coffee coupon",
        1,
        800,
        "active",
    )
    refused(
        422,
        "validation_error",
        client.post,
        f"{path}/prices",
        {"points": 5, "effective_from": "2020-01-01T00:00:00+00:00"},
    )
