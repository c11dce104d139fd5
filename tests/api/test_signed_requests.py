"""The gate in front of /v1/: good signatures pass; every kind of bad one is a 401 with the same
generic message, and nothing is written."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners import directory, keys
from partners.client import PartnerClient
from tests.builders.calls import link_body
from tests.builders.http import (
    altered,
    assert_problem,
    assert_unauthorized,
    row_counts,
    signed_request,
)
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, SigningKey


def assert_refused_without_writes(
    sessions: sessionmaker[Session], http: TestClient, request: httpx.Request
) -> None:
    before = row_counts(sessions)
    assert_unauthorized(http.send(request))
    assert row_counts(sessions) == before


def signed_link(
    http: TestClient, key: SigningKey, *, created: int | None = None, keyid: str | None = None
) -> httpx.Request:
    """A signed POST /v1/members that would enrol a new member if it were accepted."""
    return signed_request(
        http,
        key,
        "POST",
        "/v1/members",
        body=link_body(),
        idempotency_key=unique_id("k"),
        created=created,
        keyid=keyid,
    )


def test_signed_get_and_post_are_accepted(
    client: PartnerClient, partner: ApiPartner, http: TestClient
) -> None:
    assert client.get("/v1/partner")["id"] == partner.id

    response = http.send(client.build("POST", "/v1/members", body=link_body()))
    assert response.status_code == 201, response.text
    assert response.json()["member_id"].startswith("M")


def test_body_changed_after_signing_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body={"customer_ref": "alice"})
    tampered = altered(request, content=b'{"customer_ref":"mallory"}')
    assert_refused_without_writes(sessions, http, tampered)


def test_path_changed_after_signing_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/memberz", body=link_body())
    tampered = altered(request, url=request.url.copy_with(path="/v1/members"))
    assert_refused_without_writes(sessions, http, tampered)


def test_query_changed_after_signing_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body(), params={"source": "till-1"})
    tampered = altered(request, url=request.url.copy_with(query=b"source=till-2"))
    assert_refused_without_writes(sessions, http, tampered)


def test_method_changed_after_signing_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    request = signed_request(
        http, partner.key, "PUT", "/v1/members", body=link_body(), idempotency_key=unique_id("k")
    )
    assert_refused_without_writes(sessions, http, altered(request, method="POST"))


def test_idempotency_key_changed_after_signing_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body(), idempotency_key="first")
    tampered = altered(request, headers={"Idempotency-Key": "second"})
    assert_refused_without_writes(sessions, http, tampered)


def test_signature_created_301_seconds_ago_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    created = math.floor(time.time()) - 301
    assert_refused_without_writes(sessions, http, signed_link(http, partner.key, created=created))


def test_signature_created_31_seconds_ahead_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    # Rounded up, so the signature stays more than 30 s ahead of the server's clock.
    created = math.ceil(time.time()) + 31
    assert_refused_without_writes(sessions, http, signed_link(http, partner.key, created=created))


def test_signature_a_little_old_is_accepted(partner: ApiPartner, http: TestClient) -> None:
    created = math.floor(time.time()) - 240
    response = http.send(signed_link(http, partner.key, created=created))
    assert response.status_code == 201, response.text


def test_replayed_request_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body())
    first = http.send(request)
    assert first.status_code == 201, first.text
    # The very same bytes again: the nonce is spent, before idempotency is even looked at.
    assert_refused_without_writes(sessions, http, request)

    get = client.build("GET", "/v1/partner")
    assert http.send(get).status_code == 200
    assert_refused_without_writes(sessions, http, get)


def test_unknown_keyid_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    request = signed_link(http, partner.key, keyid=unique_id("nobody-"))
    assert_refused_without_writes(sessions, http, request)


def test_revoked_key_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    with sessions() as session, session.begin():
        keys.revoke_key(session, partner.key_id)
    assert_refused_without_writes(sessions, http, signed_link(http, partner.key))


def test_retiring_key_past_its_deadline_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    with sessions() as session, session.begin():
        keys.retire_key(session, partner.key_id, datetime.now(UTC) - timedelta(seconds=1))
    assert_refused_without_writes(sessions, http, signed_link(http, partner.key))


def test_retiring_key_before_its_deadline_still_works(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    with sessions() as session, session.begin():
        keys.retire_key(session, partner.key_id, datetime.now(UTC) + timedelta(hours=1))
    response = http.send(signed_link(http, partner.key))
    assert response.status_code == 201, response.text


def test_suspended_partner_is_refused_and_works_again_once_active(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    with sessions() as session, session.begin():
        directory.set_partner_status(session, partner.id, "suspended")
    assert_refused_without_writes(sessions, http, signed_link(http, partner.key))

    with sessions() as session, session.begin():
        directory.set_partner_status(session, partner.id, "active")
    assert client.get("/v1/partner")["status"] == "active"


def test_missing_signature_header_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body())
    assert_refused_without_writes(sessions, http, altered(request, headers={"Signature": None}))


def test_missing_signature_input_header_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body())
    stripped = altered(request, headers={"Signature-Input": None})
    assert_refused_without_writes(sessions, http, stripped)


def test_post_without_content_digest_is_refused(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body())
    stripped = altered(request, headers={"Content-Digest": None})
    assert_refused_without_writes(sessions, http, stripped)


def test_unsigned_request_is_refused(sessions: sessionmaker[Session], http: TestClient) -> None:
    before = row_counts(sessions)
    assert_unauthorized(http.get("/v1/partner"))
    assert_unauthorized(
        http.post("/v1/members", json=link_body(), headers={"Idempotency-Key": "k-1"})
    )
    assert row_counts(sessions) == before


def test_well_signed_post_without_idempotency_key_is_400(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    # Our profile makes a POST with a body cover its Idempotency-Key, so only a POST without a
    # body can be well signed and still lack the key.
    request = signed_request(http, partner.key, "POST", "/v1/members")
    assert "idempotency-key" not in request.headers
    before = row_counts(sessions)
    assert_problem(http.send(request), 400, "idempotency_key_required")
    assert row_counts(sessions) == before


def test_post_with_body_but_without_idempotency_key_is_400(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    # The key is checked before the signature: forgetting it is a plain mistake, and the
    # answer says so (it reveals nothing about the signature).
    request = client.build("POST", "/v1/members", body=link_body())
    stripped = altered(request, headers={"Idempotency-Key": None})
    before = row_counts(sessions)
    assert_problem(http.send(stripped), 400, "idempotency_key_required")
    assert row_counts(sessions) == before
