"""The finance routes with bearer tokens: computed -> approved (two different people) -> paid,
rejection (the CNY entry reversed, attempt 2 computed anew), the history of every change, who may
call them; the settlement report as JSON and CSV; the liability report, its lines (held, pending
review, owed) and breakage, reconciled to issued - redeemed - expired."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import select, text

from clearinghouse import ledger
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import accrual, holds
from clearinghouse.points.expiry import expire_lots
from partners import limits
from settlement import approval, runs
from settlement.reports import LINE_COLUMNS, liability_report
from settlement.tables import settlement_approvals, settlement_runs
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.fraud import publish
from tests.builders.http import PROBLEM_JSON, assert_problem, own_client
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.partners import legal_name
from tests.builders.points import accrue, hold_and_capture, new_member, refund_purchase
from tests.builders.settlement import a_day_of_traffic, count, settle_after_cutoff


def _run_entry(world: World, run_id: int) -> int:
    with world.sessions() as session:
        entry_id: int = session.execute(
            select(settlement_runs.c.entry_id).where(settlement_runs.c.id == run_id)
        ).scalar_one()
    return entry_id


def _legs(world: World, entry_id: int) -> Counter[tuple[str, int]]:
    with world.sessions() as session:
        return Counter((p.address, p.amount) for p in ledger.entry_postings(session, entry_id))


def _nets(legs: Counter[tuple[str, int]]) -> Counter[tuple[str, int]]:
    """The legs that carry the partners' nets: payables and the clearing account."""
    return Counter(
        {
            (address, amount): n
            for (address, amount), n in legs.items()
            if address == runs.CLEARING or address.endswith(":payable")
        }
    )


def test_reject_approve_twice_and_pay_through_the_finance_api(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    path = f"/finance/settlements/{today}"
    [first] = settle_after_cutoff(world.sessions, today)
    alice, as_alice = world.finance("finance")
    bob, as_bob = world.finance("approver")
    _carol, as_carol = world.finance("finance")

    # Rejected: its CNY entry is reversed by an entry naming it; the date has no live run.
    rejected = world.http.post(f"{path}/reject", json={"reason": "wrong rates"}, headers=as_alice)
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["state"], rejected.json()["attempt"]) == ("rejected", 1)
    original = _run_entry(world, first.id)
    with world.sessions() as session:
        reversal = session.execute(
            select(journal_entries.c.id, journal_entries.c.kind).where(
                journal_entries.c.reverses_id == original
            )
        ).one()
    assert reversal.kind == "settlement_reversal"
    assert _nets(_legs(world, reversal.id)) == Counter(
        {(address, -amount): n for (address, amount), n in _nets(_legs(world, original)).items()}
    )
    assert balance(world.sessions, f"partner:{traffic.payer.id}:payable") == 0
    assert_problem(world.http.get(path, headers=as_alice), 404, "settlement_not_found")

    # Settled again: attempt 2, the same entries and totals.
    [second] = settle_after_cutoff(world.sessions, today)
    assert (second.attempt, second.state, second.entries) == (2, "computed", first.entries)
    assert [asdict(line) for line in second.lines] == [asdict(line) for line in first.lines]
    assert second.coalition_fen == first.coalition_fen
    assert world.http.get(path, headers=as_alice).json()["attempt"] == 2

    # Paid needs approved; approved needs two different people.
    early = world.http.post(f"{path}/paid", json={"bank_reference": "B-1"}, headers=as_alice)
    assert_problem(early, 409, "settlement_state")
    once = world.http.post(f"{path}/approve", headers=as_alice)
    assert once.status_code == 200, once.text
    assert once.json()["state"] == "computed"
    assert [a["user"] for a in once.json()["approvals"]] == [alice]
    twice = world.http.post(f"{path}/approve", headers=as_alice)
    assert_problem(twice, 409, "four_eyes")
    assert count(world.sessions, settlement_approvals) == 1
    approved = world.http.post(f"{path}/approve", headers=as_bob)
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    assert approved.json()["warnings"] == []
    assert [a["user"] for a in approved.json()["approvals"]] == [alice, bob]
    assert_problem(world.http.post(f"{path}/approve", headers=as_carol), 409, "settlement_state")

    # Paid needs a bank reference.
    missing = world.http.post(f"{path}/paid", json={"bank_reference": ""}, headers=as_alice)
    assert_problem(missing, 422, "validation_error")
    blank = world.http.post(f"{path}/paid", json={"bank_reference": "   "}, headers=as_alice)
    assert_problem(blank, 409, "settlement_state")
    paid = world.http.post(
        f"{path}/paid", json={"bank_reference": "CMB-20261126-001"}, headers=as_alice
    )
    assert paid.status_code == 200, paid.text
    assert (paid.json()["state"], paid.json()["bank_reference"]) == ("paid", "CMB-20261126-001")
    for line in second.lines:
        assert balance(world.sessions, f"partner:{line.partner_id}:payable") == 0
    assert balance(world.sessions, approval.BANK) == second.partners_net_fen
    assert_problem(
        world.http.post(f"{path}/reject", json={"reason": "too late"}, headers=as_bob),
        409,
        "settlement_state",
    )

    # Every change, with who made it and when.
    history = world.http.get(path, headers=as_carol).json()["history"]
    assert [(h["attempt"], h["from"], h["to"], h["user"]) for h in history] == [
        (1, None, "computed", None),
        (1, "computed", "rejected", alice),
        (2, None, "computed", None),
        (2, "computed", "computed", alice),
        (2, "computed", "approved", bob),
        (2, "approved", "paid", alice),
    ]
    times = [datetime.fromisoformat(h["at"]) for h in history]
    assert times == sorted(times)
    assert history[1]["note"] == "wrong rates"
    assert history[-1]["note"] == "CMB-20261126-001"

    summaries = world.http.get("/finance/settlements", headers=as_bob).json()
    assert [(s["business_date"], s["state"], s["attempt"]) for s in summaries["settlements"]] == [
        (today.isoformat(), "paid", 2)
    ]
    assert summaries["next"] is None


