"""Fixtures for the fraud tests: a database of this worker's own (the rules count history across
the whole database and the checks of the books are global, so no other package's tests may
share it), the signed API on it, partners ready to accrue and an operator with a token.

Tests keep out of each other's way with fresh partners, stores and members; a test whose
failure could leave the books broken for every later one takes a database of its own
(`isolated`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.database import make_engine, session_factory
from tests.api_fixtures import NewPartner
from tests.builders.databases import Isolated, own_isolated
from tests.builders.partners import make_partner
from tests.builders.users import Staff, staff
from tests.conftest import Databases


@pytest.fixture(scope="session")
def fraud_engine(databases: Databases) -> Iterator[Engine]:
    eng = make_engine(databases.create("ch_fraud"), pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture
def new_partner() -> NewPartner:
    return make_partner


@pytest.fixture(scope="session")
def sessions(fraud_engine: Engine) -> sessionmaker[Session]:
    """Overrides the worker-wide factory: every fixture below (and `session`) uses this
    database."""
    return session_factory(fraud_engine)


@pytest.fixture
def operator(sessions: sessionmaker[Session]) -> Staff:
    return staff(sessions, "operator")


@pytest.fixture
def isolated(databases: Databases) -> Iterator[Isolated]:
    """A database of the test's own: its sessions, the signed API on it, a partner's client and
    an operator."""
    with own_isolated(databases, "ch_fraud_own") as own:
        yield own
