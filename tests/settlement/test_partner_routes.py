"""The signed partner routes of settlement: a partner's own statement of a settled date, and
reconciliation of its day against ours (breaks found once each, the file kept and readable only
by its owner, malformed files refused, open breaks warned about at approval until resolved)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from partners.client import PartnerClient
from settlement.tables import reconciliations
from tests.builders import calls
from tests.builders.calls import buy, enrol, link
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.http import assert_problem, assert_unauthorized
from tests.builders.settlement import a_day_of_traffic, count, settle_after_cutoff


def _get(http: TestClient, client: PartnerClient, path: str) -> Any:
    return http.send(client.build("GET", path))


def test_a_partner_reads_only_its_own_line_of_a_settled_date(world: World) -> None:
    traffic = a_day_of_traffic(world)
    idle = world.merchant()
    today = business_today()
    [run] = settle_after_cutoff(world.sessions, today)
    lines = {line.partner_id: line for line in run.lines}
    payer, receiver = world.client(traffic.payer), world.client(traffic.receiver)

    for partner, client, other in (
        (traffic.payer, payer, traffic.receiver),
        (traffic.receiver, receiver, traffic.payer),
    ):
        response = _get(world.http, client, f"/v1/settlements/{today}")
        assert response.status_code == 200, response.text
        statement = response.json()
        assert (statement["business_date"], statement["state"]) == (today.isoformat(), "computed")
        assert statement["line"] == {
            **asdict(lines[partner.id]),
            "net_fen": lines[partner.id].net_fen,
        }
        # Nothing of the other partner's line, not even its id, is in the answer.
        assert other.id not in response.text
        assert set(statement) <= {"business_date", "state", "line", "ledger_digest"}
    assert payer.get(f"/v1/settlements/{today}")["line"]["net_fen"] == traffic.issued_fen
    assert receiver.get(f"/v1/settlements/{today}")["line"]["net_fen"] == -traffic.redeemed_fen

    # A partner without entries that day reads a line of zeros of its own.
    quiet = _get(world.http, world.client(idle), f"/v1/settlements/{today}").json()
    assert quiet["line"]["partner_id"] == idle.id
    assert {k: v for k, v in quiet["line"].items() if k != "partner_id"} == dict.fromkeys(
        [k for k in quiet["line"] if k != "partner_id"], 0
    )
    assert traffic.payer.id not in str(quiet)
    assert traffic.receiver.id not in str(quiet)

    for unsettled in (today - timedelta(days=1), today + timedelta(days=1)):
        missing = _get(world.http, payer, f"/v1/settlements/{unsettled}")
        assert_problem(missing, 404, "settlement_not_found")
    assert_unauthorized(world.http.get(f"/v1/settlements/{today}"))


def _upload(client: PartnerClient, http: TestClient, day: str, content: str) -> Any:
    return http.send(
        client.build("POST", "/v1/reconciliations", body={"business_date": day, "csv": content})
    )


def _breaks(client: PartnerClient, rid: int, limit: int = 100) -> list[dict[str, Any]]:
    """Every break of the reconciliation, page by page."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        query = f"?limit={limit}" + ("" if after is None else f"&after={after}")
        page = client.get(f"/v1/reconciliations/{rid}/breaks{query}")
        found += page["breaks"]
        after = page["next"]
        if after is None:
            return found


