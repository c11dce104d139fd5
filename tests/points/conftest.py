"""Fixtures for the points lifecycle: a database of its own (these tests publish rule sets and run
coalition-wide jobs such as expiry, which must not reach into other tests' data), the signed API
on it, and partners with rates and an issuance limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api.app import create_app
from clearinghouse.database import make_engine, session_factory
from partners.client import PartnerClient
from tests.api.builders import ApiPartner, client_for
from tests.conftest import Databases
from tests.points.builders import Isolated, points_partner


@pytest.fixture(scope="session")
def points_engine(databases: Databases) -> Iterator[Engine]:
    eng = make_engine(databases.create("ch_points"), pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def sessions(points_engine: Engine) -> sessionmaker[Session]:
    """Overrides the worker-wide factory: every fixture below (and `session`) uses this
    database."""
    return session_factory(points_engine)


@pytest.fixture
def app(sessions: sessionmaker[Session]) -> FastAPI:
    return create_app(sessions)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    # Not entered as a context manager: the lifespan (and its purge task) stays off.
    client = TestClient(app, raise_server_exceptions=False)
    yield client
    client.close()


@pytest.fixture
def partner(sessions: sessionmaker[Session]) -> ApiPartner:
    return points_partner(sessions)


@pytest.fixture
def other_partner(sessions: sessionmaker[Session]) -> ApiPartner:
    return points_partner(sessions)


@pytest.fixture
def client(partner: ApiPartner, http: TestClient) -> PartnerClient:
    return client_for(partner, http)


@pytest.fixture
def other_client(other_partner: ApiPartner, http: TestClient) -> PartnerClient:
    return client_for(other_partner, http)


@pytest.fixture
def isolated(databases: Databases) -> Iterator[Isolated]:
    """A database of the test's own, with a partner and its client: for tests that can leave
    the books broken for every later test (the failures they exist to show)."""
    eng = make_engine(databases.create("ch_points_own"), pool_size=5)
    own_sessions = session_factory(eng)
    http = TestClient(create_app(own_sessions), raise_server_exceptions=False)
    try:
        yield Isolated(own_sessions, client_for(points_partner(own_sessions), http))
    finally:
        http.close()
        eng.dispose()
