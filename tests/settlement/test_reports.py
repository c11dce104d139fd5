"""Reports that explain themselves, through the finance API with bearer tokens: a partner's line
drilled down to its entries (with the rates that valued each), as JSON a page at a time and as
CSV; a partner's settlement advice as a PDF, with its legal name, bank details and due date; the
month view; partners' legal names in the reports."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pypdf import PdfReader
from sqlalchemy import func, select

from clearinghouse.points import holds
from partners import directory
from partners.tables import partner_rates
from settlement import categories
from settlement.reports import DUE_DAYS
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.http import assert_problem
from tests.builders.partners import legal_name
from tests.builders.points import accrue, hold_and_capture, new_member, refund_purchase
from tests.builders.settlement import settle_after_cutoff


def _new_rates(world: World, partner_id: str, issue_price: str, redemption_value: str) -> None:
    """Version 2 of the partner's rates, in force from now on (version 1 before)."""
    with world.sessions() as session, session.begin():
        session.execute(
            partner_rates.insert().values(
                partner_id=partner_id,
                version=2,
                effective_from=select(func.now()).scalar_subquery(),
                earn_rate=Decimal(1),
                issue_price=Decimal(issue_price),
                redemption_value=Decimal(redemption_value),
            )
        )


def _pages(world: World, path: str, headers: dict[str, str], limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = None
    while True:
        query = f"?limit={limit}" + ("" if after is None else f"&after={after}")
        page = world.http.get(f"{path}{query}", headers=headers)
        assert page.status_code == 200, page.text
        found += page.json()["entries"]
        after = page.json()["next"]
        if after is None:
            return found


def test_a_partners_line_drills_down_to_its_entries_valued_by_their_rates(world: World) -> None:
    shop = world.merchant(issue_price="1.37", redemption_value="0.5")
    member = new_member(world.sessions, [shop.id])
    first = accrue(world.sessions, shop.id, member, 52_000)
    # A hold placed under version 1 and captured under version 2 keeps version 1's value.
    with world.sessions() as session, session.begin():
        placed = holds.place_hold(session, shop.id, member, 300, key="drill-down-hold")
    _new_rates(world, shop.id, issue_price="2", redemption_value="0.8")
    with world.sessions() as session, session.begin():
        captured = holds.capture(session, shop.id, placed.id, 300)
    second = accrue(world.sessions, shop.id, member, 10_000)
    # A refund under version 2 of a purchase made under version 1 is valued by version 1.
    refund_purchase(world.sessions, shop.id, first.partner_txn_id, 5_200)
    today = business_today()
    [run] = settle_after_cutoff(world.sessions, today)
    _, as_finance = world.finance()
    path = f"/finance/settlements/{today}/partners/{shop.id}"

    answer = world.http.get(path, headers=as_finance)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["business_date"], body["attempt"], body["state"]) == (
        today.isoformat(),
        1,
        "computed",
    )
    line = body["line"]
    assert line["legal_name"] == legal_name(shop.id)
    entries = _pages(world, path, as_finance, limit=1)
    assert _pages(world, path, as_finance, limit=100) == entries
    assert [e["kind"] for e in entries] == ["accrual", "capture", "accrual", "refund"]
    assert [e["entry_id"] for e in entries] == sorted(e["entry_id"] for e in entries)
    assert [(e["rates_version"], e["issue_price"], e["redemption_value"]) for e in entries] == [
        (1, "1.37", "0.5"),
        (1, "1.37", "0.5"),
        (2, "2", "0.8"),
        (1, "1.37", "0.5"),
    ]
    assert entries[0]["partner_txn_id"] == first.partner_txn_id
    assert entries[0]["value_fen"] == first.issue_value_fen
    assert entries[1]["value_fen"] == captured.value_fen == 150  # 300 points x 0.5
    assert entries[2]["value_fen"] == second.issue_value_fen
    # The entries add up to the line, category by category, and to its net.
    points: Counter[str] = Counter()
    fen: Counter[str] = Counter()
    for entry in entries:
        category = categories.BY_NAME[entry["category"]]
        assert entry["kind"] in category.kinds
        assert entry["net_fen"] == category.sign * entry["value_fen"]
        points[category.name] += entry["points"]
        fen[category.name] += entry["value_fen"]
    for category in categories.CATEGORIES:
        assert line[category.points_column] == points[category.name]
        assert line[category.fen_column] == fen[category.name]
    assert sum(e["net_fen"] for e in entries) == line["net_fen"] == run.lines[0].net_fen

    # The same as CSV, each amount in fen and in yuan.
    exported = world.http.get(f"{path}/entries.csv", headers=as_finance)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["entry_id"]) for row in rows] == [e["entry_id"] for e in entries]
    assert rows[1]["value_fen"] == "150"
    assert rows[1]["value_yuan"] == "1.50"
    for row, entry in zip(rows, entries, strict=True):
        assert (row["business_date"], row["partner_id"]) == (today.isoformat(), shop.id)
        assert row["value_yuan"] == str(Decimal(entry["value_fen"]).scaleb(-2))
        assert row["net_yuan"] == str(Decimal(entry["net_fen"]).scaleb(-2))
        assert (row["rates_version"], row["issue_price"]) == (
            str(entry["rates_version"]),
            entry["issue_price"],
        )

    # A partner without a line, or a date without a run: problems, not empty answers.
    other = world.merchant()
    assert_problem(
        world.http.get(f"/finance/settlements/{today}/partners/{other.id}", headers=as_finance),
        404,
        "settlement_line_not_found",
    )
    unsettled = today + timedelta(days=1)
    assert_problem(
        world.http.get(f"/finance/settlements/{unsettled}/partners/{shop.id}", headers=as_finance),
        404,
        "settlement_not_found",
    )


