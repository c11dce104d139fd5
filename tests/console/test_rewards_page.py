"""The operators' rewards page, on rewards supplied and ordered through the services: every
reward with its supplier, price, value, stock and validity, the latest orders, and stock moved
and a reward withdrawn from the page (CSRF-protected, operators only)."""

from __future__ import annotations

import uuid

import pytest

from clearinghouse.database import unit_of_work
from clearinghouse.rewards import orders, service
from clearinghouse.rewards.service import Reward, RewardSpec
from tests.builders.console import console_language
from tests.builders.databases import World
from tests.builders.points import accrue, new_member
from tests.builders.users import person
from tests.console.test_pages import Browser, signed_in, text_of
from tests.console.test_webhooks_page import table

PAGE = "/console/rewards"
STOCK = "/console/rewards/stock"
WITHDRAW = "/console/rewards/withdraw"


def supply(
    world: World,
    supplier_id: str,
    kind: str,
    *,
    title_zh: str = "电影票",
    title_en: str = "Cinema ticket",
    points: int = 500,
    unit_value_fen: int = 400,
    stock: int | None = None,
) -> Reward:
    spec = RewardSpec(kind, title_zh, title_en, unit_value_fen, points, stock=stock)
    with unit_of_work(world.sessions) as session:
        return service.create_reward(session, supplier_id, spec)


def reward_now(world: World, reward_id: str) -> Reward:
    with unit_of_work(world.sessions) as session:
        return service.get_reward(session, reward_id)


def test_an_operator_sees_the_catalogue_and_orders_moves_stock_and_withdraws(
    world: World, browser: Browser
) -> None:
    shop, cinema, cafe = world.merchant(), world.merchant(), world.merchant()
    coupon = supply(world, cinema.id, "coupon", points=400, unit_value_fen=350)
    with unit_of_work(world.sessions) as session:
        service.upload_codes(session, cinema.id, coupon.id, ["FILM-1", "FILM-2"])
    voucher = supply(
        world,
        cafe.id,
        "voucher",
        title_zh="咖啡券",
        title_en="Coffee voucher",
        points=300,
        unit_value_fen=123_456,
        stock=5,
    )
    mug = supply(world, cafe.id, "goods", title_zh="马克杯", title_en="Mug", points=700)
    member = new_member(world.sessions, [shop.id])
    accrue(world.sessions, shop.id, member, 52_000)
    with unit_of_work(world.sessions) as session:
        reserved = orders.place_order(session, shop.id, member, coupon.id, 1, key=str(uuid.uuid4()))
        confirmed = orders.place_order(
            session, shop.id, member, voucher.id, 2, key=str(uuid.uuid4()), confirm=True
        )

    operator = signed_in(browser, person(world.sessions, "operator"))
    page = operator.get(PAGE)
    assert page.status_code == 200
    assert f'href="{PAGE}"' in page.text
    rewards = table(page.text, "rewards")
    assert (
        f"Partner {cafe.id} {cafe.id} voucher Coffee voucher {voucher.id} 300 ¥1,234.56 3 active"
        in rewards
    )
    assert f"Partner {cafe.id} {cafe.id} goods Mug {mug.id} 700 ¥4.00 unlimited active" in rewards
    assert f"coupon Cinema ticket {coupon.id} 400 ¥3.50 1 active" in rewards
    assert "电影票" not in rewards
    # Stock moves on a limited stock only: a coupon's is its codes, an unlimited one has none.
    assert page.text.count('name="units"') == 1
    assert page.text.count(f'name="reward_id" value="{voucher.id}"') == 2
    latest = table(page.text, "orders")
    # Newest first: the voucher was ordered after the coupon.
    assert latest.index(confirmed.id) < latest.index(reserved.id)
    assert (
        f"{confirmed.id} Partner {shop.id} {shop.id} {member} Coffee voucher {voucher.id}"
        f" 2 600 ¥2,469.12 confirmed" in latest
    )
    assert f"{member} Cinema ticket {coupon.id} 1 400 ¥3.50 reserved" in latest

    added = operator.follow(operator.post(STOCK, reward_id=voucher.id, units="4"))
    assert "The reward&#39;s stock is changed." in added.text
    assert "¥1,234.56 7 active" in table(added.text, "rewards")
    taken = operator.follow(operator.post(STOCK, reward_id=voucher.id, units="-7"))
    assert "¥1,234.56 0 active" in table(taken.text, "rewards")
    too_many = operator.post(STOCK, reward_id=voucher.id, units="-1")
    assert too_many.status_code == 409
    assert "Not enough stock" in too_many.text
    unlimited = operator.post(STOCK, reward_id=mug.id, units="1")
    assert unlimited.status_code == 422
    assert "unlimited stock" in unlimited.text
    assert reward_now(world, voucher.id).stock_left == 0

    withdrawn = operator.follow(operator.post(WITHDRAW, reward_id=mug.id))
    assert "The reward is withdrawn: it can no longer be ordered." in withdrawn.text
    assert f"Mug {mug.id} 700 ¥4.00 unlimited withdrawn" in table(withdrawn.text, "rewards")
    assert withdrawn.text.count(f'name="reward_id" value="{mug.id}"') == 0
    assert reward_now(world, mug.id).status == "withdrawn"


