"""Typed builders for the signed partner API: partners with fresh keys, signed requests of any
shape (including ones PartnerClient would never build), and the checks every refusal shares."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api.tables import idempotency_records
from clearinghouse.members.tables import member_links, members
from partners import directory, keys, rates
from partners.auth import Unauthorized
from partners.client import PartnerClient, covered
from partners.signing import sign_request

PROBLEM_JSON = "application/problem+json"
UNAUTHORIZED_DETAIL = Unauthorized().detail
TEST_BASE_URL = "http://testserver"

_counter = itertools.count(1)


def unique_id(prefix: str) -> str:
    """A fresh slug (partner, store and key ids share the pattern ^[a-z0-9][a-z0-9_-]{1,39}$)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}{next(_counter)}"


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class ApiPartner:
    id: str
    key: SigningKey
    store_id: str

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self.key.private_key


def add_key(sessions: sessionmaker[Session], partner_id: str) -> SigningKey:
    """Register a freshly generated Ed25519 key for the partner; committed."""
    private_key = Ed25519PrivateKey.generate()
    with sessions() as session, session.begin():
        record = keys.register_key(session, partner_id, private_key.public_key())
    return SigningKey(record.id, private_key)


def create_partner(
    sessions: sessionmaker[Session], *, with_rates: bool = True, with_key: bool = True
) -> ApiPartner:
    """An active online merchant with one store, a generated key and rates; committed."""
    partner_id = unique_id("p")
    store_id = unique_id("s")
    private_key = Ed25519PrivateKey.generate()
    key_id = ""
    with sessions() as session, session.begin():
        directory.create_partner(session, partner_id, f"Partner {partner_id}", "online_merchant")
        if with_key:
            key_id = keys.register_key(session, partner_id, private_key.public_key()).id
        if with_rates:
            rates.set_rates(
                session, partner_id, earn_rate="1", issue_price="0.8", redemption_value="0.7"
            )
        directory.add_store(
            session, partner_id, store_id, name="Flagship", channel="offline", city="Shanghai"
        )
    return ApiPartner(partner_id, SigningKey(key_id, private_key), store_id)


def client_for(
    key: SigningKey | ApiPartner, http: httpx.Client, base_url: str = TEST_BASE_URL
) -> PartnerClient:
    signing_key = key.key if isinstance(key, ApiPartner) else key
    return PartnerClient(base_url, signing_key.key_id, signing_key.private_key, http=http)


def signed_request(
    http: httpx.Client,
    key: SigningKey,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    idempotency_key: str | None = None,
    created: datetime | int | None = None,
    keyid: str | None = None,
) -> httpx.Request:
    """A request signed as PartnerClient.build signs it, but with any method, a chosen
    `created`, keyid, and an Idempotency-Key only when one is given."""
    headers = {"Accept": "application/json"}
    content = b""
    if body is not None:
        content = json.dumps(body, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    request = http.build_request(method, path, params=params, content=content, headers=headers)
    request.headers.update(
        sign_request(
            covered(request),
            private_key=key.private_key,
            keyid=keyid or key.key_id,
            created=created,
        )
    )
    return request


def altered(
    request: httpx.Request,
    *,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    content: bytes | None = None,
    headers: dict[str, str | None] | None = None,
) -> httpx.Request:
    """The same request, headers and signature included, with one part changed after signing;
    a header set to None is removed."""
    new_headers = {k: v for k, v in request.headers.items() if k != "content-length"}
    for name, value in (headers or {}).items():
        new_headers.pop(name.lower(), None)
        if value is not None:
            new_headers[name.lower()] = value
    return httpx.Request(
        method or request.method,
        url or request.url,
        headers=new_headers,
        content=request.content if content is None else content,
    )


def link_body(customer_ref: str | None = None) -> dict[str, str]:
    return {"customer_ref": customer_ref or unique_id("c")}


def row_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Rows in the tables a partner request can write to."""
    with sessions() as session:
        return {
            table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (members, member_links, idempotency_records)
        }


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem of this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"].endswith("/" + code.replace("_", "-"))
    assert problem["title"]
    assert problem["detail"]
    return problem


def assert_unauthorized(response: httpx.Response) -> None:
    """401 with the one generic message, whatever check failed."""
    problem = assert_problem(response, 401, "unauthorized")
    assert problem["detail"] == UNAUTHORIZED_DETAIL
