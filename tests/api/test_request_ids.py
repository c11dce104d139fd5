"""Request ids and the access log: every answer names its request in a Request-Id header and
in its problem+json, and the request's one access line carries the same id; a trusted proxy's
id is kept, anyone else's replaced; a signed request's line names its partner, key, route,
hashed idempotency key and replay; the JSON format writes one parseable line per record."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import logs
from clearinghouse.api.request_ids import MAX_LENGTH
from clearinghouse.app import create_app
from clearinghouse.config import get_settings
from partners.client import PartnerClient
from tests.builders.calls import link_body
from tests.builders.http import assert_problem, own_client
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner

PROXY = "10.20.30.40"


class Lines(logging.Handler):
    """The records of a logger as the JSON format writes them, formatted where they are
    written (a request's bound fields are those of the request's own context)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def of(self, request_id: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        return [line for line in parsed if line.get("request_id") == request_id]


@pytest.fixture
def access() -> Iterator[Lines]:
    logger = logging.getLogger("clearinghouse.access")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


@pytest.fixture
def proxied_app(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FastAPI]:
    monkeypatch.setenv("CLEARINGHOUSE_TRUSTED_PROXIES", "10.20.30.0/24, ::1")
    get_settings.cache_clear()
    yield create_app(sessions)
    get_settings.cache_clear()


def test_a_problem_names_its_request_as_its_header_and_access_line_do(
    http: TestClient, access: Lines
) -> None:
    response = http.get("/v1/members/someone")
    problem = assert_problem(response, 401, "unauthorized")
    request_id = response.headers["request-id"]
    assert problem["request_id"] == request_id
    (line,) = access.of(request_id)
    assert line["logger"] == "clearinghouse.access"
    assert (line["method"], line["route"], line["status"]) == (
        "GET",
        "/v1/members/{member_id}",
        401,
    )
    assert line["latency_ms"] >= 0
    assert line["partner_id"] is None
    assert line["replayed"] is False


def test_every_request_gets_an_id_of_its_own(http: TestClient) -> None:
    first, second = http.get("/healthz"), http.get("/healthz")
    assert first.headers["request-id"] != second.headers["request-id"]


def test_a_trusted_proxys_id_is_kept(proxied_app: FastAPI, access: Lines) -> None:
    offered = unique_id("edge-") + "/" + "x" * 40
    response = own_client(proxied_app, PROXY).get(
        "/v1/members/someone", headers={"Request-Id": offered}
    )
    assert response.headers["request-id"] == offered
    assert response.json()["request_id"] == offered
    assert len(access.of(offered)) == 1


@pytest.mark.parametrize(
    "offered",
    ["", "has space", "x" * (MAX_LENGTH + 1), "caf\u00e9"],
    ids=["empty", "space", "too-long", "not-ascii"],
)
def test_a_trusted_proxys_implausible_id_is_replaced(proxied_app: FastAPI, offered: str) -> None:
    response = own_client(proxied_app, PROXY).get(
        "/healthz",
        headers=[("Request-Id", offered.encode("latin-1"))],
    )
    assert response.headers["request-id"] not in ("", offered)


def test_anyone_elses_id_is_replaced(proxied_app: FastAPI, access: Lines) -> None:
    offered = unique_id("forged-")
    response = own_client(proxied_app, "192.0.2.7").get(
        "/v1/members/someone", headers={"Request-Id": offered}
    )
    request_id = response.headers["request-id"]
    assert request_id != offered
    assert response.json()["request_id"] == request_id
    assert access.of(offered) == []
    assert len(access.of(request_id)) == 1


def test_a_signed_replay_is_logged_with_its_partner_key_route_and_hashed_key(
    client: PartnerClient, partner: ApiPartner, http: TestClient, access: Lines
) -> None:
    key, body = unique_id("k"), link_body()
    first = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    retry = http.send(client.build("POST", "/v1/members", body=body, idempotency_key=key))
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.headers["idempotent-replayed"] == "true"
    (logged_first,) = access.of(first.headers["request-id"])
    (logged_retry,) = access.of(retry.headers["request-id"])
    for line in (logged_first, logged_retry):
        assert line["partner_id"] == partner.id
        assert line["key_id"] == partner.key_id
        assert line["route"] == "/v1/members"
        assert line["method"] == "POST"
        assert line["status"] == 201
        assert line["idempotency_key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
        assert key not in json.dumps(line)
    assert (logged_first["replayed"], logged_retry["replayed"]) == (False, True)


def test_an_unexpected_error_names_its_request(
    sessions: sessionmaker[Session], access: Lines
) -> None:
    app = create_app(sessions)

    def broken() -> None:
        raise RuntimeError("broken")

    app.add_api_route("/broken", broken)
    response = own_client(app).get("/broken")
    problem = assert_problem(response, 500, "internal_error")
    assert problem["request_id"] == response.headers["request-id"]
    (line,) = access.of(problem["request_id"])
    assert (line["route"], line["status"]) == ("/broken", 500)


def test_json_lines_are_one_parseable_line_per_record() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("clearinghouse.jobs", logging.ERROR, __file__, 1, "a\nb", None, None)
    record.result = "two\nlines"
    try:
        raise ValueError("the\ncause")
    except ValueError:
        record.exc_info = sys.exc_info()
    token = logs.bind(job="settle", run_id="r1")
    try:
        text = formatter.format(record)
    finally:
        logs.unbind(token)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "a\nb"
    assert line["level"] == "ERROR"
    assert line["logger"] == "clearinghouse.jobs"
    assert (line["job"], line["run_id"], line["result"]) == ("settle", "r1", "two\nlines")
    assert "ValueError: the\ncause" in line["exception"]


def test_text_lines_name_their_fields() -> None:
    record = logging.LogRecord(
        "clearinghouse.access", logging.INFO, __file__, 1, "GET / 200", None, None
    )
    record.status = 200
    assert logs.TextFormatter().format(record) == "INFO clearinghouse.access: GET / 200 status=200"


@pytest.mark.parametrize(
    ("setting", "kind"), [("json", logs.JsonFormatter), ("text", logs.TextFormatter)]
)
def test_the_format_is_the_one_asked_for(setting: logs.LogFormat, kind: type) -> None:
    assert isinstance(logs.formatter(setting), kind)
