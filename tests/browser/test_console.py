"""A finance team's morning, in a real browser: find yesterday's settlement, see who pays whom,
approve it with a colleague and download the report; and the doors that stay shut."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from clearinghouse.console.formatting import yuan
from settlement import runs
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.partners import legal_name
from tests.builders.points import accrue, hold_and_capture, new_member
from tests.builders.settlement import settle_after_cutoff
from tests.builders.users import Person, person

SCREEN = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def busy_day(world: World) -> runs.Run:
    """Three merchants: four members earn at the first or the last and spend at the middle one,
    which therefore receives while the others pay; settled."""
    shops = [
        world.merchant(issue_price=price, redemption_value=value)
        for price, value in (("1.2", "1"), ("1", "0.9"), ("1.1", "1"))
    ]
    for n in range(4):
        member = new_member(world.sessions, [shop.id for shop in shops])
        accrue(world.sessions, shops[2 * (n % 2)].id, member, 523_400 + n * 98_765)
        hold_and_capture(world.sessions, shops[1].id, member, 900, 900)
    (run,) = settle_after_cutoff(world.sessions, business_today())
    return run


def sign_in(page: Page, server: str, who: Person) -> None:
    page.goto(f"{server}/console/settlements")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    page.get_by_label("Name").fill(who.id)
    page.get_by_label("Password").fill(who.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server}/console/settlements")


def fits_the_viewport(page: Page) -> bool:
    """Nothing pushes the page sideways: wide tables scroll inside their own box."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_two_colleagues_approve_yesterdays_settlement_and_download_it(
    world: World, server: str, chromium: Browser, screenshots: list[Path]
) -> None:
    run = busy_day(world)
    day = run.business_date
    alice = person(world.sessions, "finance")
    bob = person(world.sessions, "approver")

    first = chromium.new_context(viewport=SCREEN, accept_downloads=True)
    page = first.new_page()
    sign_in(page, server, alice)
    page.get_by_role("link", name=day.isoformat()).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Settlement {day}")
    for line in run.lines:
        row = page.get_by_role("row").filter(has_text=legal_name(line.partner_id))
        side = "td.pays" if line.net_fen > 0 else "td.receives"
        expect(row.locator(side)).to_have_text(yuan(abs(line.net_fen)))
    expect(page.locator("#zero-sum")).to_contain_text("Zero-sum check passed")
    expect(page.locator("figure.chart svg")).to_be_visible()
    assert fits_the_viewport(page)
    for folder in screenshots:
        page.screenshot(path=folder / "console-settlement.png", full_page=True)
    assert (screenshots[0] / "console-settlement.png").stat().st_size > 10_000

    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_have_text("Your approval is recorded.")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == f"settlement-{day}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    net_by_partner = {row["partner_id"]: int(row["net_fen"]) for row in rows}
    assert {line.partner_id: line.net_fen for line in run.lines}.items() <= net_by_partner.items()

    # Bob's browser runs no script at all: the console needs none.
    second = chromium.new_context(viewport=PHONE, java_script_enabled=False)
    other = second.new_page()
    sign_in(other, server, bob)
    other.get_by_role("link", name=day.isoformat()).click()
    assert fits_the_viewport(other)
    other.get_by_role("button", name="Approve").click()
    expect(other.locator("h1 .state")).to_have_text("approved")
    expect(other.locator(".approvals li")).to_have_count(2)

    page.reload()
    expect(page.locator("h1 .state")).to_have_text("approved")
    first.close()
    second.close()


def test_a_finance_user_cannot_reach_operator_pages(
    world: World, server: str, chromium: Browser
) -> None:
    finance = person(world.sessions, "finance")
    context = chromium.new_context(viewport=SCREEN)
    page = context.new_page()
    sign_in(page, server, finance)
    expect(page.get_by_role("link", name="Fraud review")).to_have_count(0)
    response = page.goto(f"{server}/console/cases")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("this needs the role operator")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{server}/console/sign-in")
    page.goto(f"{server}/console/settlements")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    context.close()
