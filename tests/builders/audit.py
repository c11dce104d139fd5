"""The audit tests' journal work: committed transfers between fresh ledger accounts, entries
moved into the past, and tampering as the database owner with the append-only triggers switched
off; with the seal reads the checks need. Their databases are databases.Books."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.audit.tables import seal_blocks
from tests.builders.ledger import member_account, partner_account, post_transfer


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
            source = partner_account(session)
            destination = member_account(session)
            entry = post_transfer(session, source, destination, amount + i)
        posted.append(Posted(entry.id, entry.recorded_at, source, destination, amount + i))
    return posted


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
        # One statement, so that the postings' key to their entry holds once both have moved.
        session.execute(
            text(
                "WITH moved AS (UPDATE postings SET recorded_at = recorded_at - CAST(:by AS"
                " interval) WHERE entry_id = ANY(:ids))"
                " UPDATE journal_entries SET recorded_at = recorded_at - CAST(:by AS interval)"
                " WHERE id = ANY(:ids)"
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