def test_finance_routes_need_a_finance_or_approver_token_and_auditors_read(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    settle_after_cutoff(world.sessions, today)
    path = f"/finance/settlements/{today}"
    _, as_auditor = world.finance("auditor")
    _, as_operator = world.finance("operator")
    reads = [
        "/finance/settlements",
        path,
        f"{path}/report.csv",
        f"{path}/partners/{traffic.payer.id}",
        f"{path}/partners/{traffic.payer.id}/entries.csv",
        f"{path}/partners/{traffic.payer.id}/advice.pdf",
        f"/finance/settlements/months/{today:%Y-%m}",
        "/finance/liability",
    ]
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        *(("GET", url, None) for url in reads),
        ("POST", f"{path}/approve", None),
        ("POST", f"{path}/reject", {"reason": "no"}),
        ("POST", f"{path}/paid", {"bank_reference": "B-1"}),
        ("POST", "/finance/reconciliations/1/resolve", None),
    ]
    anonymous: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer cht_not-a-token"},
    ]
    for method, url, body in calls:
        # From an address of its own each time: 32 failures from one would be rate limited.
        stranger = own_client(world.http.app)
        for headers in anonymous:
            response = stranger.request(method, url, json=body, headers=headers)
            assert_problem(response, 401, "not_signed_in")
        refused = [as_operator] if method == "GET" else [as_auditor, as_operator]
        for headers in refused:
            response = world.http.request(method, url, json=body, headers=headers)
            assert response.headers["content-type"] == PROBLEM_JSON
            assert_problem(response, 403, "forbidden")
    # An auditor reads every report the finance team reads, and changes nothing.
    for url in reads:
        read = world.http.get(url, headers=as_auditor)
        assert read.status_code == 200, (url, read.text)
    with world.sessions() as session:
        assert session.execute(select(settlement_runs.c.state)).scalars().all() == ["computed"]
    assert count(world.sessions, settlement_approvals) == 0


