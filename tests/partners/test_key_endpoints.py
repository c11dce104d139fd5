"""A partner manages its own API keys through the signed API (/v1/keys), with a key for all its
stores: it registers keys for one store (and a terminal in it), with an expiry, lists its keys
with their scope and last use, retires and revokes them. A store's key manages none; another
partner's keys are unknown; the partner's last active key for all stores is kept."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from partners import keys
from partners.auth import KeyScope
from partners.client import PartnerClient
from partners.signing import public_key_to_pem
from tests.builders.calls import buy, enrol
from tests.builders.http import assert_problem, assert_unauthorized, client_for, refused
from tests.builders.partners import ApiPartner, SigningKey, add_key, add_store, make_partner

KEY_FIELDS = {
    "id",
    "algorithm",
    "public_key",
    "status",
    "store_id",
    "terminal_id",
    "expires_at",
    "retire_at",
    "created_at",
    "revoked_at",
    "last_used_at",
}


@pytest.fixture
def chain(sessions: sessionmaker[Session]) -> ApiPartner:
    """A store chain with one store, rates and a key for all its stores."""
    return make_partner(sessions, kind="store_chain")


@pytest.fixture
def everywhere(chain: ApiPartner, http: TestClient) -> PartnerClient:
    """The chain's client, signing with its key for all stores."""
    return client_for(chain, http)


def register(client: PartnerClient, **fields: Any) -> tuple[SigningKey, dict[str, Any]]:
    """Make a key pair and register its public key through the API; the signing key and the
    answer."""
    private_key = Ed25519PrivateKey.generate()
    pem = public_key_to_pem(private_key.public_key()).decode()
    answer = client.post("/v1/keys", {"public_key": pem, **fields})
    return SigningKey(answer["id"], private_key), answer


def listed(client: PartnerClient) -> dict[str, dict[str, Any]]:
    return {key["id"]: key for key in client.get("/v1/keys")}


def test_a_key_for_all_stores_registers_a_store_key_that_acts_for_its_store_alone(
    sessions: sessionmaker[Session], chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    key, answer = register(
        everywhere, key_id=f"{chain.id}-till-1", store_id=chain.store_id, terminal_id="till-1"
    )
    assert set(answer) == KEY_FIELDS
    assert answer["id"] == f"{chain.id}-till-1"
    assert (answer["status"], answer["store_id"], answer["terminal_id"]) == (
        "active",
        chain.store_id,
        "till-1",
    )
    assert answer["public_key"] == public_key_to_pem(key.private_key.public_key()).decode()
    assert answer["last_used_at"] is None

    till = client_for(key, http)
    member_id = enrol(till)
    assert buy(till, member_id, 10_000)["points"] > 0
    assert till.get(f"/v1/stores/{chain.store_id}")["id"] == chain.store_id
    refused(403, "key_scope", buy, till, member_id, 10_000, store_id=other_store)
    assert_problem(
        http.send(till.build("GET", f"/v1/stores/{other_store}")), 404, "store_not_found"
    )


def test_a_store_key_manages_no_keys(
    sessions: sessionmaker[Session], chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    store_key = add_key(sessions, chain.id, scope=KeyScope(chain.store_id, "till-1"))
    till = client_for(store_key, http)
    pem = public_key_to_pem(Ed25519PrivateKey.generate().public_key()).decode()

    for method, path, body in (
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"public_key": pem, "store_id": chain.store_id}),
        ("POST", f"/v1/keys/{store_key.key_id}/retire", {}),
        ("POST", f"/v1/keys/{store_key.key_id}/revoke", None),
        ("POST", f"/v1/keys/{chain.key_id}/revoke", None),
    ):
        problem = assert_problem(http.send(till.build(method, path, body=body)), 403, "key_scope")
        assert "a key for all the partner's stores" in problem["detail"]

    # The refusal is the Idempotency-Key's answer, as any other refusal is.
    again = till.build("POST", f"/v1/keys/{chain.key_id}/revoke", idempotency_key="k-1")
    assert_problem(http.send(again), 403, "key_scope")
    replayed = http.send(
        till.build("POST", f"/v1/keys/{chain.key_id}/revoke", idempotency_key="k-1")
    )
    assert_problem(replayed, 403, "key_scope")
    assert replayed.headers["idempotent-replayed"] == "true"

    assert {k["id"]: k["status"] for k in everywhere.get("/v1/keys")} == {
        chain.key_id: "active",
        store_key.key_id: "active",
    }
    assert till.get("/v1/partner")["id"] == chain.id


