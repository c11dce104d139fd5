"""Idempotent POSTs: a retry gets the first answer and posts nothing twice, waiting for it
while the first still runs; a key reused for another request is refused; a request that fails
before it answers leaves nothing; old records are purged."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api import idempotency
from clearinghouse.api.tables import idempotency_records
from clearinghouse.database import Tx
from clearinghouse.jobs import purge_expired
from partners import auth, keys
from partners.client import PartnerClient
from partners.tables import request_nonces
from tests.builders.calls import link_body
from tests.builders.http import assert_problem, row_counts
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, make_partner


def waiting_on_locks(sessions: sessionmaker[Session], count: int) -> None:
    """Return once `count` other backends of this database wait on an advisory lock."""
    deadline = time.monotonic() + 30
    while True:
        with sessions() as session:
            waiting = session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                )
            ).scalar_one()
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} of {count} requests waiting"
        time.sleep(0.02)


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


def test_a_retry_while_the_first_still_runs_waits_for_its_answer(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    key, body = unique_id("k"), link_body()
    before = row_counts(sessions)
    # Hold the first request inside its work: linking a customer takes this lock.
    with sessions() as blocker, blocker.begin():
        blocker.execute(
            select(
                func.pg_advisory_xact_lock(func.hashtext(f"{partner.id}:{body['customer_ref']}"))
            )
        )
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                http.send, client.build("POST", "/v1/members", body=body, idempotency_key=key)
            )
            waiting_on_locks(sessions, 1)
            retry = pool.submit(
                http.send, client.build("POST", "/v1/members", body=body, idempotency_key=key)
            )
            # The retry waits on the key, the first on the customer's lock.
            waiting_on_locks(sessions, 2)
            blocker.rollback()
            answers = first.result(timeout=30), retry.result(timeout=30)

    assert answers[0].status_code == 201, answers[0].text
    assert "idempotent-replayed" not in answers[0].headers
    assert answers[1].status_code == 201
    assert answers[1].content == answers[0].content
    assert answers[1].headers["idempotent-replayed"] == "true"
    after = row_counts(sessions)
    assert after["member_links"] == before["member_links"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1


def test_a_request_that_fails_before_its_answer_leaves_nothing_and_runs_again_at_once(
    sessions: sessionmaker[Session],
    client: PartnerClient,
    http: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, body = unique_id("k"), link_body()
    before = row_counts(sessions)

    def crash(*args: object) -> None:
        raise RuntimeError("the process died before it answered")

    with monkeypatch.context() as patched:
        patched.setattr(idempotency, "store", crash)
        failed = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert_problem(failed, 500, "internal_error")
    assert row_counts(sessions) == before

    retry = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    after = row_counts(sessions)
    assert after["member_links"] == before["member_links"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1


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
    partner = make_partner(sessions, key=False, rates=False, limit_fen=0)
    old, fresh = unique_id("old"), unique_id("fresh")
    answer = idempotency.StoredResponse(201, [("content-type", "application/json")], b"{}")
    tx = Tx.of(session)
    for key in (old, fresh):
        idempotency.store(
            tx, partner.id, key, idempotency.request_hash("POST", "/", "", b""), answer
        )
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


def test_the_purge_keeps_each_keys_last_use(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    """A key's last use is read from the nonces its requests spent; the purge writes it to the
    key before it forgets them."""
    client.get("/v1/partner")
    with sessions() as session, session.begin():
        used_at = session.execute(
            update(request_nonces)
            .where(request_nonces.c.key_id == partner.key_id)
            .values(seen_at=text("now() - interval '331 seconds'"))
            .returning(request_nonces.c.seen_at)
        ).scalar_one()

    purge_expired(sessions)

    with sessions() as session:
        left = session.execute(
            select(func.count()).where(request_nonces.c.key_id == partner.key_id)
        ).scalar_one()
        (key,) = [k for k in keys.list_keys(session, partner.id) if k.id == partner.key_id]
    assert left == 0
    assert key.last_used_at == used_at
