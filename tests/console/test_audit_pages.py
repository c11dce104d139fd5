"""The ledger and its seals in the console (the trial balance, an account's entries, the blocks
and how far they reach), fraud cases in words and in the console's time zone, readable pages
for addresses that name nothing, and the settlement table on a phone."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from clearinghouse import ledger
from clearinghouse.audit import sealing
from clearinghouse.console import pages
from clearinghouse.console.formatting import local_time
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.rules import Attempt
from clearinghouse.ledger.tables import journal_entries
from tests.builders.console import Console
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.fraud import publish
from tests.builders.points import accrue, new_member
from tests.builders.settlement import a_day_of_traffic, settle_after_cutoff
from tests.builders.users import person

Browser = Callable[..., Console]
CSS = Path(pages.STATIC / "console.css").read_text()


def signed_in(browser: Browser, world: World, role: str) -> Console:
    console = browser()
    assert console.sign_in(person(world.sessions, role)).status_code == 303
    return console


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_an_auditor_reads_the_ledger_an_accounts_entries_and_the_seals(
    world: World, browser: Browser
) -> None:
    partner = world.merchant()
    member_id = new_member(world.sessions, [partner.id])
    first = accrue(world.sessions, partner.id, member_id, 52_000)
    second = accrue(world.sessions, partner.id, member_id, 10_000)
    member = str(ledger.Address.member(member_id))
    auditor = signed_in(browser, world, "auditor")

    page = auditor.get("/console/ledger")
    assert page.status_code == 200
    assert f'href="/console/ledger/{member}"' in page.text
    shown = text_of(page.text)
    with world.sessions() as session:
        for total in ledger.trial_balance(session):
            assert total.net == 0
        issued = ledger.balance(session, f"partner:{partner.id}:issued")
    assert f"{member} available PTS {first.points + second.points:,}" in shown
    assert f"partner:{partner.id}:issued issued PTS {-issued:,}" in shown
    assert 'href="/console/ledger"' in page.text  # in the navigation
    # As it stood when the first purchase was recorded, picked in the coalition's local time.
    with world.sessions() as session:
        recorded = session.execute(
            select(journal_entries.c.recorded_at).where(journal_entries.c.id == first.entry_id)
        ).scalar_one()
    local = recorded.astimezone(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    then = text_of(auditor.get(f"/console/ledger?at={local.isoformat()}").text)
    assert f"{member} available PTS {first.points:,} " in then
    assert f"The trial balance at {local_time(recorded)}" in then

    statement = auditor.get(f"/console/ledger/{member}")
    assert statement.status_code == 200
    lines = text_of(statement.text)
    total = first.points + second.points
    assert f"{first.entry_id} accrual {first.points:,} {first.points:,}" in lines
    assert f"{second.entry_id} accrual {second.points:,} {total:,}" in lines
    assert "CST" in lines  # times in the console's zone
    unknown = auditor.get("/console/ledger/member:nobody:available")
    assert unknown.status_code == 404
    assert "nobody" in unknown.text

    # Nothing sealed yet: the page says so, and what waits.
    seals = text_of(auditor.get("/console/seals").text)
    assert "Nothing is sealed yet." in seals
    assert "entries wait to be sealed; the oldest, entry" in seals
    blocks = sealing.seal_all(world.sessions, delay=timedelta(0))
    seals_page = auditor.get("/console/seals")
    seals = text_of(seals_page.text)
    newest = blocks[-1]
    assert newest.block_hash.hex() in seals
    assert newest.merkle_root.hex() in seals
    assert f"Sealed up to entry {second.entry_id}" in seals
    assert "Every entry written is sealed." in seals
    assert f"{newest.number} {local_time(newest.sealed_at)}" in seals
    # An entry: its postings, what was recorded with it, and the block that seals it.
    assert f'href="/console/entries/{first.entry_id}"' in statement.text
    entry = auditor.get(f"/console/entries/{first.entry_id}")
    assert entry.status_code == 200
    shown = text_of(entry.text)
    assert f"{member} PTS {first.points:,}" in shown
    assert f"partner:{partner.id}:issued PTS -{first.points:,}" in shown
    assert "amount_fen 52000" in shown
    assert "Sealed block 1" in shown  # the first block sealed all there was
    assert auditor.get("/console/entries/999999999").status_code == 404
    # Finance people may look too; operators may not.
    assert signed_in(browser, world, "finance").get("/console/seals").status_code == 200
    assert signed_in(browser, world, "operator").get("/console/ledger").status_code == 403


def test_every_field_of_an_attempt_has_words() -> None:
    assert {f.name for f in dataclasses.fields(Attempt)} == set(pages.ATTEMPT_FIELDS)


def test_a_fraud_case_is_shown_in_words_and_in_the_consoles_time_zone(
    world: World, browser: Browser
) -> None:
    partner = world.merchant()
    publish(world.sessions, partner.id, max_accrual_fen_online=10_000, amount_cap_action="review")
    member_id = new_member(world.sessions, [partner.id])
    # 17:05 UTC yesterday is 01:05 today in Shanghai, the console's zone.
    occurred = datetime.now(UTC).replace(hour=17, minute=5, second=0, microsecond=0) - timedelta(
        days=1
    )
    shanghai = occurred.astimezone(ZoneInfo("Asia/Shanghai"))
    accrued = accrue(world.sessions, partner.id, member_id, 52_000, occurred_at=occurred)
    case_id = accrued.review_case_id
    assert case_id is not None
    operator = signed_in(browser, world, "operator")

    queue = operator.get("/console/cases")
    assert '<td class="wrap why">' in queue.text  # the reasons wrap in their column
    assert "td.why" in CSS
    assert "td.wrap" in CSS

    case = operator.get(f"/console/cases/{case_id}")
    shown = text_of(case.text)
    assert f"Occurred {shanghai:%Y-%m-%d} 01:05 CST" in shown
    assert "Amount ¥520.00" in shown
    assert f"Points {accrued.points:,}" in shown
    assert "Operation accrual" in shown
    for raw in ("occurred_at", "amount_fen", "points_already_spent", "+00:00", "debt_after"):
        assert raw not in case.text
    with world.sessions() as session:
        assert fraud.get_case(session, case_id).attempt["occurred_at"] == occurred.isoformat()


def test_an_address_that_names_nothing_is_a_readable_page(world: World, browser: Browser) -> None:
    finance = signed_in(browser, world, "finance")
    not_a_date = finance.get("/console/settlements/not-a-date")
    assert not_a_date.status_code == 404
    assert "text/html" in not_a_date.headers["content-type"]
    shown = text_of(not_a_date.text)
    assert "Not found" in shown
    assert "The business date “not-a-date” is not valid" in shown
    assert "a date written YYYY-MM-DD" in shown
    assert "Input should be" not in shown  # pydantic's own words stay out
    bad_query = finance.get("/console/reconciliations?date=yesterday")
    assert bad_query.status_code == 400
    assert "Check the address" in bad_query.text
    assert "Input should be" not in bad_query.text
    assert finance.get("/console/seals?before=0").status_code == 400


def test_on_a_phone_who_pays_and_who_receives_stay_in_view(world: World, browser: Browser) -> None:
    a_day_of_traffic(world)
    day = business_today()
    settle_after_cutoff(world.sessions, day)
    page = signed_in(browser, world, "finance").get(f"/console/settlements/{day}")
    table = re.search(r'<table class="lines">(.*?)</table>', page.text, flags=re.DOTALL)
    assert table is not None
    rows = re.findall(r"<tr>(.*?)</tr>", table[1], flags=re.DOTALL)
    assert len(rows) >= 4  # the head, the partners, the totals and the coalition's line
    for row in rows:
        cells = re.findall(r'<t[hd][^>]*class="([^"]*)"', row)
        assert "col-net" in cells[-1] or ("col-pays" in cells[-2] and "col-receives" in cells[-1])
    phone = CSS[CSS.index("@media (max-width: 40rem)") :]
    phone = phone[: phone.index("\n}\n")]
    assert re.search(
        r"table\.lines \.col-pays, table\.lines \.col-receives[^{]*\{[^}]*sticky", phone
    )
    assert re.search(r"table\.lines th\[scope=\"row\"\] \{[^}]*sticky", phone)
    assert re.search(r"table\.lines \.col-receives, table\.lines \.col-net \{ right: 0; \}", phone)
