"""Clients of the app and the checks every refusal shares: a TestClient with an address of its
own, a PartnerClient for a partner's key, requests signed by hand in shapes PartnerClient would
never build (and altered after signing), and RFC 9457 problems, whether answered (assert_problem)
or raised by PartnerClient (refused)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from clearinghouse.api.tables import idempotency_records
from clearinghouse.members.tables import member_links, members
from partners.auth import Unauthorized
from partners.client import PartnerClient, ProblemError, covered
from partners.signing import sign_request
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, SigningKey

PROBLEM_JSON = "application/problem+json"
UNAUTHORIZED_DETAIL = Unauthorized().detail
TEST_BASE_URL = "http://testserver"


def own_client(app: ASGIApp, address: str | None = None, **options: Any) -> TestClient:
    """A TestClient with an address of its own (unless given one), as every real client has:
    the failed authentications of one test never count against another's rate limit."""
    return TestClient(
        app,
        raise_server_exceptions=False,
        client=(address or unique_id("client-"), 50000),
        **options,
    )


def client_for(
    key: SigningKey | ApiPartner, http: httpx.Client, base_url: str = TEST_BASE_URL
) -> PartnerClient:
    """The partner's (or the key's) signing client over `http`."""
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


def refused(status: int, code: str, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a signed request that must be refused with this status and code; its problem."""
    with pytest.raises(ProblemError) as caught:
        call(*args, **kwargs)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value.problem
    return caught.value.problem
