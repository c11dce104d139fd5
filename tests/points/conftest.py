"""Fixtures for the points lifecycle: a database of its own (these tests publish rule sets and run
coalition-wide jobs such as expiry, which must not reach into other tests' data), the signed API
on it, and partners with rates and an issuance limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.database import make_engine, session_factory
from tests.api_fixtures import NewPartner
from tests.builders.databases import Isolated, own_isolated
from tests.builders.partners import make_partner
from tests.conftest import Databases


@pytest.fixture(scope="session")
def points_engine(databases: Databases) -> Iterator[Engine]:
    eng = make_engine(databases.create("ch_points"), pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture
def new_partner() -> NewPartner:
    return make_partner


@pytest.fixture(scope="session")
def sessions(points_engine: Engine) -> sessionmaker[Session]:
    """Overrides the worker-wide factory: every fixture below (and `session`) uses this
    database."""
    return session_factory(points_engine)


@pytest.fixture
def isolated(databases: Databases) -> Iterator[Isolated]:
    """A database of the test's own, with a partner and its client: for tests that can leave
    the books broken for every later test (the failures they exist to show)."""
    with own_isolated(databases, "ch_points_own") as own:
        yield own
