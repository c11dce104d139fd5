"""Typed helpers for the audit tests. Sealing and verification are global to a database, so every
test works on a throwaway migrated database of its own (`own_books`); entries are written with
the ledger builders, people get bearer tokens, and tampering happens as the database owner with
the append-only triggers switched off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.audit.tables import seal_blocks
from clearinghouse.database import make_engine, session_factory
from clearinghouse.users.service import create_user
from tests import builders
from tests.conftest import Databases


@dataclass(frozen=True)
class Books:
    """A throwaway migrated database of one test (or module) alone."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


@contextmanager
def own_books(databases: Databases) -> Iterator[Books]:
    engine = make_engine(databases.create("ch_audit"), pool_size=5)
    try:
        yield Books(
            engine.url.render_as_string(hide_password=False), engine, session_factory(engine)
        )
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Posted:
    id: int
    recorded_at: datetime
    source: str
    destination: str
    amount: int


def transfers(sessions: sessionmaker[Session], count: int, amount: int = 100) -> list[Posted]:
    """`count` accruals, each from a fresh partner to a fresh member, each committed alone."""
    posted: list[Posted] = []
    for i in range(count):
        with sessions() as session, session.begin():
            source = builders.partner(session)
            destination = builders.member(session)
            entry = builders.accrue(session, source, destination, amount + i)
        posted.append(Posted(entry.id, entry.recorded_at, source, destination, amount + i))
    return posted


def token_for(sessions: sessionmaker[Session], role: str) -> str:
    """A new user of this role; its bearer token."""
    with sessions() as session, session.begin():
        _, token = create_user(session, builders.unique_id(role[:3]).lower(), role)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JOURNAL = ("postings", "journal_entries")
SEALS = ("seal_items", "seal_blocks")


@contextmanager
def triggers_off(
    sessions: sessionmaker[Session], tables: tuple[str, ...] = JOURNAL
) -> Iterator[Session]:
    """One transaction as the database owner with every user trigger of `tables` disabled (by
    default the journal's and the postings': append-only, balance upkeep, the balanced-entry
    check): what someone with the keys to the database could do behind the application's
    back. The triggers are back on at commit."""
    with sessions() as session, session.begin():
        for table in tables:
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        yield session
        for table in tables:
            session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def recorded_earlier(sessions: sessionmaker[Session], entry_ids: list[int], by: str) -> None:
    """Move these unsealed entries and their postings `by` (an SQL interval) into the past, as
    if they had been recorded that long ago: a journal older than its seals, with no waiting."""
    with triggers_off(sessions) as session:
        for table, column in (("journal_entries", "id"), ("postings", "entry_id")):
            session.execute(
                text(
                    f"UPDATE {table} SET recorded_at = recorded_at - CAST(:by AS interval)"
                    f" WHERE {column} = ANY(:ids)"
                ),
                {"ids": entry_ids, "by": by},
            )


def block_of(session: Session, entry_id: int) -> int:
    number: int = session.execute(
        text("SELECT block_number FROM seal_items WHERE entry_id = :id"), {"id": entry_id}
    ).scalar_one()
    return number


def newest_sealed_at(session: Session) -> datetime:
    sealed_at: datetime = session.execute(
        select(seal_blocks.c.sealed_at).order_by(seal_blocks.c.number.desc()).limit(1)
    ).scalar_one()
    return sealed_at
