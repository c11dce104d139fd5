"""What auditors ask of the journal: entries by account, member, partner, store, kind and time,
with stable cursor pagination, and one entry with what it reverses and what reverses it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from clearinghouse.audit.canonical import EntryRecord, load_entries
from clearinghouse.errors import NotFound
from clearinghouse.ledger.tables import accounts, journal_entries, postings


class EntryNotFound(NotFound):
    code = "entry_not_found"
    title = "Unknown journal entry"


@dataclass(frozen=True)
class EntryFilter:
    account: str | None = None
    member: str | None = None
    partner: str | None = None
    store: str | None = None
    kind: str | None = None
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None


def _touching(condition: Any) -> Any:
    """Entries with a posting on an account matching `condition`."""
    return exists().where(
        postings.c.entry_id == journal_entries.c.id,
        postings.c.recorded_at == journal_entries.c.recorded_at,
        postings.c.account_id == accounts.c.id,
        condition,
    )


def find_entries(
    session: Session, where: EntryFilter, *, after: int | None = None, limit: int = 100
) -> tuple[list[EntryRecord], int | None]:
    """A page of entries in id order (stable: ids never change), and the cursor of the next."""
    query = select(journal_entries.c.id).order_by(journal_entries.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(journal_entries.c.id > after)
    if where.account:
        query = query.where(_touching(accounts.c.address == where.account))
    if where.member:
        query = query.where(
            _touching((accounts.c.owner_type == "member") & (accounts.c.owner_id == where.member))
        )
    if where.partner:
        query = query.where(
            or_(
                _touching(
                    (accounts.c.owner_type == "partner") & (accounts.c.owner_id == where.partner)
                ),
                journal_entries.c.metadata["partner_id"].astext == where.partner,
            )
        )
    if where.store:
        at_store = journal_entries.alias("at_store")
        query = query.where(
            or_(
                _touching(
                    (accounts.c.owner_type == "store") & (accounts.c.owner_id == where.store)
                ),
                journal_entries.c.metadata["store_id"].astext == where.store,
                # Reversals (refunds) of the store's entries belong to the store too.
                journal_entries.c.reverses_id.in_(
                    select(at_store.c.id).where(
                        at_store.c.metadata["store_id"].astext == where.store
                    )
                ),
            )
        )
    if where.kind:
        query = query.where(journal_entries.c.kind == where.kind)
    if where.recorded_from:
        query = query.where(journal_entries.c.recorded_at >= where.recorded_from)
    if where.recorded_to:
        query = query.where(journal_entries.c.recorded_at < where.recorded_to)
    ids = list(session.execute(query).scalars())
    next_cursor = ids[limit - 1] if len(ids) > limit else None
    return load_entries(session, ids[:limit]), next_cursor


@dataclass(frozen=True)
class EntryDetail:
    entry: EntryRecord
    reversed_by: list[int]


def entry_detail(session: Session, entry_id: int) -> EntryDetail:
    found = load_entries(session, [entry_id])
    if not found:
        raise EntryNotFound(f"no journal entry {entry_id}")
    reversed_by = list(
        session.execute(
            select(journal_entries.c.id)
            .where(journal_entries.c.reverses_id == entry_id)
            .order_by(journal_entries.c.id)
        ).scalars()
    )
    return EntryDetail(found[0], reversed_by)
