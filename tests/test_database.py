"""The embedded PostgreSQL, the settings, and the schema guard."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Engine

from clearinghouse import migrate
from clearinghouse.config import Settings
from clearinghouse.database import libpq_url, make_engine, start_embedded, stop_embedded
from clearinghouse.schema import metadata
from clearinghouse.tables import ledger_tables  # noqa: F401  (the whole schema on the metadata)
from tests.conftest import Databases


def _postmaster_running(home: Path) -> bool:
    return (home / "pgdata" / "postmaster.pid").exists()


def test_embedded_server_stops_and_restarts_on_the_same_data(home: Path) -> None:
    url = start_embedded(home)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    stop_embedded(home)
    assert not _postmaster_running(home)

    url = start_embedded(home)
    assert _postmaster_running(home)
    with psycopg.connect(libpq_url(url)) as conn:
        assert conn.execute("SELECT note FROM kept").fetchone() == ("still here",)
    stop_embedded(home)
    assert not _postmaster_running(home)


def test_schema_matches_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_unmigrated_database_is_refused_with_a_clear_message(databases: Databases) -> None:
    engine = make_engine(databases.create(migrated=False), pool_size=1)
    with pytest.raises(migrate.SchemaNotMigrated, match="run `clearinghouse db upgrade`"):
        migrate.require_current_schema(engine)
    engine.dispose()


def test_migrated_database_is_accepted(engine: Engine) -> None:
    migrate.require_current_schema(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_settings_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "CLEARINGHOUSE_DATABASE_URL", "CLEARINGHOUSE_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARINGHOUSE_HOME", "/tmp/somewhere")
    settings = Settings(_env_file=None)
    assert settings.database_url is None
    assert settings.timezone == "Asia/Shanghai"
    assert settings.home == Path("/tmp/somewhere")

    monkeypatch.setenv("DATABASE_URL", "sqlite:///books.db")
    with pytest.raises(ValidationError, match="postgresql"):
        Settings(_env_file=None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@localhost/db")
    monkeypatch.setenv("CLEARINGHOUSE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(_env_file=None)


def test_migrations_downgrade_and_upgrade_again(databases: Databases) -> None:
    url = databases.create()
    command.downgrade(migrate.alembic_config(url), "base")
    engine = make_engine(url, pool_size=1)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