def test_the_settlement_report_as_json_and_csv(world: World) -> None:
    traffic = a_day_of_traffic(world)
    third = world.merchant(issue_price="1.37", redemption_value="0.5")
    member_id = new_member(world.sessions, [third.id])
    accrue(world.sessions, third.id, member_id, 12_345)
    today = business_today()
    [run] = settle_after_cutoff(world.sessions, today)
    _, as_finance = world.finance()

    report = world.http.get(f"/finance/settlements/{today}", headers=as_finance)
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["business_date"], body["state"]) == (today.isoformat(), "computed")
    assert body["attempt"] == 1
    assert body["entries"] == 3
    assert body["zero_sum"] is True
    assert body["late_arrivals"] == []  # every entry occurred on the day it was recorded
    lines = body["lines"]
    assert [line["partner_id"] for line in lines] == sorted(
        [traffic.payer.id, traffic.receiver.id, third.id]
    )
    for line in lines:
        assert line["net_fen"] == (
            line["issued_fen"]
            - line["reversed_fen"]
            - line["redeemed_fen"]
            + line["redemption_refunded_fen"]
            + line["exchange_in_fen"]
            - line["exchange_out_fen"]
            - line["catalogue_fen"]
            + line["catalogue_returned_fen"]
        )
    assert body["totals"] == {c: sum(line[c] for line in lines) for c in LINE_COLUMNS[1:]}
    assert body["coalition_fen"] == body["totals"]["net_fen"] == run.coalition_fen
    assert body["partners_pay_fen"] - body["partners_receive_fen"] == body["coalition_fen"]
    assert body["partners_receive_fen"] == traffic.redeemed_fen
    by_partner = {line["partner_id"]: line for line in lines}
    assert by_partner[traffic.payer.id]["issued_fen"] == traffic.issued_fen
    assert by_partner[traffic.receiver.id]["net_fen"] == -traffic.redeemed_fen

    exported = world.http.get(f"/finance/settlements/{today}/report.csv", headers=as_finance)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    assert f"settlement-{today}.csv" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    header = exported.text.splitlines()[0].split(",")
    # Each fen column has its yuan beside it.
    amounts = list(LINE_COLUMNS[1:])
    assert header == [
        "business_date",
        "partner_id",
        "legal_name",
        *(
            name
            for column in amounts
            for name in (
                [column, column.removesuffix("_fen") + "_yuan"]
                if column.endswith("_fen")
                else [column]
            )
        ),
    ]
    assert all(row["business_date"] == today.isoformat() for row in rows)
    partner_rows, total, revenue = rows[:-2], rows[-2], rows[-1]
    assert [row["partner_id"] for row in partner_rows] == [line["partner_id"] for line in lines]
    assert [row["legal_name"] for row in partner_rows] == [
        legal_name(line["partner_id"]) for line in lines
    ]
    assert [line["legal_name"] for line in lines] == [row["legal_name"] for row in partner_rows]
    for row, line in zip(partner_rows, lines, strict=True):
        assert [int(row[c]) for c in amounts] == [line[c] for c in amounts]
    assert total["partner_id"] == "TOTAL"
    assert [int(total[c]) for c in amounts] == [body["totals"][c] for c in amounts]
    assert revenue["partner_id"] == "COALITION_REVENUE"
    assert [revenue[c] for c in header[2:-2]] == [""] * (len(header) - 4)
    assert int(revenue["net_fen"]) == body["coalition_fen"] == int(total["net_fen"])
    # Yuan written exactly from the fen: 854 fen is "8.54", 600 fen "6.00".
    for row in rows:
        for column in (c for c in amounts if c.endswith("_fen") and row[c]):
            fen = int(row[column])
            assert row[column.removesuffix("_fen") + "_yuan"] == str(Decimal(fen).scaleb(-2))
    assert by_partner[third.id]["issued_fen"] == 854
    third_row = next(row for row in partner_rows if row["partner_id"] == third.id)
    assert third_row["issued_yuan"] == "8.54"


