"""Keys scoped to one store (and a terminal in it): such a key acts for its store alone, a
request that names no store takes the key's, another store's purchases, holds and the store
itself are unknown to it (to read them, to capture or void a hold, to refund a purchase or a
redemption), and the key can be revoked without touching the partner's other keys; a key past
its expiry is refused as a retired one is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.errors import DomainError
from partners import keys
from partners.auth import KeyScope
from partners.client import PartnerClient
from tests.builders.calls import buy, capture, enrol, hold, purchase_body, redeem, refund
from tests.builders.http import assert_problem, assert_unauthorized, client_for, refused
from tests.builders.partners import ApiPartner, add_key, add_store, make_partner


@pytest.fixture
def chain(sessions: sessionmaker[Session]) -> ApiPartner:
    """A store chain with rates and an issuance limit, its key partner-wide."""
    return make_partner(sessions, kind="store_chain")


def store_client(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> PartnerClient:
    """A client signing with a new key of the partner's first store, held by terminal till-1."""
    key = add_key(sessions, partner.id, scope=KeyScope(partner.store_id, "till-1"))
    return client_for(key, http)


def test_a_store_key_acts_for_its_own_store_only(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    member_id = enrol(till)

    problem = refused(403, "key_scope", buy, till, member_id, 10_000, store_id=other_store)
    assert other_store in problem["detail"]
    refused(403, "key_scope", hold, till, member_id, 100, store_id=other_store)
    refused(403, "key_scope", redeem, till, member_id, 100, store_id=other_store)

    # Naming no store is naming the key's; naming it is allowed.
    unnamed = buy(till, member_id, 52_000)
    assert till.get(f"/v1/purchases/{unnamed['partner_txn_id']}")["store_id"] == chain.store_id
    named = buy(till, member_id, 10_000, store_id=chain.store_id)
    assert till.get(f"/v1/purchases/{named['partner_txn_id']}")["store_id"] == chain.store_id
    assert hold(till, member_id, 100)["store_id"] == chain.store_id
    assert redeem(till, member_id, 100)["store_id"] == chain.store_id

    # The partner's own key still acts for every store.
    everywhere = client_for(chain, http)
    assert hold(everywhere, member_id, 100, store_id=other_store)["store_id"] == other_store


def test_another_store_s_data_is_unknown_to_a_store_key(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    everywhere = client_for(chain, http)
    member_id = enrol(everywhere)
    there = buy(everywhere, member_id, 52_000, store_id=other_store)["partner_txn_id"]
    nowhere = buy(everywhere, member_id, 10_000)["partner_txn_id"]
    held_there = hold(everywhere, member_id, 100, store_id=other_store)["hold_id"]
    here = buy(till, member_id, 10_000)["partner_txn_id"]
    held_here = hold(till, member_id, 100)["hold_id"]

    for path, code in (
        (f"/v1/purchases/{there}", "purchase_not_found"),
        (f"/v1/purchases/{nowhere}", "purchase_not_found"),
        (f"/v1/holds/{held_there}", "hold_not_found"),
        (f"/v1/stores/{other_store}", "store_not_found"),
    ):
        assert_problem(http.send(till.build("GET", path)), 404, code)
        assert everywhere.get(path)

    assert till.get(f"/v1/purchases/{here}")["store_id"] == chain.store_id
    assert till.get(f"/v1/holds/{held_here}")["store_id"] == chain.store_id
    assert till.get(f"/v1/stores/{chain.store_id}")["id"] == chain.store_id
    assert [store["id"] for store in till.get("/v1/stores")] == [chain.store_id]
    assert {store["id"] for store in everywhere.get("/v1/stores")} == {chain.store_id, other_store}


def test_a_store_key_cannot_act_on_another_store_s_holds_and_purchases(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    everywhere = client_for(chain, http)
    member_id = enrol(everywhere)
    # Earned at no store, and too little at the other one for its holds to wait for review.
    nowhere = buy(everywhere, member_id, 52_000)["partner_txn_id"]
    there = buy(everywhere, member_id, 10_000, store_id=other_store)["partner_txn_id"]
    held_there = hold(everywhere, member_id, 100, store_id=other_store)["hold_id"]
    held_nowhere = hold(everywhere, member_id, 100)["hold_id"]
    redeemed_there = redeem(everywhere, member_id, 100, store_id=other_store)["hold_id"]
    refund_body = {"refund_id": "r-1", "amount_fen": 10_000}

    for path, body, code in (
        (f"/v1/holds/{held_there}/capture", {}, "hold_not_found"),
        (f"/v1/holds/{held_there}/void", {}, "hold_not_found"),
        (f"/v1/holds/{held_nowhere}/capture", {}, "hold_not_found"),
        (f"/v1/holds/{held_nowhere}/void", {}, "hold_not_found"),
        (f"/v1/purchases/{there}/refunds", refund_body, "purchase_not_found"),
        (f"/v1/purchases/{nowhere}/refunds", refund_body, "purchase_not_found"),
        (f"/v1/holds/{redeemed_there}/refunds", {"points": 50}, "hold_not_found"),
    ):
        problem = assert_problem(http.send(till.build("POST", path, body=body)), 404, code)
        assert other_store not in problem["detail"]

    # Nothing was done to them, and the partner's own key still acts on every one.
    assert everywhere.get(f"/v1/holds/{held_there}")["state"] == "held"
    assert everywhere.get(f"/v1/purchases/{there}")["refunded_fen"] == 0
    assert capture(everywhere, held_there)["state"] == "captured"
    assert everywhere.post(f"/v1/holds/{held_nowhere}/void", {})["state"] == "voided"
    assert refund(everywhere, there, 10_000, "r-1")["amount_fen"] == 10_000
    assert refund(everywhere, nowhere, 10_000, "r-1")["amount_fen"] == 10_000
    refunded = everywhere.post(f"/v1/holds/{redeemed_there}/refunds", {"points": 50})
    assert refunded["refunded_total"] == 50


def test_a_store_key_acts_on_its_own_store_s_holds_and_purchases(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    everywhere = client_for(chain, http)
    member_id = enrol(till)
    buy(everywhere, member_id, 52_000)
    # Made with the partner's own key at the till's store: the till's to act on as well.
    bought = buy(everywhere, member_id, 10_000, store_id=chain.store_id)["partner_txn_id"]
    to_void = hold(everywhere, member_id, 100, store_id=chain.store_id)["hold_id"]
    to_capture = hold(till, member_id, 100)["hold_id"]
    redeemed = redeem(till, member_id, 100)["hold_id"]

    assert capture(till, to_capture)["state"] == "captured"
    assert till.post(f"/v1/holds/{to_void}/void", {})["state"] == "voided"
    assert refund(till, bought, 10_000)["amount_fen"] == 10_000
    assert till.get(f"/v1/purchases/{bought}")["refunded_fen"] == 10_000
    assert till.post(f"/v1/holds/{redeemed}/refunds", {"points": 50})["refunded_total"] == 50


def test_a_refusal_for_another_store_is_the_idempotency_key_s_answer(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    body = purchase_body(enrol(till), 10_000, store_id=other_store)

    first = http.send(till.build("POST", "/v1/purchases", body=body, idempotency_key="k-1"))
    assert_problem(first, 403, "key_scope")
    again = http.send(till.build("POST", "/v1/purchases", body=body, idempotency_key="k-1"))
    assert_problem(again, 403, "key_scope")
    assert again.headers["idempotent-replayed"] == "true"


def test_revoking_a_store_s_key_leaves_the_partner_s_other_keys_working(
    sessions: sessionmaker[Session], chain: ApiPartner, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    till = store_client(sessions, chain, http)
    other_till = client_for(add_key(sessions, chain.id, scope=KeyScope(other_store)), http)
    everywhere = client_for(chain, http)
    member_id = enrol(everywhere)

    with sessions() as session, session.begin():
        keys.revoke_key(session, till.key_id)

    assert_unauthorized(http.send(till.build("GET", "/v1/partner")))
    assert buy(other_till, member_id, 10_000)["points"] > 0
    assert buy(everywhere, member_id, 10_000, store_id=chain.store_id)["points"] > 0


def test_two_active_keys_per_scope(sessions: sessionmaker[Session], partner: ApiPartner) -> None:
    # The partner's first key is partner-wide; a store has room for two keys of its own.
    store = KeyScope(partner.store_id)
    add_key(sessions, partner.id)
    add_key(sessions, partner.id, scope=store)
    add_key(sessions, partner.id, scope=store)
    add_key(sessions, partner.id, scope=KeyScope(partner.store_id, "till-1"))
    for scope in (KeyScope(), store):
        with pytest.raises(keys.TooManyKeys, match=f"2 active keys for {scope}:"):
            add_key(sessions, partner.id, scope=scope)


def test_an_expired_key_is_refused(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    http: TestClient,
    manual_clock: clock.Manual,
) -> None:
    key = add_key(
        sessions,
        partner.id,
        scope=KeyScope(partner.store_id),
        expires_at=clock.now() + timedelta(minutes=1),
    )
    till = client_for(key, http)
    assert till.get("/v1/partner")["id"] == partner.id

    manual_clock.advance(minutes=2)
    assert_unauthorized(http.send(till.build("GET", "/v1/partner")))
    assert_unauthorized(http.send(till.build("POST", "/v1/members", body={"customer_ref": "c"})))
    assert client_for(partner, http).get("/v1/partner")["id"] == partner.id


@pytest.mark.parametrize(
    ("store", "terminal", "detail"),
    [
        ("other partner's", None, "no store"),
        (None, "till-1", "name its store too"),
        ("own", "till 1", "a terminal id is"),
    ],
)
def test_a_scope_is_a_store_of_the_partner_s_and_a_terminal_in_it(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    other_partner: ApiPartner,
    store: str | None,
    terminal: str | None,
    detail: str,
) -> None:
    store_id = {"own": partner.store_id, "other partner's": other_partner.store_id}.get(store or "")
    with pytest.raises(DomainError, match=detail):
        add_key(sessions, partner.id, scope=KeyScope(store_id, terminal))
