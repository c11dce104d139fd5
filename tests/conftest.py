"""Test databases: the system PostgreSQL when TEST_DATABASE_URL or DATABASE_URL names one, the
embedded server otherwise. Each xdist worker migrates a database of its own once; tests keep out
of each other's way by using fresh account owners (see tests/builders/)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, migrate
from clearinghouse.database import (
    libpq_url,
    make_engine,
    session_factory,
    sqlalchemy_url,
    start_embedded,
)

# The signed API's fixtures (app, http, partner, client, ...), for the packages that define the
# `sessions` and `new_partner` they need; the `clearinghouse` command run in this process (cli).
pytest_plugins = ["tests.api_fixtures", "tests.cli_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        type=Path,
        default=None,
        help="Also keep the browser tests' screenshots in this folder (e.g. docs/).",
    )


def _configured_server() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


@pytest.fixture(scope="session")
def server_url(testrun_uid: str) -> str:
    """A URL on the server the tests use, for creating databases."""
    configured = _configured_server()
    if configured:
        return sqlalchemy_url(configured)
    # One embedded server for all workers of this run; the last worker to leave stops it.
    home = Path(tempfile.gettempdir()) / f"clearinghouse-test-{testrun_uid}"
    return start_embedded(home, keep_data=False)


class Databases:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def create(self, prefix: str = "ch_test", *, migrated: bool = True) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        url = self.url(name)
        if migrated:
            migrate.upgrade(url)
        return url

    def drop_all(self) -> None:
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            for name in self.created:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture(scope="session")
def databases(server_url: str) -> Iterator[Databases]:
    dbs = Databases(server_url)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: Databases) -> str:
    """This worker's migrated database."""
    return databases.create()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is rolled back after the test (commits are the test's own)."""
    with sessions() as s:
        yield s
        s.rollback()


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh CLEARINGHOUSE_HOME for an embedded server. Outside pytest's own temporary
    folders, which another pytest run on the machine may prune while the server still runs."""
    path = Path(tempfile.mkdtemp(prefix="clearinghouse-home-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def manual_clock() -> Iterator[clock.Manual]:
    """The service tells the time by a clock that stands at the system's time now and moves
    only when the test moves it (clearinghouse.clock)."""
    with clock.use(clock.Manual(clock.system())) as manual:
        yield manual
