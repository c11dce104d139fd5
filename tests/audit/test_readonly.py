"""The auditor's database role is read-only, proven by trying to write: under it PostgreSQL
refuses every INSERT, UPDATE and DELETE and the ledger's own posting function, with the
transaction read-only and, more to the point, without: the role alone refuses."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger, migrate
from clearinghouse.api.deps import READ_ONLY_ROLE, AuditSession, WriteSession
from clearinghouse.app import create_app
from clearinghouse.database import libpq_url, start_embedded, stop_embedded
from clearinghouse.users.tables import users
from partners import directory
from tests.builders import ledger as b
from tests.builders.audit import transfers
from tests.builders.databases import Books, own_books
from tests.builders.http import PROBLEM_JSON, own_client
from tests.conftest import Databases

INSUFFICIENT_PRIVILEGE = "42501"
READ_ONLY_TRANSACTION = "25006"

# One statement per table and kind of write, on rows that exist (see `world`).
WRITES: dict[tuple[str, str], str] = {
    ("journal_entries", "insert"): (
        "INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash, occurred_at)"
        " VALUES ('test', 'readonly', :key, CAST('x' AS bytea), now())"
    ),
    ("journal_entries", "update"): "UPDATE journal_entries SET kind = 'changed' WHERE id = :entry",
    ("journal_entries", "delete"): "DELETE FROM journal_entries WHERE id = :entry",
    ("postings", "update"): "UPDATE postings SET amount = amount * 2 WHERE entry_id = :entry",
    ("accounts", "insert"): (
        "INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative)"
        " VALUES (:new_member, 'PTS', 'member', :key, 'available', true)"
    ),
    ("accounts", "update"): "UPDATE accounts SET kind = 'changed' WHERE address = :member",
    ("accounts", "delete"): "DELETE FROM accounts WHERE address = :member",
    ("partners", "insert"): (
        "INSERT INTO partners (id, name, kind) VALUES (:key, 'Intruder', 'online_merchant')"
    ),
    ("partners", "update"): "UPDATE partners SET name = 'changed' WHERE id = :partner",
    ("partners", "delete"): "DELETE FROM partners WHERE id = :partner",
    ("users", "insert"): (
        "INSERT INTO users (id, role, token_digest)"
        " VALUES (:key, 'approver', decode(md5(:key), 'hex'))"
    ),
    ("users", "update"): "UPDATE users SET role = 'approver' WHERE id = :user",
    ("users", "delete"): "DELETE FROM users WHERE id = :user",
    ("seal_blocks", "insert"): (
        "INSERT INTO seal_blocks (number, entry_count, merkle_root, previous_hash, block_hash)"
        " VALUES (1, 0, CAST('r' AS bytea), CAST('p' AS bytea), CAST('b' AS bytea))"
    ),
}

LEDGER_POST = (
    "SELECT * FROM ledger_post('test', 'readonly', :key, CAST('x' AS bytea), now(),"
    " CAST('{}' AS jsonb), NULL, CAST(:addresses AS text[]), CAST(:assets AS text[]),"
    " CAST(:amounts AS bigint[]))"
)


@dataclass(frozen=True)
class World:
    books: Books
    params: dict[str, Any]
    """Bind parameters: existing rows to change, and a fresh key for inserts."""

    def counts(self) -> dict[str, int]:
        with self.books.sessions() as session:
            return {
                table: session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("journal_entries", "postings", "accounts", "partners", "users")
            }


@pytest.fixture(scope="module")
def world(databases: Databases) -> Iterator[World]:
    with own_books(databases) as books:
        (posted,) = transfers(books.sessions, 1)
        partner_id = b.unique_id("p")
        user_id = b.unique_id("u")
        with books.sessions() as session, session.begin():
            directory.create_partner(session, partner_id, "Partner", "online_merchant")
            session.execute(
                users.insert().values(id=user_id, role="auditor", token_digest=b"digest")
            )
        key = f"ro{uuid.uuid4().hex[:12]}"
        yield World(
            books,
            {
                "key": key,
                "new_member": f"member:{key}:available",
                "entry": posted.id,
                "member": posted.destination,
                "partner": partner_id,
                "user": user_id,
                "addresses": [posted.source, posted.destination],
                "assets": ["PTS", "PTS"],
                "amounts": [-5, 5],
            },
        )


def _attempt(
    sessions: sessionmaker[Session],
    statement: str,
    params: dict[str, Any],
    *,
    read_only: bool,
    role: bool,
) -> str | None:
    """Run one statement in a transaction of its own, rolled back; the SQLSTATE it failed with,
    None when PostgreSQL let it through."""
    with sessions() as session:
        try:
            if read_only:
                session.execute(text("SET TRANSACTION READ ONLY"))
            if role:
                session.execute(text(f"SET LOCAL ROLE {READ_ONLY_ROLE}"))
            session.execute(text(statement), params)
        except DBAPIError as exc:
            return getattr(exc.orig, "sqlstate", None)
        finally:
            session.rollback()
        return None


@pytest.mark.parametrize(("table", "write"), list(WRITES), ids=[f"{t}-{w}" for t, w in WRITES])
def test_an_audit_transaction_refuses_every_write(world: World, table: str, write: str) -> None:
    before = world.counts()
    refused = _attempt(
        world.books.sessions, WRITES[table, write], world.params, read_only=True, role=True
    )
    assert refused in (READ_ONLY_TRANSACTION, INSUFFICIENT_PRIVILEGE)
    assert world.counts() == before


@pytest.mark.parametrize(("table", "write"), list(WRITES), ids=[f"{t}-{w}" for t, w in WRITES])
def test_the_read_only_role_alone_refuses_every_write(world: World, table: str, write: str) -> None:
    statement = WRITES[table, write]
    # Without the role the very same statement gets past the privilege check (it may still
    # meet a trigger or a constraint), so the refusal below is the role's.
    assert (
        _attempt(world.books.sessions, statement, world.params, read_only=False, role=False)
        != INSUFFICIENT_PRIVILEGE
    )
    before = world.counts()
    refused = _attempt(world.books.sessions, statement, world.params, read_only=False, role=True)
    assert refused == INSUFFICIENT_PRIVILEGE
    assert world.counts() == before


def test_the_ledgers_posting_function_is_refused_with_and_without_read_only(world: World) -> None:
    sessions, params = world.books.sessions, world.params
    # As the application the call posts (rolled back here).
    assert _attempt(sessions, LEDGER_POST, params, read_only=False, role=False) is None
    before = world.counts()
    assert _attempt(sessions, LEDGER_POST, params, read_only=True, role=True) in (
        READ_ONLY_TRANSACTION,
        INSUFFICIENT_PRIVILEGE,
    )
    assert _attempt(sessions, LEDGER_POST, params, read_only=False, role=True) == (
        INSUFFICIENT_PRIVILEGE
    )
    assert world.counts() == before


def _read_as_role(world: World, statement: str) -> None:
    with world.books.sessions() as session, session.begin():
        session.execute(text(f"SET LOCAL ROLE {READ_ONLY_ROLE}"))
        session.execute(text(statement)).all()


def test_the_role_can_read_every_table_but_console_sessions_and_credentials(world: World) -> None:
    with world.books.sessions() as session:
        tables = list(
            session.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename NOT IN ('console_sessions', 'users') ORDER BY 1"
                )
            ).scalars()
        )
    for table in tables:
        _read_as_role(world, f'SELECT * FROM "{table}" LIMIT 1')
    _read_as_role(world, "SELECT id, role, created_at, disabled_at, password_changed_at FROM users")
    for statement in (
        "SELECT * FROM console_sessions LIMIT 1",
        "SELECT * FROM users LIMIT 1",
        "SELECT password_hash FROM users",
        "SELECT token_digest FROM users",
        "SELECT id FROM users WHERE token_digest = CAST('digest' AS bytea)",
    ):
        with pytest.raises(DBAPIError, match="permission denied"):
            _read_as_role(world, statement)


def test_a_route_on_the_audit_session_cannot_write(world: World) -> None:
    """A buggy audit route that writes: PostgreSQL refuses, the caller gets a 500 problem, and
    nothing is written. The same write through a WriteSession goes through."""
    sessions = world.books.sessions
    refusals: list[str | None] = []
    (posted,) = transfers(sessions, 1)

    def entry(key: str) -> ledger.Entry:
        return b.entry((posted.source, -7), (posted.destination, 7), idempotency_key=key)

    def add_user(session: AuditSession) -> dict[str, str]:
        try:
            session.execute(
                users.insert().values(id="intruder-1", role="finance", token_digest=b"intruder")
            )
        except DBAPIError as exc:
            refusals.append(getattr(exc.orig, "sqlstate", None))
            raise
        return {"written": "yes"}

    def post_entry(key: str, session: AuditSession) -> dict[str, int]:
        try:
            return {"entry_id": ledger.post(session, entry(key)).id}
        except psycopg.Error as exc:  # the ledger's writes go straight through psycopg
            refusals.append(exc.sqlstate)
            raise

    def post_entry_for_real(key: str, session: WriteSession) -> dict[str, int]:
        return {"entry_id": ledger.post(session, entry(key)).id}

    app = create_app(sessions)
    app.add_api_route("/audit-test/users", add_user, methods=["POST"])
    app.add_api_route("/audit-test/entries/{key}", post_entry, methods=["POST"])
    app.add_api_route("/write-test/entries/{key}", post_entry_for_real, methods=["POST"])
    http = own_client(app)
    before = world.counts()
    try:
        for path in ("/audit-test/users", "/audit-test/entries/refused-1"):
            response = http.post(path)
            assert response.status_code == 500, response.text
            assert response.headers["content-type"] == PROBLEM_JSON
            assert response.json()["code"] == "internal_error"
        assert world.counts() == before
        assert refusals == [READ_ONLY_TRANSACTION, READ_ONLY_TRANSACTION]

        written = http.post("/write-test/entries/accepted-1")
        assert written.status_code == 200, written.text
    finally:
        http.close()
    with sessions() as session:
        assert session.execute(select(func.count()).where(users.c.id == "intruder-1")).scalar() == 0
        assert ledger.find_entry(session, "test", "refused-1") is None
        assert ledger.find_entry(session, "test", "accepted-1") == written.json()["entry_id"]
        assert ledger.balance(session, posted.destination) == posted.amount + 7
    assert world.counts()["journal_entries"] == before["journal_entries"] + 1


def test_the_migration_survives_another_creating_the_role_at_the_same_time(home: Path) -> None:
    """Two fresh databases migrated at once on a server without the role (two xdist workers on
    a fresh embedded server; two services deployed together): one creates the role while the
    other's migration is between its check and its CREATE ROLE. Made deterministic on a private
    embedded server: the other transaction holds its uncommitted CREATE ROLE until the migration
    waits for it, then commits."""
    admin = libpq_url(start_embedded(home, keep_data=False))
    failures: list[Exception] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(admin)
        except Exception as exc:
            failures.append(exc)

    try:
        with psycopg.connect(admin) as other, psycopg.connect(admin, autocommit=True) as watcher:
            other.execute(f"CREATE ROLE {READ_ONLY_ROLE} NOLOGIN")  # not committed yet
            migration = threading.Thread(target=upgrade)
            migration.start()
            deadline = time.monotonic() + 60
            waited = False
            while not waited and time.monotonic() < deadline and migration.is_alive():
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                waited = bool(waiting and waiting[0])
                time.sleep(0.05)
            other.commit()
            migration.join(timeout=60)
        assert waited, "the migration never waited for the other transaction's role"
        assert not failures, f"the migration failed: {failures[0]!r}"[:300]
    finally:
        stop_embedded(home)