def _fen(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def test_liability_by_issuer_at_redemption_value_and_breakage_after_expiry(world: World) -> None:
    teahouse = world.merchant(issue_price="1", redemption_value="0.9")
    bookshop = world.merchant(issue_price="1", redemption_value="0.7")
    alice = new_member(world.sessions, [teahouse.id, bookshop.id])
    bob = new_member(world.sessions, [bookshop.id])
    earned_alice = accrue(world.sessions, teahouse.id, alice, 52_000).points
    earned_bob = accrue(world.sessions, bookshop.id, bob, 20_000).points
    hold_and_capture(world.sessions, bookshop.id, alice, 300, 300)
    _, as_finance = world.finance()

    before = world.http.get("/finance/liability", headers=as_finance)
    assert before.status_code == 200, before.text
    assert before.json()["outstanding"] == sorted(
        [
            {
                "issuer": teahouse.id,
                "points": earned_alice - 300,
                "value_fen": _fen(Decimal("0.9") * (earned_alice - 300)),
            },
            {
                "issuer": bookshop.id,
                "points": earned_bob,
                "value_fen": _fen(Decimal("0.7") * earned_bob),
            },
        ],
        key=lambda item: str(item["issuer"]),
    )
    assert before.json()["breakage_points"] == 0

    # Bob's lot reaches its expiry (lots are working rows, not journal entries) and the expiry
    # job moves what is left of it to breakage.
    with world.sessions() as session, session.begin():
        session.execute(
            text(
                "UPDATE point_lots SET expires_at = earned_at + interval '1 millisecond' "
                "WHERE member_id = :member"
            ),
            {"member": bob},
        )
    expired = expire_lots(world.sessions, now=datetime.now(UTC))
    assert (expired.members, expired.points) == (1, earned_bob)

    after = world.http.get("/finance/liability", headers=as_finance).json()
    outstanding = earned_alice - 300
    assert after["outstanding"] == [
        {
            "issuer": teahouse.id,
            "points": outstanding,
            "value_fen": _fen(Decimal("0.9") * outstanding),
        }
    ]
    assert after["total_points"] == outstanding
    assert after["total_value_fen"] == _fen(Decimal("0.9") * outstanding)
    assert after["breakage_points"] == earned_bob
    assert after["expiring_points"] == {"30_days": 0, "60_days": 0, "90_days": 0}


def test_a_settlement_can_be_rejected_after_the_partner_issued_again_on_its_freed_limit(
    world: World,
) -> None:
    """Settlement frees the settled issue value in the partner's issuance limit (exposure back
    to headroom); the partner then issues again up to its limit. Finance must still be able to
    reject the settlement (only its payables are reversed; the freed limit stays freed), and
    the date settled again must not free it twice."""
    shop = world.merchant(issue_price="1")
    member_id = new_member(world.sessions, [shop.id])
    first = accrue(world.sessions, shop.id, member_id, 50_000)
    with world.sessions() as session, session.begin():
        limits.set_issuance_limit(session, shop.id, first.issue_value_fen)
    today = business_today()
    settle_after_cutoff(world.sessions, today)
    second = accrue(world.sessions, shop.id, member_id, 50_000)  # draws on the freed limit
    _, as_finance = world.finance()

    rejected = world.http.post(
        f"/finance/settlements/{today}/reject", json={"reason": "wrong"}, headers=as_finance
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"

    [again] = settle_after_cutoff(world.sessions, today)
    assert again.attempt == 2
    [line] = again.lines
    assert line.issued_fen == first.issue_value_fen + second.issue_value_fen
    with world.sessions() as session:
        assert limits.issuance_limit(session, shop.id) == (first.issue_value_fen, 0)
        assert ledger.check_consistency(session) == []


def _reconciles(report: dict[str, Any]) -> None:
    lines = (
        report["available_points"]
        + report["held_points"]
        + report["pending_review_points"]
        - report["owed_points"]
    )
    assert report["available_points"] == sum(item["points"] for item in report["outstanding"])
    assert report["total_points"] == lines
    assert lines == report["issued_points"] - report["redeemed_points"] - report["expired_points"]
    assert report["expired_points"] == report["breakage_points"] + report["lapsed_points"]


def test_held_pending_and_owed_points_are_lines_of_the_liability_and_it_reconciles(
    world: World,
) -> None:
    issuer = world.merchant()
    redeemer = world.merchant(redemption_value="0.9")
    # Every purchase at the issuer's till waits for a risk review.
    publish(world.sessions, issuer.id, max_accrual_fen_offline=10_000, amount_cap_action="review")
    alice = new_member(world.sessions, [issuer.id, redeemer.id])
    bob = new_member(world.sessions, [issuer.id, redeemer.id])
    earned = accrue(world.sessions, issuer.id, alice, 52_000).points
    hold_and_capture(world.sessions, redeemer.id, alice, 300, 300)
    with world.sessions() as session, session.begin():
        holds.place_hold(session, redeemer.id, alice, 200, key=unique_id("k"))
        under_review = accrual.accrue(
            session,
            issuer.id,
            accrual.PurchaseReport(
                partner_txn_id=unique_id("t"),
                member_id=alice,
                amount_fen=30_000,
                occurred_at=datetime.now(UTC),
                store_id=issuer.store_id,
            ),
        )
    assert under_review.review_case_id is not None
    pending = under_review.points
    # Bob spends all he earned, then the purchase is refunded: he owes its points.
    bought = accrue(world.sessions, issuer.id, bob, 10_000)
    hold_and_capture(world.sessions, redeemer.id, bob, bought.points, bought.points)
    refund_purchase(world.sessions, issuer.id, bought.partner_txn_id, 10_000)
    _, as_finance = world.finance()

    answer = world.http.get("/finance/liability", headers=as_finance)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["outstanding"] == [
        {"issuer": issuer.id, "points": earned - 500, "value_fen": earned - 500}
    ]
    assert (
        report["held_points"],
        report["pending_review_points"],
        report["owed_points"],
        report["lapsed_points"],
        report["breakage_points"],
    ) == (200, pending, bought.points, 0, 0)
    assert report["total_points"] == earned - 500 + 200 + pending - bought.points
    assert report["issued_points"] == earned + pending
    assert report["redeemed_points"] == 300 + bought.points
    _reconciles(report)

    # Past the lots' expiry, before the expiry job: the points have lapsed, not yet broken.
    with world.sessions() as session:
        later = datetime.now(UTC) + timedelta(days=3 * 366)
        lapsed = liability_report(session, later)
    assert lapsed["outstanding"] == []
    assert lapsed["lapsed_points"] == earned - 500
    _reconciles(lapsed)
    expire_lots(world.sessions, later)
    with world.sessions() as session:
        expired = liability_report(session, later)
    assert (expired["lapsed_points"], expired["breakage_points"]) == (0, earned - 500)
    assert expired["total_points"] == 200 + pending - bought.points
    _reconciles(expired)
