"""Who may see and decide cases: the review queue needs an operator's bearer token; a partner
reads only its own cases, by signed request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from tests.builders.calls import buy, enrol, link
from tests.builders.fraud import BEIJING, SHANGHAI, decided, operator_case, partner_case, publish
from tests.builders.http import assert_problem, assert_unauthorized, refused
from tests.builders.partners import ApiPartner, add_store
from tests.builders.points import pending
from tests.builders.users import Staff, staff


@pytest.fixture
def open_case(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> dict[str, Any]:
    """An accrual of the partner's waiting for review: its member and case id."""
    publish(sessions, partner.id, max_accrual_fen_offline=10_000, amount_cap_action="review")
    member_id = enrol(client)
    accrual = buy(client, member_id, 52_000, store_id=partner.store_id)
    return {"member_id": member_id, "case_id": accrual["review_case_id"]}


def _operator_calls(case_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", "/operator/cases", None),
        ("GET", "/operator/cases?state=blocked", None),
        ("GET", f"/operator/cases/{case_id}", None),
        ("POST", f"/operator/cases/{case_id}/approve", {"note": "looks fine"}),
        ("POST", f"/operator/cases/{case_id}/reject", {"note": "looks bad"}),
    ]


def test_the_queue_refuses_requests_without_a_valid_token(
    sessions: sessionmaker[Session], http: TestClient, open_case: dict[str, Any], operator: Staff
) -> None:
    anonymous: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer cht_not-a-token"},
    ]
    for method, url, body in _operator_calls(open_case["case_id"]):
        for headers in anonymous:
            response = http.request(method, url, json=body, headers=headers)
            assert_problem(response, 401, "not_signed_in")
    assert operator_case(http, operator, open_case["case_id"])["state"] == "open"
    assert pending(sessions, open_case["member_id"]) == 1_540


@pytest.mark.parametrize("role", ["finance", "approver", "auditor"])
def test_other_roles_are_forbidden_the_queue(
    sessions: sessionmaker[Session],
    http: TestClient,
    open_case: dict[str, Any],
    operator: Staff,
    role: str,
) -> None:
    someone = staff(sessions, role)
    for method, url, body in _operator_calls(open_case["case_id"]):
        response = http.request(method, url, json=body, headers=someone.headers)
        assert_problem(response, 403, "forbidden")
    case = operator_case(http, operator, open_case["case_id"])
    assert (case["state"], case["actions"]) == ("open", [])
    assert pending(sessions, open_case["member_id"]) == 1_540


def test_an_unknown_case_is_404_for_the_operator(http: TestClient, operator: Staff) -> None:
    for method, url in [
        ("GET", "/operator/cases/CNOSUCHCASE00000"),
        ("POST", "/operator/cases/CNOSUCHCASE00000/approve"),
        ("POST", "/operator/cases/CNOSUCHCASE00000/reject"),
    ]:
        response = http.request(method, url, json={}, headers=operator.headers)
        assert_problem(response, 404, "case_not_found")


def test_a_partner_reads_its_own_case_and_not_anothers(
    http: TestClient,
    client: PartnerClient,
    other_client: PartnerClient,
    open_case: dict[str, Any],
    operator: Staff,
) -> None:
    case_id = open_case["case_id"]
    assert partner_case(client, case_id)["state"] == "open"

    problem = refused(404, "case_not_found", partner_case, other_client, case_id)
    unknown = refused(404, "case_not_found", partner_case, other_client, "CNOSUCHCASE00000")
    # Another partner's case is as unknown as a missing one.
    assert problem["detail"].replace(case_id, "X") == unknown["detail"].replace(
        "CNOSUCHCASE00000", "X"
    )
    decided(http, operator, case_id, "approve")
    refused(404, "case_not_found", partner_case, other_client, case_id)


def test_a_partners_case_view_needs_a_signature_not_a_token(
    http: TestClient, open_case: dict[str, Any], operator: Staff
) -> None:
    response = http.get(f"/v1/cases/{open_case['case_id']}", headers=operator.headers)
    assert_unauthorized(response)


def test_the_partners_view_carries_no_operator_detail(
    client: PartnerClient, open_case: dict[str, Any]
) -> None:
    seen = partner_case(client, open_case["case_id"])
    assert set(seen) == {"case_id", "operation", "decision", "state", "reasons"}


def test_a_partner_learns_nothing_of_another_partners_stores_from_its_case(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    client: PartnerClient,
    other_partner: ApiPartner,
    other_client: PartnerClient,
) -> None:
    theirs = add_store(sessions, other_partner.id, city="Beijing", at=BEIJING)
    mine = add_store(sessions, partner.id, at=SHANGHAI)
    member_id = enrol(client)
    link(other_client, member_id)
    buy(other_client, member_id, 30_000, store_id=theirs)

    accrual = buy(client, member_id, 30_000, store_id=mine)

    seen = partner_case(client, accrual["review_case_id"])
    assert seen["reasons"]
    assert theirs not in json.dumps(seen)