def test_reconciliation_finds_every_planted_break_once(world: World) -> None:
    shop, other = world.merchant(), world.merchant()
    client, other_client = world.client(shop), world.client(other)
    member = enrol(client)
    link(other_client, member)
    today = business_today().isoformat()
    bought = {
        txn: buy(client, member, amount, txn=txn)["points"]
        for txn, amount in (("T-1", 10_000), ("T-2", 20_000), ("T-3", 5_000), ("T-4", 7_000))
    }
    refund = calls.refund(client, "T-1", 3_000, "R-1")
    redemption = client.post(
        "/v1/redemptions", {"member_id": member, "points": 200, "partner_ref": "RED-1"}
    )
    # Another partner's day: none of the shop's business.
    buy(other_client, member, 9_000, txn="ELSEWHERE-1")

    theirs = "\n".join(
        [
            "txn_id,type,amount_fen,points",
            f"T-1,purchase,10000,{bought['T-1']}",  # matches
            f"T-2,purchase,20001,{bought['T-2']}",  # amount differs
            f"T-3,purchase,5000,{bought['T-3'] + 1}",  # points differ
            f"T-1/R-1,refund,3000,{refund['points']}",  # matches
            f"RED-1,redemption,{redemption['value_fen']},200",  # matches
            "GHOST-9,purchase,1200,12",  # not ours
            # T-4 is missing from their file
        ]
    )
    uploaded = _upload(client, world.http, today, theirs + "\n")
    assert uploaded.status_code == 201, uploaded.text
    result = uploaded.json()
    assert (result["lines"], result["matched"], result["breaks"]) == (6, 3, 4)
    assert result["resolved"] is False
    # Listed in the order of (type, txn_id), a page at a time, each break once.
    breaks = _breaks(client, result["id"], limit=3)
    assert [(b["break"], b["type"], b["txn_id"]) for b in breaks] == [
        ("missing_ours", "purchase", "GHOST-9"),
        ("amount_differs", "purchase", "T-2"),
        ("points_differ", "purchase", "T-3"),
        ("missing_theirs", "purchase", "T-4"),
    ]
    assert _breaks(client, result["id"], limit=4) == breaks
    details = {b["txn_id"]: b for b in breaks}
    assert details["T-2"]["ours"] == [20_000, bought["T-2"]]
    assert details["T-2"]["theirs"] == [20_001, bought["T-2"]]
    assert details["T-3"]["theirs"] == [5_000, bought["T-3"] + 1]
    assert details["T-4"]["ours"] == [7_000, bought["T-4"]]
    assert details["GHOST-9"]["theirs"] == [1_200, 12]
    assert details["GHOST-9"]["ours"] is None
    assert "ELSEWHERE-1" not in uploaded.text

    # Kept, readable and downloadable by its owner only; the same file again is the same result.
    rid = result["id"]
    assert client.get(f"/v1/reconciliations/{rid}") == result
    file = _get(world.http, client, f"/v1/reconciliations/{rid}/file")
    assert file.status_code == 200
    assert file.headers["content-type"].startswith("text/csv")
    assert file.text == theirs + "\n"
    for path in (
        f"/v1/reconciliations/{rid}",
        f"/v1/reconciliations/{rid}/file",
        f"/v1/reconciliations/{rid}/breaks",
    ):
        assert_problem(_get(world.http, other_client, path), 404, "reconciliation_not_found")
    assert _upload(client, world.http, today, theirs + "\n").json()["id"] == rid
    assert count(world.sessions, reconciliations) == 1

    # Approval warns about the open breaks until they are resolved.
    settle_after_cutoff(world.sessions, business_today())
    _, as_alice = world.finance()
    _, as_bob = world.finance("approver")
    first = world.http.post(f"/finance/settlements/{today}/approve", headers=as_alice)
    assert first.status_code == 200, first.text
    assert first.json()["warnings"] == ["4 reconciliation breaks are open for this date"]
    assert first.json()["open_breaks"] == 4
    assert first.json()["reconciliations"] == [
        {"id": rid, "partner_id": shop.id, "matched": 3, "breaks": 4, "resolved": False}
    ]
    resolved = world.http.post(f"/finance/reconciliations/{rid}/resolve", headers=as_alice)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolved_at"] is not None
    assert client.get(f"/v1/reconciliations/{rid}")["resolved"] is True
    second = world.http.post(f"/finance/settlements/{today}/approve", headers=as_bob)
    assert second.status_code == 200, second.text
    assert (second.json()["state"], second.json()["warnings"]) == ("approved", [])
    assert second.json()["open_breaks"] == 0
    unknown = world.http.post("/finance/reconciliations/999999/resolve", headers=as_alice)
    assert_problem(unknown, 404, "reconciliation_not_found")


