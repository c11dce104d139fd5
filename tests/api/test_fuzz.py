"""Schema-driven fuzzing: Schemathesis draws requests for every operation of the published
document, ones that fit the schema and ones that do not, and each is sent signed with a
partner's key (under /v1/) or with a staff token of the route's role. No answer may be a
server error, and each operation must be reached past the gate and the validation: a fuzzer
refused at the door tests nothing.

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.app import create_app
from clearinghouse.users.service import create_user
from partners.client import covered
from partners.signing import sign_request
from tests.builders.http import own_client
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, make_partner

# A batch file's body is JSON Lines: lines of purchases with drawn fields, and lines that are not
# JSON at all, as a till's file may hold.
_BATCH_LINE = st.one_of(
    st.builds(
        lambda txn, amount: json.dumps(
            {
                "type": "purchase",
                "partner_txn_id": txn,
                "member_id": "M000000000000",
                "amount_fen": amount,
                "occurred_at": "2026-11-30T10:00:00+08:00",
            }
        ),
        st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True),
        st.integers(-5, 10**6),
    ),
    st.text(max_size=40),
)
schemathesis.openapi.media_type(
    "application/x-ndjson",
    st.lists(_BATCH_LINE, max_size=5).map(lambda lines: "\n".join(lines).encode()),
)
SPEC = create_app().openapi()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = [
    (path, method.upper())
    for path, operations in SPEC["paths"].items()
    for method in operations
    if method in {"get", "post", "put", "patch", "delete"}
]
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 6}
STAFF_ROLES = {"/finance/": "finance", "/audit/": "auditor", "/operator/": "operator"}
SIGNATURE_HEADERS = {"signature", "signature-input", "content-digest", "authorization"}
# Answers that come before the route's own work: the gate, the token check, validation.
AT_THE_DOOR = {
    "unauthorized",
    "not_signed_in",
    "forbidden",
    "validation_error",
    "idempotency_key_required",
    "unsupported_media_type",
    "not_found",
}


def _request(http: TestClient, case: Any) -> httpx.Request:
    """The generated request, without the signature headers Schemathesis made up."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() not in SIGNATURE_HEADERS}
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    else:
        data = kwargs.get("data") or b""
        content = data.encode() if isinstance(data, str) else bytes(data)
    return http.build_request(
        kwargs["method"], kwargs["url"], params=kwargs["params"], headers=headers, content=content
    )


def _signed(request: httpx.Request, partner: ApiPartner) -> httpx.Request:
    try:
        signature = sign_request(
            covered(request), private_key=partner.private_key, keyid=partner.key_id
        )
    except ValueError:
        # Not signable (a body without its Idempotency-Key, say): sent as it is, it must be
        # refused all the same.
        return request
    request.headers.update(signature)
    return request


@pytest.fixture
def fuzzer(app: FastAPI) -> Iterator[TestClient]:
    """A client with an address of its own: the refusals the fuzzing provokes count against no
    other test's rate limit."""
    client = own_client(app)
    yield client
    client.close()


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_request_is_a_server_error(
    path: str, method: str, sessions: sessionmaker[Session], fuzzer: TestClient
) -> None:
    partner = make_partner(sessions)
    role = next((r for prefix, r in STAFF_ROLES.items() if path.startswith(prefix)), None)
    token = ""
    if role is not None:
        with sessions() as session, session.begin():
            _, token = create_user(session, unique_id(role[:3]), role)
    operation = SCHEMA[path][method]
    reached: list[str] = []

    def send(case: Any) -> None:
        request = _request(fuzzer, case)
        if path.startswith("/v1/"):
            request = _signed(request, partner)
        elif token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = fuzzer.send(request)
        assert response.status_code < 500, (request.method, request.url, response.text)
        if response.status_code < 300:
            reached.append(str(response.status_code))
        elif response.headers.get("content-type") == "application/problem+json":
            problem = response.json()
            # A 422 naming request fields is the schema's; one about the content, the route's.
            schema_said = any("field" in e for e in problem.get("errors", []))
            code = problem["code"]
            if code not in AT_THE_DOOR or (code == "validation_error" and not schema_said):
                reached.append(code)

    for mode, examples in EXAMPLES.items():
        fuzz = settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )(given(case=operation.as_strategy(mode))(send))
        try:
            fuzz()
        except Unsatisfiable:
            # An operation with nothing a request can get wrong (no parameter, no body).
            assert mode is GenerationMode.NEGATIVE, f"no request fits {method} {path}"
    assert reached, f"no request reached {method} {path} past the gate and the validation"