def test_the_page_is_in_chinese_when_the_console_is(world: World, browser: Browser) -> None:
    shop, cinema = world.merchant(), world.merchant()
    voucher = supply(world, cinema.id, "voucher", stock=3)
    member = new_member(world.sessions, [shop.id])
    accrue(world.sessions, shop.id, member, 52_000)
    with unit_of_work(world.sessions) as session:
        orders.place_order(
            session, shop.id, member, voucher.id, 1, key=str(uuid.uuid4()), confirm=True
        )
    operator = signed_in(browser, person(world.sessions, "operator"))
    with console_language("zh_CN"):
        page = operator.get(PAGE)
    assert "<h1>积分商城</h1>" in page.text
    assert f"代金券 电影票 {voucher.id}" in table(page.text, "rewards")
    assert f"电影票 {voucher.id} 1 500 ¥4.00 已确认" in table(page.text, "orders")
    assert "Cinema ticket" not in page.text


def test_an_empty_catalogue_says_so(world: World, browser: Browser) -> None:
    operator = signed_in(browser, person(world.sessions, "operator"))
    page = text_of(operator.get(PAGE).text)
    assert "No partner supplies a reward." in page
    assert "No reward has been ordered." in page


@pytest.mark.parametrize("role", ["finance", "approver", "auditor"])
def test_only_operators_see_the_page(world: World, browser: Browser, role: str) -> None:
    console = signed_in(browser, person(world.sessions, role))
    refused = console.get(PAGE)
    assert refused.status_code == 403
    assert "this needs the role operator" in refused.text
    assert f'href="{PAGE}"' not in console.follow(console.get("/console/")).text


def test_stock_and_withdrawal_need_an_operators_form_token(world: World, browser: Browser) -> None:
    voucher = supply(world, world.merchant().id, "voucher", stock=5)
    operator = signed_in(browser, person(world.sessions, "operator"))
    operator.get(PAGE)
    for token in ("", "forged"):
        for path, fields in ((STOCK, {"units": "-5"}), (WITHDRAW, {})):
            refused = operator.post(path, reward_id=voucher.id, csrf_token=token, **fields)
            assert refused.status_code == 403
            assert "The form has expired" in refused.text
    finance = signed_in(browser, person(world.sessions, "finance"))
    finance.get("/console/settlements")
    for path, fields in ((STOCK, {"units": "-5"}), (WITHDRAW, {})):
        refused = finance.post(path, reward_id=voucher.id, **fields)
        assert refused.status_code == 403
        assert "this needs the role operator" in refused.text
    unchanged = reward_now(world, voucher.id)
    assert (unchanged.stock_left, unchanged.status) == (5, "active")
