"""Key rotation without downtime: two active keys at once, the old one retired with a deadline,
then revoked; no request fails on the way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners import keys
from partners.client import PartnerClient
from tests.builders.calls import link_body
from tests.builders.http import assert_unauthorized, client_for
from tests.builders.partners import ApiPartner, SigningKey, add_key


def works(client: PartnerClient) -> bool:
    """A GET and a POST signed with this client's key both succeed."""
    partner = client.get("/v1/partner")
    link = client.post("/v1/members", link_body())
    return bool(partner["id"]) and link["member_id"].startswith("M")


def test_rotation_without_downtime(
    sessions: sessionmaker[Session], partner: ApiPartner, http: TestClient
) -> None:
    old = client_for(partner, http)
    assert works(old)

    new_key = add_key(sessions, partner.id)
    new = client_for(new_key, http)
    assert works(old)
    assert works(new)

    with sessions() as session, session.begin(), pytest.raises(keys.TooManyKeys):
        keys.register_key(session, partner.id, Ed25519PrivateKey.generate().public_key())

    with sessions() as session, session.begin():
        keys.retire_key(session, partner.key_id, datetime.now(UTC) + timedelta(days=7))
    assert works(old)
    assert works(new)

    with sessions() as session, session.begin():
        keys.revoke_key(session, partner.key_id)
    assert_unauthorized(http.send(old.build("GET", "/v1/partner")))
    assert_unauthorized(http.send(old.build("POST", "/v1/members", body=link_body())))
    assert works(new)


def test_a_key_signs_only_for_its_own_partner(
    partner: ApiPartner, other_partner: ApiPartner, http: TestClient
) -> None:
    # The other partner's key id with this partner's private key: the signature does not verify.
    impostor = client_for(SigningKey(other_partner.key_id, partner.private_key), http)
    assert_unauthorized(http.send(impostor.build("GET", "/v1/partner")))
