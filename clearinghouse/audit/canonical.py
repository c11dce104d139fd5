"""The canonical encoding of a journal entry: the bytes that sealing hashes and exports carry,
so that anyone can recompute a block from exported data alone."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import BigInteger, Text, any_, bindparam, cast, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import NullType

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

    # Rendered once, for the canonical encoding and every export file alike.
    occurred_text: str = field(init=False, repr=False, compare=False)
    recorded_text: str = field(init=False, repr=False, compare=False)
    metadata_json: str = field(init=False, repr=False, compare=False)
    """The metadata as compact JSON, keys sorted: as the canonical encoding holds it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "occurred_text", instant_text(self.occurred_at))
        object.__setattr__(self, "recorded_text", instant_text(self.recorded_at))
        object.__setattr__(self, "metadata_json", _json(self.metadata))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "origin": self.origin,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "occurred_at": self.occurred_text,
            "recorded_at": self.recorded_text,
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


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _value(value: object) -> str:
    """`_json(value)`, taking the short way for the strings, integers and nulls of an entry."""
    if type(value) is str:
        return encode_basestring(value)
    if type(value) is int:
        return str(value)
    return "null" if value is None else _json(value)


def encode(entry: EntryRecord) -> bytes:
    """`entry.as_json()` with sorted keys, no spaces, UTF-8: the same entry always gives the
    same bytes. Written field by field in key order, the metadata encoded once per entry, which
    is what `json.dumps(entry.as_json(), sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` gives (a property test holds them equal) at a fraction of its cost."""
    legs = ",".join(
        f"[{_value(address)},{_value(asset)},{_value(amount)}]"
        for address, asset, amount in entry.postings
    )
    return (
        f'{{"id":{_value(entry.id)},"idempotency_key":{_value(entry.idempotency_key)},'
        f'"kind":{_value(entry.kind)},"metadata":{entry.metadata_json},'
        f'"occurred_at":{_value(entry.occurred_text)},'
        f'"origin":{_value(entry.origin)},"postings":[{legs}],'
        f'"recorded_at":{_value(entry.recorded_text)},'
        f'"request_hash":{_value(entry.request_hash)},'
        f'"reverses_id":{_value(entry.reverses_id)}}}'
    ).encode()


def id_array(name: str, ids: Iterable[int]) -> Any:
    """A `bigint[]` parameter of any length, one parameter whatever the count (a statement holds
    at most 65,535), sent as its text form: written with one join, where a list would be
    encoded element by element."""
    text = "{" + ",".join(str(int(i)) for i in ids) + "}"
    return cast(bindparam(name, text, type_=Text), ARRAY(BigInteger))


def load_entries(session: Session, entry_ids: Iterable[int]) -> list[EntryRecord]:
    """The entries with these ids, in id order, with their postings."""
    return _load(session, journal_entries.c.id == any_(id_array("entry_ids", entry_ids)))


def entries_recorded(session: Session, start: datetime, end: datetime) -> list[EntryRecord]:
    """Entries recorded in [start, end), in id order."""
    return _load(
        session, (journal_entries.c.recorded_at >= start) & (journal_entries.c.recorded_at < end)
    )


def entries_where(session: Session, condition: Any) -> list[EntryRecord]:
    """The entries matching `condition`, in id order, with their postings."""
    return _load(session, condition)


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
    """One statement: each entry with its postings gathered into arrays in posting order, so
    that a batch is one row per entry however many legs it has."""

    def gathered(column: Any, name: str) -> Any:
        # Typed as nothing in particular: psycopg's lists are taken as they come, not walked
        # again item by item.
        return func.array_agg(aggregate_order_by(column, postings.c.id), type_=NullType()).label(
            name
        )

    legs = (
        select(
            gathered(accounts.c.address, "addresses"),
            gathered(postings.c.asset, "assets"),
            gathered(postings.c.amount, "amounts"),
        )
        .select_from(postings.join(accounts, accounts.c.id == postings.c.account_id))
        # The entry's month's partition alone: its postings share its recorded_at.
        .where(
            postings.c.entry_id == journal_entries.c.id,
            postings.c.recorded_at == journal_entries.c.recorded_at,
        )
        .lateral("legs")
    )
    rows = session.execute(
        select(journal_entries, legs.c.addresses, legs.c.assets, legs.c.amounts)
        .select_from(journal_entries.join(legs, true()))
        .where(condition)
        .order_by(journal_entries.c.id)
        .limit(limit)
    ).all()
    return [
        EntryRecord(
            id=r.id,
            kind=r.kind,
            origin=r.origin,
            idempotency_key=r.idempotency_key,
            request_hash=bytes(r.request_hash).hex(),
            occurred_at=r.occurred_at,
            recorded_at=r.recorded_at,
            metadata=r.metadata,
            reverses_id=r.reverses_id,
            postings=tuple(zip(r.addresses or (), r.assets or (), r.amounts or (), strict=True)),
        )
        for r in rows
    ]
