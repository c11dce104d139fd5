"""The embedded PostgreSQL, the settings, the schema guard, and units of work that run again
when their connection died or they lost a race."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Engine, text

from clearinghouse import migrate
from clearinghouse.config import Settings
from clearinghouse.database import (
    Tx,
    libpq_url,
    make_engine,
    run_in_transaction,
    start_embedded,
    stop_embedded,
)
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
        # The journal's month partitions are made by ledger_add_partitions, not declared.
        partitions = set(
            conn.execute(text("SELECT relname FROM pg_class WHERE relispartition")).scalars()
        )
        assert "journal_entries_default" in partitions

        def declared(item: object, name: str | None, kind: str, *_: object) -> bool:
            return kind != "table" or name not in partitions

        context = MigrationContext.configure(conn, opts={"include_object": declared})
        diff = compare_metadata(context, metadata)
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


def _gone(url: str, pid: int) -> None:
    """Terminate a backend from a connection outside the pool and wait until it has left."""
    with psycopg.connect(libpq_url(url), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() != (0,):
            pass


def test_a_unit_of_work_whose_connection_died_runs_again_on_a_new_one(
    database_url: str,
) -> None:
    """The pool does not ping: a connection that died while it waited in the pool (the server
    restarted, a proxy closed it) fails its next unit of work, which runs again at once."""
    engine = make_engine(database_url, pool_size=1, max_overflow=1)
    try:
        first = run_in_transaction(engine, lambda tx: tx.scalar("SELECT pg_backend_pid()"))
        _gone(database_url, first)
        attempts: list[int] = []

        def work(tx: Tx) -> int:
            attempts.append(1)
            pid: int = tx.scalar("SELECT pg_backend_pid()")
            return pid

        assert run_in_transaction(engine, work) != first
        assert len(attempts) == 2
    finally:
        engine.dispose()


def test_a_unit_of_work_that_lost_a_deadlock_runs_again(database_url: str) -> None:
    """Two units of work lock two rows in opposite orders: PostgreSQL breaks the deadlock by
    failing one, which runs again; both commit, each update once."""
    engine = make_engine(database_url, pool_size=2)
    table = f"deadlock_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2)
    attempts: list[int] = []

    def crossing(first: int, second: int) -> Callable[[Tx], None]:
        def work(tx: Tx) -> None:
            attempts.append(first)
            tx.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s", (first,))
            if len(attempts) <= 2:
                both_hold_one.wait(timeout=30)
            tx.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s", (second,))

        return work

    try:
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(run_in_transaction, engine, crossing(1, 2)),
                pool.submit(run_in_transaction, engine, crossing(2, 1)),
            ]
            for run in runs:
                run.result(timeout=60)
        with engine.connect() as conn:
            counts = conn.execute(text(f"SELECT n FROM {table} ORDER BY id")).scalars().all()
        assert counts == [2, 2]
        # The loser ran again. Its retry may take a row back before the winner saw it free
        # and lose a second race, so more than one retry can happen; never a lost update.
        assert len(attempts) >= 3
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))
        engine.dispose()
