"""Every error is RFC 9457 problem+json with a stable code, and never leaks internals."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api.guard import MAX_BODY_BYTES
from clearinghouse.api.tables import idempotency_records
from clearinghouse.app import create_app
from partners.client import PartnerClient
from tests.builders.http import assert_problem, client_for, own_client, row_counts
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner


def test_validation_error_lists_the_field(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    before = row_counts(sessions)
    response = http.send(client.build("POST", "/v1/members", body={"customer_ref": ""}))
    problem = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == ["body.customer_ref"]
    assert all(error["message"] and error["type"] for error in problem["errors"])
    assert problem["instance"] == "/v1/members"
    assert row_counts(sessions)["members"] == before["members"]


def test_unknown_route_under_v1_with_a_valid_signature_is_404(
    client: PartnerClient, http: TestClient
) -> None:
    assert_problem(http.send(client.build("GET", "/v1/nowhere")), 404, "not_found")


def test_wrong_method_on_a_known_route_is_405(client: PartnerClient, http: TestClient) -> None:
    response = http.send(client.build("POST", "/v1/stores", body={}))
    assert_problem(response, 405, "method_not_allowed")


def test_unhandled_exception_is_a_500_without_details(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    app = create_app(sessions)

    def explode() -> None:
        raise RuntimeError("secret detail")

    app.add_api_route("/v1/explode", explode, methods=["GET", "POST"])
    with own_client(app) as http:
        client = client_for(partner, http)
        for request in (
            client.build("GET", "/v1/explode"),
            client.build("POST", "/v1/explode", body={"a": 1}, idempotency_key=unique_id("k")),
        ):
            response = http.send(request)
            assert_problem(response, 500, "internal_error")
            assert "secret detail" not in response.text
            assert "Traceback" not in response.text
            assert "RuntimeError" not in response.text

    # A server error is not stored: a retry with the same key runs the request again.
    with sessions() as session:
        kept = session.execute(
            select(idempotency_records.c.key).where(idempotency_records.c.partner_id == partner.id)
        ).all()
    assert kept == []


def test_body_over_one_mebibyte_is_413(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    before = row_counts(sessions)
    body = {"customer_ref": "x" * MAX_BODY_BYTES}
    response = http.send(client.build("POST", "/v1/members", body=body))
    assert_problem(response, 413, "payload_too_large")
    assert row_counts(sessions) == before


def test_body_just_under_the_limit_reaches_validation(
    client: PartnerClient, http: TestClient
) -> None:
    body = {"customer_ref": "x" * (MAX_BODY_BYTES - 100)}
    response = http.send(client.build("POST", "/v1/members", body=body))
    assert_problem(response, 422, "validation_error")


def test_405_names_the_allowed_methods(client: PartnerClient, http: TestClient) -> None:
    # RFC 9110 section 15.5.6 requires Allow on a 405; Starlette puts it in the HTTPException's
    # headers, which the problem handler must pass on (it once dropped them).
    response = http.send(client.build("DELETE", "/v1/partner"))
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers.get("allow") == "GET"


def test_405_on_a_post_names_the_allowed_methods(client: PartnerClient, http: TestClient) -> None:
    # A POST's answer goes through the idempotency gate, which stores and sends it whole: the
    # Allow header the handler sets survives.
    response = http.send(client.build("POST", "/v1/stores", body={}))
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers.get("allow") == "GET"
