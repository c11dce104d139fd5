"""Fixtures for the fraud tests: a database of this worker's own (the rules count history across
the whole database and the checks of the books are global, so no other package's tests may
share it), the signed API on it, partners ready to accrue and an operator with a token.

Tests keep out of each other's way with fresh partners, stores and members; a test whose
failure could leave the books broken for every later one takes a database of its own
(`isolated`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.app import create_app
from clearinghouse.database import make_engine, session_factory
from partners.client import PartnerClient
from tests.api.builders import ApiPartner, client_for
from tests.api_fixtures import NewPartner
from tests.builders import own_client
from tests.conftest import Databases
from tests.fraud.builders import Staff, staff
from tests.points.builders import points_partner


@pytest.fixture(scope="session")
def fraud_engine(databases: Databases) -> Iterator[Engine]:
    eng = make_engine(databases.create("ch_fraud"), pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture
def new_partner() -> NewPartner:
    return points_partner


@pytest.fixture(scope="session")
def sessions(fraud_engine: Engine) -> sessionmaker[Session]:
    """Overrides the worker-wide factory: every fixture below (and `session`) uses this
    database."""
    return session_factory(fraud_engine)


@pytest.fixture
def operator(sessions: sessionmaker[Session]) -> Staff:
    return staff(sessions, "operator")


@dataclass(frozen=True)
class Isolated:
    """A database of one test's own: its sessions, the signed API on it, a partner's client
    and an operator."""

    sessions: sessionmaker[Session]
    http: TestClient
    partner: ApiPartner
    client: PartnerClient
    operator: Staff


@pytest.fixture
def isolated(databases: Databases) -> Iterator[Isolated]:
    eng = make_engine(databases.create("ch_fraud_own"), pool_size=5)
    own_sessions = session_factory(eng)
    transport = own_client(create_app(own_sessions))
    own_partner = points_partner(own_sessions)
    try:
        yield Isolated(
            own_sessions,
            transport,
            own_partner,
            client_for(own_partner, transport),
            staff(own_sessions, "operator"),
        )
    finally:
        transport.close()
        eng.dispose()
