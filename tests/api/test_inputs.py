"""No input of any shape is a server error: integers beyond 64 bits, NUL characters, bare
carriage returns in an uploaded CSV and instants out of range are 422 naming the field; and
JSON bodies are strict: amounts and counts are JSON integers, unknown fields are refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from tests.builders.calls import enrol
from tests.builders.console import Console, hidden
from tests.builders.http import assert_problem, client_for, row_counts
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.users import staff

BEYOND_64_BITS = str(2**64)


def fields(response: httpx.Response) -> list[str]:
    problem = assert_problem(response, 422, "validation_error")
    return [error["field"] for error in problem["errors"]]


def test_ids_and_cursors_beyond_64_bits_are_named(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    partner_get = http.send(client.build("GET", f"/v1/reconciliations/{BEYOND_64_BITS}"))
    assert fields(partner_get) == ["path.reconciliation_id"]
    partner_file = http.send(client.build("GET", f"/v1/reconciliations/{BEYOND_64_BITS}/file"))
    assert fields(partner_file) == ["path.reconciliation_id"]

    auditor = staff(sessions, "auditor").headers
    for path, field in (
        (f"/audit/entries/{BEYOND_64_BITS}", "path.entry_id"),
        (f"/audit/proofs/{BEYOND_64_BITS}", "path.entry_id"),
        (f"/audit/entries?after={BEYOND_64_BITS}", "query.after"),
        (f"/audit/entries?after=-{BEYOND_64_BITS}", "query.after"),
    ):
        assert fields(http.get(path, headers=auditor)) == [field], path

    finance = staff(sessions, "finance").headers
    resolve = http.post(f"/finance/reconciliations/{BEYOND_64_BITS}/resolve", headers=finance)
    assert fields(resolve) == ["path.reconciliation_id"]


def test_nul_in_a_body_field_is_named(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    before = row_counts(sessions)
    response = http.send(client.build("POST", "/v1/members", body={"customer_ref": "a\x00b"}))
    assert fields(response) == ["body.customer_ref"]
    assert row_counts(sessions)["members"] == before["members"]

    finance = staff(sessions, "finance").headers
    reject = http.post(
        "/finance/settlements/2026-01-01/reject", json={"reason": "\x00"}, headers=finance
    )
    assert fields(reject) == ["body.reason"]


def test_nul_in_a_path_segment_or_query_value_is_named(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    for path, field in (
        ("/v1/holds/h%00", "path.hold_id"),
        ("/v1/purchases/t%00", "path.partner_txn_id"),
        ("/v1/stores/s%00", "path.store_id"),
        ("/v1/cases/c%00", "path.case_id"),
        ("/v1/expiring-members?after=M%00", "query.after"),
    ):
        assert fields(http.send(client.build("GET", path))) == [field], path

    auditor = staff(sessions, "auditor").headers
    for path, field in (
        ("/audit/entries?account=a%00", "query.account"),
        ("/audit/accounts/a%00/balance", "path.address"),
        ("/audit/accounts/member:x/statement?cursor=%00", "query.cursor"),
    ):
        assert fields(http.get(path, headers=auditor)) == [field], path
    operator = staff(sessions, "operator").headers
    assert fields(http.get("/operator/cases/c%00", headers=operator)) == ["path.case_id"]


@pytest.mark.parametrize("logins", [["a\x00"], ["a\x00", "b"]], ids=["once", "repeated"])
def test_a_nul_in_a_console_form_is_refused(logins: list[str], app: FastAPI) -> None:
    console = Console(app)
    try:
        form = console.http.get("/console/sign-in")
        token = hidden(form.text, "signin_token")
        fields = [("login", login) for login in logins]
        response = console.http.post(
            "/console/sign-in",
            content=urlencode([*fields, ("password", "p"), ("signin_token", token)]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    finally:
        console.close()
    assert response.status_code == 422, response.text
    assert "login" in response.text


def test_a_bare_carriage_return_in_an_uploaded_csv_names_the_line(
    client: PartnerClient, http: TestClient
) -> None:
    csv = "txn_id,type,amount_fen,points\nt1,purchase,100,1\nt2\rx,purchase,100,1\n"
    response = http.send(
        client.build(
            "POST", "/v1/reconciliations", body={"business_date": "2026-01-01", "csv": csv}
        )
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [error["line"] for error in problem["errors"]] == [3]


@pytest.mark.parametrize("amount", [str(2**63), "1_000", "\u0661\u0662"])
def test_csv_amounts_are_plain_64_bit_integers(
    amount: str, client: PartnerClient, http: TestClient
) -> None:
    csv = f"txn_id,type,amount_fen,points\nt1,purchase,{amount},1\n"
    response = http.send(
        client.build(
            "POST", "/v1/reconciliations", body={"business_date": "2026-01-01", "csv": csv}
        )
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [error["line"] for error in problem["errors"]] == [2]


@pytest.mark.parametrize(
    "instant",
    [
        "0999-12-31T23:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_instants_out_of_range_are_named(
    instant: str, sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    auditor = staff(sessions, "auditor").headers
    for path, field in (
        ("/audit/entries", "query.recorded_from"),
        ("/audit/trial-balance", "query.as_of"),
        ("/audit/accounts/coalition:breakage/balance", "query.as_of"),
    ):
        name = field.removeprefix("query.")
        response = http.get(path, params={name: instant}, headers=auditor)
        assert fields(response) == [field], (path, instant)
    export = http.get(
        "/audit/export", params={"from": instant, "to": "2026-01-01T00:00:00Z"}, headers=auditor
    )
    assert fields(export) == ["query.from"]

    purchase = {
        "partner_txn_id": unique_id("t"),
        "member_id": "M000000000000",
        "amount_fen": 100,
        "occurred_at": instant,
    }
    response = http.send(client.build("POST", "/v1/purchases", body=purchase))
    assert fields(response) == ["body.occurred_at"]


def test_an_export_ending_before_it_starts_is_refused(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    params = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    response = http.get("/audit/export", params=params, headers=staff(sessions, "auditor").headers)
    assert fields(response) == ["query.to"]


@pytest.fixture
def ready(sessions: sessionmaker[Session], http: TestClient) -> tuple[PartnerClient, str]:
    """A partner that can accrue, and a member linked to it."""
    partner: ApiPartner = make_partner(sessions)
    client = client_for(partner, http)
    return client, enrol(client)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_fen": "100"}, "body.amount_fen"),
        ({"amount_fen": True}, "body.amount_fen"),
        ({"amount_fen": 100.0}, "body.amount_fen"),
        ({"bonus_points": 99999}, "body.bonus_points"),
        ({"points": 1000000}, "body.points"),
        ({"member_id": 7}, "body.member_id"),
    ],
)
def test_a_purchase_body_is_strict(
    change: dict[str, Any],
    field: str,
    sessions: sessionmaker[Session],
    ready: tuple[PartnerClient, str],
    http: TestClient,
) -> None:
    client, member_id = ready
    body = {
        "partner_txn_id": unique_id("t"),
        "member_id": member_id,
        "amount_fen": 100,
        "occurred_at": datetime.now(UTC).isoformat(),
        **change,
    }
    before = row_counts(sessions)
    assert fields(http.send(client.build("POST", "/v1/purchases", body=body))) == [field]
    assert row_counts(sessions)["members"] == before["members"]
    assert client.get(f"/v1/members/{member_id}")["available_points"] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/holds", {"points": "300"}, "body.points"),
        ("/v1/redemptions", {"points": True}, "body.points"),
        ("/v1/exchanges", {"direction": "in", "points": "3"}, "body.points"),
        ("/v1/members", {"customer_ref": "c", "birth_month": "5"}, "body.birth_month"),
        ("/v1/members", {"customer_ref": "c", "vip": True}, "body.vip"),
    ],
)
def test_counts_are_json_integers_and_unknown_fields_are_refused(
    path: str,
    body: dict[str, Any],
    field: str,
    ready: tuple[PartnerClient, str],
    http: TestClient,
) -> None:
    client, member_id = ready
    body = {"member_id": member_id, **body} if path != "/v1/members" else body
    assert fields(http.send(client.build("POST", path, body=body))) == [field]


def test_staff_bodies_refuse_unknown_fields(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    finance = staff(sessions, "finance").headers
    response = http.post(
        "/finance/settlements/2026-01-01/paid",
        json={"bank_reference": "B1", "amount_fen": 1},
        headers=finance,
    )
    assert fields(response) == ["body.amount_fen"]
    operator = staff(sessions, "operator").headers
    response = http.post("/operator/cases/c1/approve", json={"note": 5}, headers=operator)
    assert fields(response) == ["body.note"]
