"""POST /v1/members and GET /v1/members/{id} through signed requests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient, ProblemError
from tests.builders.calls import link_body
from tests.builders.http import assert_problem, row_counts
from tests.builders.ids import unique_id


def test_linking_a_customer_creates_a_member_once(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    body = link_body()
    before = row_counts(sessions)
    created = http.send(client.build("POST", "/v1/members", body=body))
    assert created.status_code == 201, created.text
    link = created.json()
    assert link["customer_ref"] == body["customer_ref"]

    # A new request (another Idempotency-Key) for the same customer: the same member, 200.
    again = http.send(
        client.build("POST", "/v1/members", body=body, idempotency_key=unique_id("k"))
    )
    assert again.status_code == 200, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json() == link
    after = row_counts(sessions)
    assert after["members"] == before["members"] + 1
    assert after["member_links"] == before["member_links"] + 1


def test_new_member_has_no_points(client: PartnerClient) -> None:
    link = client.post("/v1/members", link_body("cust-42"))
    member = client.get(f"/v1/members/{link['member_id']}")
    assert member["member_id"] == link["member_id"]
    assert member["customer_ref"] == "cust-42"
    assert member["available_points"] == 0


def test_member_id_in_the_wrong_format_in_a_link_is_422(
    client: PartnerClient, http: TestClient
) -> None:
    body = {"customer_ref": unique_id("c"), "member_id": "not-a-member"}
    problem = assert_problem(
        http.send(client.build("POST", "/v1/members", body=body)), 422, "validation_error"
    )
    assert [error["field"] for error in problem["errors"]] == ["body.member_id"]


def test_member_id_in_the_wrong_format_in_the_path_is_422(
    client: PartnerClient, http: TestClient
) -> None:
    # Without a pattern on the path parameter a malformed id was looked up: 404, not 422.
    problem = assert_problem(
        http.send(client.build("GET", "/v1/members/not-a-member")), 422, "validation_error"
    )
    assert [error["field"] for error in problem["errors"]] == ["path.member_id"]


def test_client_raises_problem_error_for_unknown_member(client: PartnerClient) -> None:
    with pytest.raises(ProblemError) as excinfo:
        client.get("/v1/members/M0000000000ZZ")
    assert excinfo.value.status == 404
    assert excinfo.value.code == "member_not_found"
