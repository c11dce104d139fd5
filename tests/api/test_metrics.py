"""/metrics: refused to anyone but an operator, out of the OpenAPI document, and after
real signed requests (a purchase, its replay, a bad signature) it shows every series the
dashboard and the alert rules read; served by several workers, any one of them answers for
all."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, exc, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api.metrics import WatchedPool
from clearinghouse.database import make_engine, session_factory, sqlalchemy_url
from partners.client import PartnerClient
from tests.api.test_server import free_port, serve, stop, wait_until_up
from tests.builders.calls import enrol, purchase_body
from tests.builders.http import altered, assert_problem, assert_unauthorized
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, set_limit
from tests.builders.users import staff
from tests.conftest import Databases

DOCS = Path(__file__).parents[2] / "docs"
SERIES = re.compile(r"\bclearinghouse_[a-z_]+")


def scrape(http: TestClient, sessions: sessionmaker[Session]) -> dict[str, list[str]]:
    """Each series name in an operator's scrape, with its samples' lines."""
    response = http.get("/metrics", headers=staff(sessions, "operator").headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    series: dict[str, list[str]] = {}
    for family in text_string_to_metric_families(response.text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(family.type, [""]):
            series.setdefault(family.name + suffix, [])
        for sample in family.samples:
            series.setdefault(sample.name, []).append(f"{sample.labels} {sample.value}")
    return series


def test_anonymous_callers_and_other_roles_are_refused(
    http: TestClient, sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    assert_problem(http.get("/metrics"), 401, "not_signed_in")
    finance = staff(sessions, "finance").headers
    assert_problem(http.get("/metrics", headers=finance), 403, "forbidden")
    # A partner's signature is no operator's token either.
    assert_problem(http.send(client.build("GET", "/metrics")), 401, "not_signed_in")


def test_the_route_is_not_in_the_openapi_document(http: TestClient) -> None:
    assert "/metrics" not in http.get("/openapi.json").json()["paths"]


def test_a_scrape_shows_requests_replays_and_refused_signatures(
    http: TestClient, sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    set_limit(sessions, partner.id, 10**12)
    member = enrol(client)
    body, key = purchase_body(member, 52_000), unique_id("k")
    first = http.send(client.build("POST", "/v1/purchases", body=body, idempotency_key=key))
    assert first.status_code == 201, first.text
    again = http.send(client.build("POST", "/v1/purchases", body=body, idempotency_key=key))
    assert again.headers["idempotent-replayed"] == "true"
    signed = client.build("POST", "/v1/purchases", body=body, idempotency_key=unique_id("k"))
    assert_unauthorized(http.send(altered(signed, content=b'{"amount_fen": 1}')))

    series = scrape(http, sessions)

    purchases = [
        line
        for line in series["clearinghouse_http_request_duration_seconds_count"]
        if "'route': '/v1/purchases'" in line and "'method': 'POST'" in line
    ]
    assert any("'status': '2xx'" in line for line in purchases), purchases
    assert any("'status': '4xx'" in line for line in purchases), purchases
    (replays,) = series["clearinghouse_idempotent_replays_total"]
    assert not replays.endswith(" 0.0")
    failures = series["clearinghouse_signature_failures_total"]
    assert any("'reason': 'content_digest_mismatch'" in line for line in failures), failures
    assert any("'kind': 'accrual'" in line for line in series["clearinghouse_ledger_entries_total"])
    partner_points = series["clearinghouse_partner_points"]
    assert any(
        f"'partner': '{partner.id}'" in line and "'direction': 'issued'" in line
        for line in partner_points
    ), partner_points
    for name in (
        "clearinghouse_open_holds",
        "clearinghouse_seal_lag_seconds",
        "clearinghouse_settlement_runs",
        "clearinghouse_fraud_cases",
        "clearinghouse_reconciliation_breaks_open",
        "clearinghouse_rate_limited_total",
        "clearinghouse_job_runs_total",
        "clearinghouse_job_failures_total",
        "clearinghouse_db_pool_in_use",
        "clearinghouse_db_pool_overflow",
        "clearinghouse_db_pool_exhausted_total",
    ):
        assert name in series, name


def test_the_dashboard_and_alerts_name_only_series_the_scrape_shows(
    http: TestClient, sessions: sessionmaker[Session]
) -> None:
    dashboard = json.loads((DOCS / "dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {name for expression in expressions for name in SERIES.findall(expression)}
    assert named
    assert named <= scrape(http, sessions).keys(), named - scrape(http, sessions).keys()


def healthz_answered(text: str) -> float:
    """How many GET /healthz a scrape counts as answered."""
    (family,) = (
        f
        for f in text_string_to_metric_families(text)
        if f.name == "clearinghouse_http_request_duration_seconds"
    )
    return sum(
        sample.value
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels["route"] == "/healthz"
    )


def pool_waits(text: str) -> tuple[float, float]:
    """The checkouts a scrape counts as timed, and the seconds they waited in all."""
    (family,) = (
        f
        for f in text_string_to_metric_families(text)
        if f.name == "clearinghouse_db_pool_wait_seconds"
    )
    values = {sample.name: sample.value for sample in family.samples}
    return values["clearinghouse_db_pool_wait_seconds_count"], values[
        "clearinghouse_db_pool_wait_seconds_sum"
    ]


class SteppedPool(WatchedPool):
    """A watched pool whose clock moves a quarter of a second at each reading."""

    readings = itertools.count()

    @staticmethod
    def clock() -> float:
        return next(SteppedPool.readings) * 0.25


def test_a_watched_pool_times_each_checkout_including_one_that_times_out(
    databases: Databases,
) -> None:
    engine = create_engine(
        sqlalchemy_url(databases.create()),
        poolclass=SteppedPool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.01,
    )

    def timed() -> tuple[float | None, float | None]:
        return (
            REGISTRY.get_sample_value("clearinghouse_db_pool_wait_seconds_count"),
            REGISTRY.get_sample_value("clearinghouse_db_pool_wait_seconds_sum"),
        )

    count, total = timed()
    assert count is not None
    assert total is not None
    try:
        with engine.connect() as held:
            held.execute(text("SELECT 1"))
            with pytest.raises(exc.TimeoutError):
                engine.connect()
        with engine.connect():
            pass
    finally:
        engine.dispose()
    assert timed() == (count + 3, total + 3 * 0.25)


def test_each_scrape_of_a_served_app_counts_the_requests_of_every_worker(
    databases: Databases, tmp_path: Path
) -> None:
    url = databases.create()
    engine = make_engine(url, pool_size=1)
    operator = staff(session_factory(engine), "operator").headers
    engine.dispose()
    port, log = free_port(), tmp_path / "serve.log"
    base_url = f"http://127.0.0.1:{port}"
    process = serve(port, url, log, "--workers", "2")
    try:
        wait_until_up(process, base_url, log)

        def scrape_served() -> str:
            # A connection of its own each time, so that either worker may answer.
            response = httpx.get(f"{base_url}/metrics", headers=operator)
            assert response.status_code == 200, response.text
            return response.text

        before = healthz_answered(scrape_served())
        for _ in range(40):
            assert httpx.get(f"{base_url}/healthz").status_code == 200
        for _ in range(6):
            text = scrape_served()
            assert healthz_answered(text) == before + 40
        assert "clearinghouse_job_runs_total{" in text
        # The workers' request pools time their checkouts (the scrapes' own included).
        assert pool_waits(text)[0] > 0
    finally:
        stop(process)
