"""Limits on every route: bodies, media types, rate limits shared by every worker, the headers
every answer carries, and answers a client can act on when the server or the database fails."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message

from clearinghouse.api.guard import MAX_BODY_BYTES
from clearinghouse.api.tables import idempotency_records
from clearinghouse.api.throttle import RateLimits
from clearinghouse.app import create_app
from clearinghouse.database import make_engine, session_factory
from clearinghouse.jobs import purge_expired
from partners.gate import Limits
from tests.builders.calls import link_body
from tests.builders.console import Console
from tests.builders.http import assert_problem, assert_unauthorized, client_for, own_client
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner
from tests.builders.users import person, staff

LOW = Limits(rates=RateLimits(partner_requests=3, source_failures=4))


def asgi_call(
    app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[list[Message], list[int]]:
    """The app called as a server would, recording what it sends and how many times it asked
    for the body."""
    sent: list[Message] = []
    reads: list[int] = []

    async def receive() -> Message:
        reads.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": (unique_id("client-"), 1),
        "server": ("testserver", 80),
        "app": app,
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent, reads


def status_of(sent: list[Message]) -> int:
    status: int = sent[0]["status"]
    return status


# Bodies and media types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/finance/settlements/2026-11-30/approve", "/audit/entries", "/operator/cases/1/approve"],
)
def test_a_declared_body_over_the_limit_is_refused_unread_on_every_route(
    app: FastAPI, path: str
) -> None:
    sent, reads = asgi_call(
        app,
        "POST",
        path,
        [(b"content-type", b"application/json"), (b"content-length", b"104857600")],
        b"",
    )
    assert status_of(sent) == 413
    assert reads == []
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_streamed_body_over_the_limit_is_refused_on_a_staff_route(
    sessions: sessionmaker[Session], http: httpx.Client
) -> None:
    chunks = (b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
    response = http.post(
        "/finance/settlements/2026-11-30/reject",
        content=chunks,
        headers={**staff(sessions, "approver").headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")


def test_a_staff_request_without_a_valid_token_is_refused_before_its_body_is_read(
    app: FastAPI,
) -> None:
    for authorization in ([], [(b"authorization", b"Bearer guessed")]):
        sent, reads = asgi_call(
            app,
            "POST",
            "/finance/settlements/2026-11-30/reject",
            [(b"content-type", b"application/json"), *authorization],
            b'{"reason": "x"}',
        )
        assert status_of(sent) == 401
        assert reads == []


def test_a_body_that_is_not_json_is_415(
    sessions: sessionmaker[Session], http: httpx.Client, partner: ApiPartner
) -> None:
    client = client_for(partner, http)
    request = client.build("POST", "/v1/members", body=link_body())
    request.headers["Content-Type"] = "text/plain"
    assert_problem(http.send(request), 415, "unsupported_media_type")
    response = http.post(
        "/finance/settlements/2026-11-30/reject",
        content=b"reason=x",
        headers={**staff(sessions, "approver").headers, "Content-Type": "text/plain"},
    )
    assert_problem(response, 415, "unsupported_media_type")
    # The same request as JSON is served.
    assert http.send(client.build("POST", "/v1/members", body=link_body())).status_code == 201


# Rate limits ----------------------------------------------------------------------------------


def test_a_partner_past_its_limit_gets_429_and_its_key_keeps_no_answer(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    limited = own_client(create_app(sessions, limits=LOW))
    client = client_for(partner, limited)
    for _ in range(3):
        assert limited.send(client.build("GET", "/v1/stores")).status_code == 200
    key = unique_id("k")
    response = limited.send(
        client.build("POST", "/v1/members", body=link_body(), idempotency_key=key)
    )
    problem = assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 10
    assert "retry-after" not in problem
    with sessions() as session:
        stored = session.execute(
            select(idempotency_records.c.key).where(idempotency_records.c.key == key)
        ).all()
    assert stored == []
    # Another partner is not limited by it; and the same request, once allowed, runs.
    generous = own_client(create_app(sessions))
    retried = generous.send(
        client_for(partner, generous).build(
            "POST", "/v1/members", body=link_body(), idempotency_key=key
        )
    )
    assert retried.status_code == 201


def test_a_partners_requests_are_counted_in_batches_shared_by_every_worker(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    now = [1_800_000_000.0]  # the start of a 10-second window
    limits = RateLimits(partner_requests=10, flush_every=4)
    # Two apps on one database stand for two worker processes.
    first, second = (
        own_client(create_app(sessions, limits=Limits(rates=limits), clock=lambda: now[0]))
        for _ in range(2)
    )

    def served(http: httpx.Client) -> int:
        return http.send(client_for(partner, http).build("GET", "/v1/stores")).status_code

    def shared_count() -> int:
        with sessions() as session:
            counted: int = session.execute(
                text("SELECT hits FROM rate_count(:s, 10, to_timestamp(:at))"),
                {"s": f"partner:{partner.id}", "at": now[0]},
            ).scalar_one()
        return counted

    # Each process adds its first request at once, then every fourth.
    assert [served(first) for _ in range(4)] == [200] * 4
    assert shared_count() == 1
    assert served(first) == 200
    assert shared_count() == 5
    assert [served(second) for _ in range(5)] == [200] * 5
    # The second learnt the first's five at its first request: 5 + 5 = 10, the limit.
    assert served(second) == 429
    # The first learns of the second's requests at its next addition to the count.
    assert [served(first) for _ in range(3)] == [200, 200, 200]
    assert served(first) == 429
    assert shared_count() == 14  # past the limit by less than flush_every per process
    # A new window starts from nothing.
    now[0] += 10
    assert served(first) == 200
    assert served(second) == 200


def test_failed_signatures_from_one_source_are_limited_in_every_worker(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    # Two apps on one database stand for two worker processes; one client address. The
    # failures' window stands still: none of them falls into the next one's.
    address = unique_id("client-")
    frozen = time.time()
    first = own_client(create_app(sessions, limits=LOW, clock=lambda: frozen), address)
    second = own_client(create_app(sessions, limits=LOW, clock=lambda: frozen), address)

    def unsigned(http: httpx.Client) -> httpx.Response:
        return http.post(
            "/v1/members", json=link_body(), headers={"Idempotency-Key": unique_id("k")}
        )

    for _ in range(2):
        assert_unauthorized(unsigned(first))
        assert_unauthorized(unsigned(second))
    refused = unsigned(second)
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    # Blocked: even a good signature from that address is refused without being evaluated ...
    good = client_for(partner, second).build("GET", "/v1/stores")
    assert_problem(second.send(good), 429, "rate_limited")
    # ... while another address is served.
    other = own_client(create_app(sessions, limits=LOW))
    assert other.send(client_for(partner, other).build("GET", "/v1/stores")).status_code == 200


def test_bearer_token_guesses_are_limited_per_source(sessions: sessionmaker[Session]) -> None:
    http = own_client(create_app(sessions, limits=LOW))
    token = staff(sessions, "finance").headers
    for guess in range(4):
        response = http.get("/finance/settlements", headers={"Authorization": f"Bearer g{guess}"})
        assert_problem(response, 401, "not_signed_in")
    assert_problem(
        http.get("/finance/settlements", headers={"Authorization": "Bearer g5"}),
        429,
        "rate_limited",
    )
    # The right token from that address waits for the window too.
    assert_problem(http.get("/finance/settlements", headers=token), 429, "rate_limited")


def test_console_sign_ins_are_limited_per_source_across_names(
    sessions: sessionmaker[Session],
) -> None:
    # The failures' window stands still: none of them falls into the next minute's.
    frozen = time.time()
    app = create_app(sessions, limits=LOW, clock=lambda: frozen)
    browser = Console(app)
    people = [person(sessions, "finance") for _ in range(6)]
    statuses = [browser.sign_in(who, password="wrong password").status_code for who in people[:5]]
    assert statuses == [401, 401, 401, 401, 429]
    # The right password of a sixth name from that address is refused as well.
    assert browser.sign_in(people[5]).status_code == 429
    assert Console(app).sign_in(people[5]).status_code == 303


def test_a_window_counts_its_own_hits_and_says_when_it_ends(
    sessions: sessionmaker[Session],
) -> None:
    subject = unique_id("subject-")
    at = datetime(2026, 11, 30, 10, 0, 55, tzinfo=UTC)
    with sessions() as session, session.begin():

        def hit(instant: datetime) -> tuple[int, int]:
            row = session.execute(
                text("SELECT * FROM rate_hit(:s, 60, 1, :at)"), {"s": subject, "at": instant}
            ).one()
            return row.hits, row.retry_after

        assert hit(at) == (1, 5)
        assert hit(at.replace(second=59)) == (2, 1)
        assert hit(at.replace(minute=1, second=0)) == (1, 60)


# Answers a client can act on ------------------------------------------------------------------


def test_a_server_error_closes_the_connection_and_says_so(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    app = create_app(sessions)

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/v1/explode", explode, methods=["GET"])
    http = own_client(app)
    response = http.send(client_for(partner, http).build("GET", "/v1/explode"))
    assert_problem(response, 500, "internal_error")
    assert response.headers["connection"] == "close"


def test_an_unreachable_database_is_a_retryable_503(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    # A port nothing listens on: every connection is refused.
    engine = make_engine("postgresql://nobody@127.0.0.1:9/nowhere", pool_size=1)
    engine.pool._timeout = 2  # type: ignore[attr-defined]
    http = own_client(create_app(session_factory(engine)))
    try:
        client = client_for(partner, http)
        for request in (
            client.build("POST", "/v1/members", body=link_body()),
            client.build("GET", "/v1/stores"),
            http.build_request(
                "GET", "/finance/settlements", headers=staff(sessions, "finance").headers
            ),
        ):
            response = http.send(request)
            problem = assert_problem(response, 503, "database_unavailable")
            assert "Idempotency-Key" in problem["detail"]
            assert response.headers["retry-after"] == "2"
    finally:
        engine.dispose()


# Headers --------------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(
    sessions: sessionmaker[Session], app: FastAPI
) -> None:
    token = staff(sessions, "finance").headers
    plain = own_client(app, follow_redirects=False)
    tls = own_client(app, base_url="https://testserver", follow_redirects=False)
    answers = {
        "json": plain.get("/finance/settlements", headers=token),
        "csv": plain.get("/finance/settlements/2020-01-01/report.csv", headers=token),
        "problem": plain.get("/finance/settlements"),
        "redirect": plain.get("/console/"),
        "page": plain.get("/console/sign-in"),
        "static": plain.get("/console/static/console.css"),
        "over TLS": tls.get("/finance/settlements", headers=token),
    }
    for what, response in answers.items():
        assert response.status_code < 500, what
        assert response.headers["x-content-type-options"] == "nosniff", what
        assert response.headers["x-frame-options"] == "DENY", what
        assert "default-src 'none'" in response.headers["content-security-policy"], what
        if what != "static":
            assert response.headers["cache-control"] == "no-store", what
        assert ("strict-transport-security" in response.headers) == (what == "over TLS"), what


def test_the_purge_forgets_counters_of_past_windows(sessions: sessionmaker[Session]) -> None:
    old, current = unique_id("old-"), unique_id("current-")
    with sessions() as session, session.begin():
        session.execute(text("SELECT rate_hit(:s, 60, 1, now() - interval '2 hours')"), {"s": old})
        session.execute(text("SELECT rate_hit(:s, 60)"), {"s": current})
    purge_expired(sessions)
    with sessions() as session:
        left = session.execute(
            text("SELECT subject FROM rate_counters WHERE subject IN (:o, :c)"),
            {"o": old, "c": current},
        ).scalars()
        assert list(left) == [current]