def _pdf_text(content: bytes) -> str:
    return " ".join(
        " ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(content)).pages
    )


def test_a_partners_settlement_advice_names_it_its_bank_and_the_due_date(world: World) -> None:
    payer = world.merchant(issue_price="1.2")
    receiver = world.merchant(redemption_value="0.9")
    member = new_member(world.sessions, [payer.id, receiver.id])
    earned = accrue(world.sessions, payer.id, member, 52_000)
    captured = hold_and_capture(world.sessions, receiver.id, member, 300, 300)
    with world.sessions() as session, session.begin():
        directory.set_partner_details(
            session,
            payer.id,
            legal_name="Payer Holdings (Shanghai) Co., Ltd.",
            bank_name="Bank of Shanghai",
            bank_account="3100 0000 1111",
        )
    today = business_today()
    settle_after_cutoff(world.sessions, today)
    _, as_finance = world.finance()
    due = (today + timedelta(days=DUE_DAYS)).isoformat()

    advice = world.http.get(
        f"/finance/settlements/{today}/partners/{payer.id}/advice.pdf", headers=as_finance
    )
    assert advice.status_code == 200, advice.text
    assert advice.headers["content-type"] == "application/pdf"
    text = _pdf_text(advice.content)
    assert "Payer Holdings (Shanghai) Co., Ltd." in text
    assert "Bank of Shanghai" in text
    assert "3100 0000 1111" in text
    assert f"Settlement advice — {today}" in text
    pays = f"¥{Decimal(earned.issue_value_fen).scaleb(-2):,}"
    assert f"You pay the clearing house {pays} by {due}." in text

    # The receiver's bank details are not on file yet: the advice says so.
    advice = world.http.get(
        f"/finance/settlements/{today}/partners/{receiver.id}/advice.pdf", headers=as_finance
    )
    text = _pdf_text(advice.content)
    assert legal_name(receiver.id) in text
    assert "not on file" in text
    receives = f"¥{Decimal(captured.value_fen).scaleb(-2):,}"
    assert f"The clearing house pays you {receives} by {due}, to the account above." in text

    # The report names partners by their legal names.
    report = world.http.get(f"/finance/settlements/{today}", headers=as_finance).json()
    assert {line["partner_id"]: line["legal_name"] for line in report["lines"]} == {
        payer.id: "Payer Holdings (Shanghai) Co., Ltd.",
        receiver.id: legal_name(receiver.id),
    }
    other = world.merchant()
    assert_problem(
        world.http.get(
            f"/finance/settlements/{today}/partners/{other.id}/advice.pdf", headers=as_finance
        ),
        404,
        "settlement_line_not_found",
    )


def test_the_month_view_lists_the_months_runs_and_each_partners_net(world: World) -> None:
    payer = world.merchant(issue_price="1.2")
    receiver = world.merchant(redemption_value="0.9")
    member = new_member(world.sessions, [payer.id, receiver.id])
    earned = accrue(world.sessions, payer.id, member, 52_000)
    captured = hold_and_capture(world.sessions, receiver.id, member, 300, 300)
    today = business_today()
    runs = settle_after_cutoff(world.sessions, today)
    _, as_auditor = world.finance("auditor")
    month = f"{today:%Y-%m}"

    answer = world.http.get(f"/finance/settlements/months/{month}", headers=as_auditor)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    in_month = [run for run in runs if f"{run.business_date:%Y-%m}" == month]
    assert body["month"] == month
    assert [r["business_date"] for r in body["runs"]] == [
        run.business_date.isoformat() for run in in_month
    ]
    assert body["partners"] == [
        {"partner_id": p, "legal_name": legal_name(p), "days": 1, "net_fen": net}
        for p, net in sorted(
            [(payer.id, earned.issue_value_fen), (receiver.id, -captured.value_fen)]
        )
    ]
    assert body["partners_pay_fen"] == earned.issue_value_fen
    assert body["partners_receive_fen"] == captured.value_fen
    assert body["coalition_fen"] == sum(run.coalition_fen for run in in_month)
    assert body["previous"] < month < body["following"]

    empty = world.http.get("/finance/settlements/months/2001-01", headers=as_auditor).json()
    assert (empty["runs"], empty["partners"], empty["coalition_fen"]) == ([], [], 0)
    for bad in ("2026-13", "2026-1", "0000-01", "9999-12"):
        refused = world.http.get(f"/finance/settlements/months/{bad}", headers=as_auditor)
        assert refused.status_code == 422, (bad, refused.text)
