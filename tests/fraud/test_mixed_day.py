"""A realistic day in one city raises no false alarm: thirty members shop at three partners'
tills and web shops, spend some of their points hours later at other stores, and bring a couple
of things back. Not one case is opened, and the books balance."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from tests.builders.calls import buy, capture, enrol, hold, link, redeem, refund, view
from tests.builders.fraud import (
    SHANGHAI,
    SHANGHAI_EAST,
    SHANGHAI_WEST,
    assert_books_balanced,
    cases_at,
)
from tests.builders.http import client_for
from tests.builders.partners import ApiPartner, add_store, make_partner
from tests.builders.points import wallet_of


@dataclass
class Shop:
    partner: ApiPartner
    client: PartnerClient
    stores: list[str]
    busy_store: str


@dataclass
class Shopper:
    id: str
    shops: list[int]
    visits: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(shop, store, partner_txn_id, amount_fen) of each purchase."""


def _open_shops(sessions: sessionmaker[Session], http: TestClient) -> list[Shop]:
    shops = []
    for places in ((SHANGHAI, SHANGHAI_EAST), (SHANGHAI_EAST, SHANGHAI_WEST), (SHANGHAI_WEST,)):
        partner = make_partner(sessions)
        tills = [add_store(sessions, partner.id, at=place) for place in places]
        web = add_store(sessions, partner.id, channel="online", city=None)
        # The store every partner is created with: a till in Shanghai, off the map.
        stores = [partner.store_id, *tills, web]
        shops.append(Shop(partner, client_for(partner, http), stores, tills[0]))
    return shops


def test_a_busy_ordinary_day_opens_no_case(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    rng = random.Random(20261125)
    shops = _open_shops(sessions, http)
    now = datetime.now(UTC)

    shoppers = []
    for _ in range(30):
        home = rng.randrange(3)
        shopper = Shopper(enrol(shops[home].client), [home])
        for other in rng.sample([i for i in range(3) if i != home], rng.randrange(3)):
            link(shops[other].client, shopper.id)
            shopper.shops.append(other)
        shoppers.append(shopper)

    # Purchases of 10 to 500 yuan through the day (reported as they happened, earliest first),
    # a third of them at the first partner's busiest till.
    visits = []
    for shopper in shoppers:
        for _ in range(rng.randint(2, 4)):
            if 0 in shopper.shops and rng.random() < 0.33:
                shop, store = 0, shops[0].busy_store
            else:
                shop = rng.choice(shopper.shops)
                store = rng.choice(shops[shop].stores)
            minutes = rng.randint(60, 12 * 60)
            visits.append((now - timedelta(minutes=minutes), shopper, shop, store))
    visits.sort(key=lambda visit: visit[0])
    for occurred_at, shopper, shop, store in visits:
        amount = rng.randint(1_000, 50_000)
        accrual = buy(
            shops[shop].client, shopper.id, amount, store_id=store, occurred_at=occurred_at
        )
        assert accrual["review_case_id"] is None, accrual
        shopper.visits.append((shop, store, accrual["partner_txn_id"], amount))
    assert sum(1 for v in visits if v[3] == shops[0].busy_store) > 20  # the outlier rule judged

    # Hours later, a dozen members spend some points at one of their partners' stores where they
    # did not shop today; one changes her mind at the counter first.
    spenders = rng.sample(shoppers, 12)
    redemptions = 0
    for n, shopper in enumerate(spenders):
        shop = rng.choice(shopper.shops)
        visited = {store for _, store, _, _ in shopper.visits}
        unvisited: list[str | None] = [s for s in shops[shop].stores if s not in visited]
        where = rng.choice(unvisited or [None])
        points = min(
            view(shops[shop].client, shopper.id)["available_points"], rng.randint(100, 1_500)
        )
        if points < 100:
            continue
        client = shops[shop].client
        if n == 0:
            first = hold(client, shopper.id, points, store_id=where)
            client.post(f"/v1/holds/{first['hold_id']}/void", {})
            second = hold(client, shopper.id, points, store_id=where)
            assert capture(client, second["hold_id"])["state"] == "captured"
        else:
            assert redeem(client, shopper.id, points, store_id=where)["state"] == "captured"
        redemptions += 1
    assert redemptions >= 10

    # Two members who spent nothing bring part of a purchase back.
    savers = [s for s in shoppers if s not in spenders]
    for shopper in savers[:2]:
        shop, _, txn, amount = shopper.visits[0]
        assert refund(shops[shop].client, txn, amount // 3)["to_debt"] == 0

    assert cases_at(sessions, [shop.partner.id for shop in shops]) == []
    assert all(wallet_of(sessions, s.id)[2] == 0 for s in shoppers)
    assert_books_balanced(sessions)
