"""The canonical encoding of a journal entry: the bytes that sealing hashes and exports carry,
so that anyone can recompute a block from exported data alone."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clearinghouse.ledger.tables import accounts, journal_entries, postings


@dataclass(frozen=True)
class EntryRecord:
    id: int
    kind: str
    origin: str
    idempotency_key: str
    request_hash: str
    occurred_at: datetime
    recorded_at: datetime
    metadata: dict[str, Any]
    reverses_id: int | None
    postings: tuple[tuple[str, str, int], ...]
    """(account address, asset, amount), in posting order."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "origin": self.origin,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "occurred_at": instant_text(self.occurred_at),
            "recorded_at": instant_text(self.recorded_at),
            "metadata": self.metadata,
            "reverses_id": self.reverses_id,
            "postings": [list(p) for p in self.postings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryRecord:
        return cls(
            id=int(data["id"]),
            kind=data["kind"],
            origin=data["origin"],
            idempotency_key=data["idempotency_key"],
            request_hash=data["request_hash"],
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            recorded_at=datetime.fromisoformat(data["recorded_at"]),
            metadata=data["metadata"],
            reverses_id=data["reverses_id"],
            postings=tuple((str(a), str(s), int(n)) for a, s, n in data["postings"]),
        )


def instant_text(value: datetime) -> str:
    """An instant as the canonical encoding and the exports write it: UTC, microseconds (the
    database keeps microseconds), "Z", and always the same shape, four-digit years included
    (strftime's %Y would write year 999 as "999", which no parser reads back)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode(entry: EntryRecord) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same entry always gives the same bytes."""
    return json.dumps(
        entry.as_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def load_entries(session: Session, entry_ids: Sequence[int]) -> list[EntryRecord]:
    """The entries with these ids, in id order, with their postings."""
    ids = bindparam("entry_ids", list(entry_ids), type_=ARRAY(BigInteger))
    return _load(session, journal_entries.c.id == any_(ids))


def entries_recorded(session: Session, start: datetime, end: datetime) -> list[EntryRecord]:
    """Entries recorded in [start, end), in id order."""
    return _load(
        session, (journal_entries.c.recorded_at >= start) & (journal_entries.c.recorded_at < end)
    )


def entries_in_batches(
    session: Session,
    condition: Any,
    *,
    after: int | None = None,
    size: int,
    limit: int | None = None,
) -> Iterator[list[EntryRecord]]:
    """The entries matching `condition` with ids above `after`, in id order, `size` at a time
    and `limit` in all (if given): each batch is read by keyset (ids above the previous batch's
    last), so that no more than `size` entries are ever held, whatever the journal's size."""
    left = limit
    while left is None or left > 0:
        wanted = size if left is None else min(size, left)
        where = condition if after is None else condition & (journal_entries.c.id > after)
        batch = _load(session, where, limit=wanted)
        if batch:
            yield batch
        if len(batch) < wanted:
            return
        after = batch[-1].id
        if left is not None:
            left -= len(batch)


def _load(session: Session, condition: Any, limit: int | None = None) -> list[EntryRecord]:
    heads = session.execute(
        select(journal_entries).where(condition).order_by(journal_entries.c.id).limit(limit)
    ).all()
    if not heads:
        return []
    legs: dict[int, list[tuple[str, str, int]]] = {}
    # One array parameter, however many entries: a statement holds at most 65,535 parameters.
    ids = bindparam("ids", [h.id for h in heads], type_=ARRAY(BigInteger))
    rows = session.execute(
        select(postings.c.entry_id, accounts.c.address, postings.c.asset, postings.c.amount)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id == any_(ids))
        .order_by(postings.c.id)
    ).all()
    for entry_id, address, asset, amount in rows:
        legs.setdefault(entry_id, []).append((address, asset, amount))
    return [
        EntryRecord(
            id=h.id,
            kind=h.kind,
            origin=h.origin,
            idempotency_key=h.idempotency_key,
            request_hash=bytes(h.request_hash).hex(),
            occurred_at=h.occurred_at,
            recorded_at=h.recorded_at,
            metadata=h.metadata,
            reverses_id=h.reverses_id,
            postings=tuple(legs.get(h.id, [])),
        )
        for h in heads
    ]
