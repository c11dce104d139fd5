"""Requests signed by the independent `http-message-signatures` library, not by our own code,
are accepted by the running app: our verifier follows RFC 9421, not only our signer."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi.testclient import TestClient
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver
from http_message_signatures.algorithms import ED25519

from tests.builders.http import TEST_BASE_URL, assert_unauthorized
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner

REQUEST_COMPONENTS = ("@method", "@authority", "@path", "@query")
BODY_COMPONENTS = ("content-digest", "content-type", "idempotency-key")


@dataclass
class LibraryMessage:
    """The request shape the library reads: method, absolute url and a headers mapping."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LibraryKeys(HTTPSignatureKeyResolver):
    key_id: str
    private_key: Ed25519PrivateKey

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        assert key_id == self.key_id
        return self.private_key.public_key()

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        assert key_id == self.key_id
        return self.private_key


def library_sign(
    partner: ApiPartner, message: LibraryMessage, body: bytes | None, *components: str
) -> None:
    signer = HTTPMessageSigner(
        signature_algorithm=ED25519,
        key_resolver=LibraryKeys(partner.key_id, partner.private_key),
    )
    signer.sign(
        message,
        key_id=partner.key_id,
        created=datetime.now(UTC),
        nonce=secrets.token_urlsafe(16),
        label="sig1",
        include_alg=True,
        covered_component_ids=components,
        body=body,  # the library computes the Content-Digest itself
    )


def test_post_signed_by_the_library_is_accepted(partner: ApiPartner, http: TestClient) -> None:
    body = json.dumps({"customer_ref": unique_id("c")}).encode()
    message = LibraryMessage(
        "POST",
        f"{TEST_BASE_URL}/v1/members",
        {"Content-Type": "application/json", "Idempotency-Key": unique_id("k")},
    )
    library_sign(partner, message, body, *REQUEST_COMPONENTS, *BODY_COMPONENTS)
    assert set(message.headers) == {
        "Content-Type",
        "Idempotency-Key",
        "Content-Digest",
        "Signature-Input",
        "Signature",
    }
    signature_input = message.headers["Signature-Input"]
    for param in ("created=", f'keyid="{partner.key_id}"', "nonce=", 'alg="ed25519"'):
        assert param in signature_input

    response = http.post("/v1/members", content=body, headers=message.headers)
    assert response.status_code == 201, response.text

    # The library's signature covers the body like ours does.
    again = LibraryMessage(
        "POST",
        f"{TEST_BASE_URL}/v1/members",
        {"Content-Type": "application/json", "Idempotency-Key": unique_id("k")},
    )
    library_sign(partner, again, body, *REQUEST_COMPONENTS, *BODY_COMPONENTS)
    other_body = json.dumps({"customer_ref": unique_id("c")}).encode()
    assert_unauthorized(http.post("/v1/members", content=other_body, headers=again.headers))


def test_get_signed_by_the_library_is_accepted(partner: ApiPartner, http: TestClient) -> None:
    message = LibraryMessage(
        "GET", f"{TEST_BASE_URL}/v1/stores?channel=offline", {"Accept": "application/json"}
    )
    library_sign(partner, message, None, *REQUEST_COMPONENTS)

    response = http.get("/v1/stores", params={"channel": "offline"}, headers=message.headers)
    assert response.status_code == 200, response.text
    assert [store["id"] for store in response.json()] == [partner.store_id]
