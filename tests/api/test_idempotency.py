"""Idempotent POSTs: a retry gets the first answer and posts nothing twice; a key reused for
another request, or retried while the first still runs, is refused; old records are purged."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api import idempotency
from clearinghouse.api.tables import idempotency_records
from partners import auth
from partners.client import PartnerClient
from partners.tables import request_nonces
from tests.api.builders import (
    ApiPartner,
    assert_problem,
    create_partner,
    link_body,
    row_counts,
    unique_id,
)


def record_state(sessions: sessionmaker[Session], partner_id: str, key: str) -> str | None:
    with sessions() as session:
        return session.execute(
            select(idempotency_records.c.state).where(
                idempotency_records.c.partner_id == partner_id, idempotency_records.c.key == key
            )
        ).scalar_one_or_none()


def claim_like(sessions: sessionmaker[Session], partner_id: str, request: httpx.Request) -> None:
    """Claim the request's key as a first attempt that is still running would have; committed."""
    key = request.headers["idempotency-key"]
    digest = idempotency.request_hash(
        request.method, request.url.path, request.url.query.decode(), request.content
    )
    with sessions() as session, session.begin():
        assert idempotency.claim(session, partner_id, key, digest) is None


def test_same_key_and_body_replays_the_first_answer(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    key, body = unique_id("k"), link_body()
    before = row_counts(sessions)
    first = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    # A new signature (fresh nonce) on the same key and body, as a retrying client sends it.
    retry = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert retry.status_code == first.status_code
    assert retry.content == first.content
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert retry.headers["idempotent-replayed"] == "true"

    after = row_counts(sessions)
    assert after["members"] == before["members"] + 1
    assert after["member_links"] == before["member_links"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1


def test_same_key_with_another_body_is_422(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    key = unique_id("k")
    first = http.send(client.build("POST", "/v1/members", body=link_body(), idempotency_key=key))
    assert first.status_code == 201, first.text

    before = row_counts(sessions)
    reused = http.send(client.build("POST", "/v1/members", body=link_body(), idempotency_key=key))
    assert_problem(reused, 422, "idempotency_key_reused")
    assert row_counts(sessions) == before


def test_a_refused_request_is_refused_the_same_way_on_retry(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    key = unique_id("k")
    body = {"customer_ref": unique_id("c"), "member_id": "M0000000000ZZ"}
    first = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert_problem(first, 404, "member_not_found")

    retry = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert retry.status_code == 404
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"


def test_retry_while_the_first_still_runs_is_409(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    request = client.build("POST", "/v1/members", body=link_body(), idempotency_key=unique_id("k"))
    claim_like(sessions, partner.id, request)

    before = row_counts(sessions)
    assert_problem(http.send(request), 409, "request_in_progress")
    assert row_counts(sessions) == before
    assert record_state(sessions, partner.id, request.headers["idempotency-key"]) == "in_progress"


def test_claim_with_an_expired_lease_is_taken_over(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    key = unique_id("k")
    request = client.build("POST", "/v1/members", body=link_body(), idempotency_key=key)
    claim_like(sessions, partner.id, request)
    # The first attempt's worker died: its lease ran out.
    with sessions() as session, session.begin():
        session.execute(
            update(idempotency_records)
            .where(idempotency_records.c.partner_id == partner.id, idempotency_records.c.key == key)
            .values(lease_until=text("now() - interval '1 second'"))
        )

    response = http.send(request)
    assert response.status_code == 201, response.text
    assert record_state(sessions, partner.id, key) == "done"


def test_same_key_at_two_partners_is_two_requests(
    sessions: sessionmaker[Session],
    client: PartnerClient,
    other_client: PartnerClient,
    http: TestClient,
) -> None:
    key, body = unique_id("k"), link_body()
    before = row_counts(sessions)
    mine = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    theirs = http.send(other_client.build("POST", "/v1/members", body=body, idempotency_key=key))

    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["member_id"] != theirs.json()["member_id"]
    after = row_counts(sessions)
    assert after["members"] == before["members"] + 2
    assert after["idempotency_records"] == before["idempotency_records"] + 2


def test_purge_forgets_only_old_idempotency_records(
    sessions: sessionmaker[Session], session: Session
) -> None:
    partner = create_partner(sessions, with_key=False, with_rates=False)
    old, fresh = unique_id("old"), unique_id("fresh")
    for key in (old, fresh):
        idempotency.claim(session, partner.id, key, idempotency.request_hash("POST", "/", "", b""))
    session.execute(
        update(idempotency_records)
        .where(idempotency_records.c.key == old)
        .values(created_at=text("now() - interval '49 hours'"))
    )

    assert idempotency.purge(session) >= 1
    left = session.execute(
        select(idempotency_records.c.key).where(idempotency_records.c.partner_id == partner.id)
    ).scalars()
    assert list(left) == [fresh]


def test_purge_forgets_only_nonces_too_old_to_be_replayed(session: Session) -> None:
    key_id = unique_id("key")
    nonces = {age: unique_id("n") for age in (331, 300, 0)}
    for age, nonce in nonces.items():
        session.execute(
            request_nonces.insert().values(
                key_id=key_id, nonce=nonce, seen_at=text(f"now() - interval '{age} seconds'")
            )
        )

    assert auth.purge_nonces(session) >= 1
    left = session.execute(
        select(request_nonces.c.nonce).where(request_nonces.c.key_id == key_id)
    ).scalars()
    # A nonce is kept while a request carrying it could pass: 300 s old plus 30 s of skew.
    assert set(left) == {nonces[300], nonces[0]}