def test_revoking_a_store_s_key_leaves_the_rest_of_the_partner_working(
    sessions: sessionmaker[Session], chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    other_store = add_store(sessions, chain.id)
    key, _ = register(everywhere, store_id=chain.store_id)
    other_till = client_for(add_key(sessions, chain.id, scope=KeyScope(other_store)), http)
    till = client_for(key, http)
    member_id = enrol(till)

    revoked = everywhere.post(f"/v1/keys/{key.key_id}/revoke", None)
    assert (revoked["status"], revoked["store_id"]) == ("revoked", chain.store_id)
    assert revoked["revoked_at"] is not None

    assert_unauthorized(http.send(till.build("GET", "/v1/partner")))
    assert buy(everywhere, member_id, 10_000, store_id=chain.store_id)["points"] > 0
    assert buy(other_till, member_id, 10_000)["points"] > 0
    refused(409, "conflict", everywhere.post, f"/v1/keys/{key.key_id}/revoke", None)


def test_the_listing_shows_each_key_s_scope_expiry_and_last_use(
    chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    expiry = clock.now() + timedelta(days=30)
    key, _ = register(
        everywhere, store_id=chain.store_id, terminal_id="till-1", expires_at=expiry.isoformat()
    )
    before = listed(everywhere)
    assert before[key.key_id]["last_used_at"] is None

    client_for(key, http).get("/v1/partner")
    after = listed(everywhere)
    assert set(after) == {chain.key_id, key.key_id}
    for answer in after.values():
        assert set(answer) == KEY_FIELDS  # the public key and its record, nothing secret
    till, own = after[key.key_id], after[chain.key_id]
    assert (till["store_id"], till["terminal_id"]) == (chain.store_id, "till-1")
    assert datetime.fromisoformat(till["expires_at"]) == expiry
    assert till["last_used_at"] is not None
    # The key for all stores was last used by the listing itself.
    assert (own["store_id"], own["terminal_id"], own["expires_at"]) == (None, None, None)
    assert datetime.fromisoformat(own["last_used_at"]) >= datetime.fromisoformat(
        till["last_used_at"]
    )


def test_a_key_registered_with_an_expiry_is_refused_after_it(
    chain: ApiPartner, everywhere: PartnerClient, http: TestClient, manual_clock: clock.Manual
) -> None:
    expiry = clock.now() + timedelta(minutes=1)
    key, _ = register(everywhere, store_id=chain.store_id, expires_at=expiry.isoformat())
    till = client_for(key, http)
    assert till.get("/v1/partner")["id"] == chain.id

    manual_clock.advance(minutes=2)
    assert_unauthorized(http.send(till.build("GET", "/v1/partner")))
    assert everywhere.get("/v1/partner")["id"] == chain.id

    past = clock.now().isoformat()
    problem = refused(422, "validation_error", register, everywhere, expires_at=past)
    assert "the expiry must be in the future" in problem["detail"]


def test_a_retired_key_works_until_its_deadline(
    chain: ApiPartner, everywhere: PartnerClient, http: TestClient, manual_clock: clock.Manual
) -> None:
    by_days, _ = register(everywhere, store_id=chain.store_id)
    by_instant, _ = register(everywhere, store_id=chain.store_id)
    now = clock.now()

    retired = everywhere.post(f"/v1/keys/{by_days.key_id}/retire", {"days": 1})
    assert retired["status"] == "retiring"
    assert datetime.fromisoformat(retired["retire_at"]) == now + timedelta(days=1)
    default = everywhere.post(f"/v1/keys/{by_instant.key_id}/retire", {})
    assert datetime.fromisoformat(default["retire_at"]) == now + timedelta(days=7)
    deadline = (now + timedelta(minutes=1)).isoformat()
    at = everywhere.post(f"/v1/keys/{by_instant.key_id}/retire", {"retire_at": deadline})
    assert datetime.fromisoformat(at["retire_at"]) == now + timedelta(minutes=1)
    both = {"days": 1, "retire_at": deadline}
    refused(422, "validation_error", everywhere.post, f"/v1/keys/{by_days.key_id}/retire", both)

    manual_clock.advance(minutes=2)
    assert client_for(by_days, http).get("/v1/partner")["id"] == chain.id
    assert_unauthorized(http.send(client_for(by_instant, http).build("GET", "/v1/partner")))


def test_a_scope_holds_two_active_keys_and_names_one_of_the_partner_s_stores(
    sessions: sessionmaker[Session],
    chain: ApiPartner,
    everywhere: PartnerClient,
) -> None:
    other = make_partner(sessions)
    for _ in range(2):
        register(everywhere, store_id=chain.store_id)
    problem = refused(409, "too_many_keys", register, everywhere, store_id=chain.store_id)
    assert f"2 active keys for store {chain.store_id}" in problem["detail"]
    register(everywhere, store_id=chain.store_id, terminal_id="till-1")

    register(everywhere)  # a second key for all stores beside the chain's own
    refused(409, "too_many_keys", register, everywhere)

    refused(404, "store_not_found", register, everywhere, store_id=other.store_id)
    refused(404, "store_not_found", register, everywhere, store_id="no-such-store")
    refused(422, "validation_error", register, everywhere, terminal_id="till-1")
    not_a_key = {"public_key": "not a key"}
    problem = refused(422, "validation_error", everywhere.post, "/v1/keys", not_a_key)
    assert problem["errors"][0]["field"] == "body.public_key"


def test_a_key_is_registered_once_for_one_idempotency_key(
    chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    pem = public_key_to_pem(Ed25519PrivateKey.generate().public_key()).decode()
    body = {"public_key": pem, "store_id": chain.store_id}
    first = http.send(everywhere.build("POST", "/v1/keys", body=body, idempotency_key="k-1"))
    assert first.status_code == 201, first.text
    again = http.send(everywhere.build("POST", "/v1/keys", body=body, idempotency_key="k-1"))
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert len(listed(everywhere)) == 2
    # The same public key under a new Idempotency-Key is a second registration: refused.
    refused(409, "already_exists", everywhere.post, "/v1/keys", body)


def test_another_partner_s_keys_are_unknown(
    sessions: sessionmaker[Session], everywhere: PartnerClient, http: TestClient
) -> None:
    other = make_partner(sessions)
    other_store_key = add_key(sessions, other.id, scope=KeyScope(other.store_id))
    for key_id in (other.key_id, other_store_key.key_id, "no-such-key"):
        for action, body in (("retire", {}), ("revoke", None)):
            path = f"/v1/keys/{key_id}/{action}"
            problem = refused(404, "key_not_found", everywhere.post, path, body)
            assert problem["detail"] == f"no key {key_id}"  # as a key that does not exist
    assert other.key_id not in listed(everywhere)
    assert client_for(other, http).get("/v1/partner")["id"] == other.id
    assert client_for(other_store_key, http).get("/v1/partner")["id"] == other.id


def test_the_last_active_key_for_all_stores_is_kept(
    sessions: sessionmaker[Session], chain: ApiPartner, everywhere: PartnerClient, http: TestClient
) -> None:
    # A store's key does not count: it cannot manage keys.
    register(everywhere, store_id=chain.store_id)
    last = f"/v1/keys/{chain.key_id}"
    for action, body in (("revoke", None), ("retire", {"days": 1})):
        problem = refused(409, "last_partner_wide_key", everywhere.post, f"{last}/{action}", body)
        assert "register another" in problem["detail"]

    # With another key for all stores, the partner may revoke the key it is calling with; the
    # answer is given, and the key is refused from the next request on.
    new_key, _ = register(everywhere)
    assert everywhere.post(f"{last}/revoke", None)["status"] == "revoked"
    assert_unauthorized(http.send(everywhere.build("GET", "/v1/keys")))
    newcomer = client_for(new_key, http)
    assert listed(newcomer)[chain.key_id]["status"] == "revoked"
    refused(409, "last_partner_wide_key", newcomer.post, f"/v1/keys/{new_key.key_id}/revoke", None)

    # The operator is not held to it.
    with sessions() as session, session.begin():
        assert keys.revoke_key(session, new_key.key_id).status == "revoked"