def test_a_malformed_reconciliation_file_is_422_naming_every_bad_line(world: World) -> None:
    shop = world.merchant()
    client = world.client(shop)
    today = business_today().isoformat()
    bad = "\n".join(
        [
            "txn_id,type,amount_fen,points",
            "T-1,purchase,1000,10",
            "T-2,gift,1000,10",
            "T-3,purchase,ten,10",
            "T-4,purchase,1000",
            ",refund,100,1",
        ]
    )
    problem = assert_problem(_upload(client, world.http, today, bad), 422, "validation_error")
    assert [e["line"] for e in problem["errors"]] == [3, 4, 5, 6]
    assert all(e["message"] for e in problem["errors"])
    header = assert_problem(
        _upload(client, world.http, today, "id,kind,fen\nT-1,purchase,1000\n"),
        422,
        "validation_error",
    )
    assert "txn_id,type,amount_fen,points" in header["detail"]
    assert count(world.sessions, reconciliations) == 0


def test_a_repeated_line_is_a_break_reported_with_the_others_and_the_file_is_kept(
    world: World,
) -> None:
    shop = world.merchant()
    client = world.client(shop)
    member = enrol(client)
    today = business_today().isoformat()
    bought = {txn: buy(client, member, 10_000, txn=txn)["points"] for txn in ("T-1", "T-2")}
    theirs = "\n".join(
        [
            "txn_id,type,amount_fen,points",
            f"T-1,purchase,10000,{bought['T-1']}",  # matches
            f"T-1,purchase,10000,{bought['T-1']}",  # the same line again
            f"T-2,purchase,10001,{bought['T-2']}",  # amount differs
            "GHOST-1,purchase,500,5",  # not ours
            "T-1,purchase,9999,1",  # T-1 a third time, otherwise
        ]
    )
    uploaded = _upload(client, world.http, today, theirs + "\n")
    assert uploaded.status_code == 201, uploaded.text
    result = uploaded.json()
    assert (result["lines"], result["matched"], result["breaks"]) == (5, 1, 4)
    assert [
        (b["break"], b["txn_id"], b["ours"], b["theirs"]) for b in _breaks(client, result["id"])
    ] == [
        ("missing_ours", "GHOST-1", None, [500, 5]),
        ("duplicate", "T-1", None, [10_000, bought["T-1"]]),
        ("duplicate", "T-1", None, [9_999, 1]),
        ("amount_differs", "T-2", [10_000, bought["T-2"]], [10_001, bought["T-2"]]),
    ]
    assert _get(world.http, client, f"/v1/reconciliations/{result['id']}/file").text == (
        theirs + "\n"
    )
    assert count(world.sessions, reconciliations) == 1


def test_two_refunds_with_the_same_refund_id_on_different_purchases_are_both_reconciled(
    world: World,
) -> None:
    """Refund ids are the partner's own and unique per purchase (the API accepts refund "1" of
    order A and refund "1" of order B); both refunds are in our records of the day, so both
    must take part in the reconciliation. Here the partner's file lists the purchases only: each
    of our two refunds is a `missing_theirs` break (keyed "<transaction id>/<refund id>")."""
    shop = world.merchant()
    client = world.client(shop)
    member = enrol(client)
    first = buy(client, member, 10_000, txn="ORDER-A")["points"]
    second = buy(client, member, 20_000, txn="ORDER-B")["points"]
    calls.refund(client, "ORDER-A", 1_000, "1")
    calls.refund(client, "ORDER-B", 2_000, "1")
    theirs = (
        "txn_id,type,amount_fen,points\n"
        f"ORDER-A,purchase,10000,{first}\n"
        f"ORDER-B,purchase,20000,{second}\n"
    )
    result = _upload(client, world.http, business_today().isoformat(), theirs).json()
    assert result["matched"] == 2
    refund_breaks = [b for b in _breaks(client, result["id"]) if b["type"] == "refund"]
    assert sorted(b["ours"][0] for b in refund_breaks) == [1_000, 2_000]
    assert [b["break"] for b in refund_breaks] == ["missing_theirs", "missing_theirs"]
