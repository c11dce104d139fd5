"""Reference data kept in each process: partners, keys, stores, rates, rule sets and risk
thresholds change rarely and are read by every request, so each process keeps them in memory.

A copy can never be older than what the transaction reading it sees. Every table behind
reference data has a version in `reference_versions`, moved by a trigger in the same
transaction as any change to the table. A transaction reads the versions before it uses a copy
(the partner request path reads them once, in its first statement, with the nonce); a copy
loaded at an older version is loaded again, on that transaction, before it is used. A change
committed by any process therefore shows in every process from the next transaction on.

A transaction that changed a table itself (the trigger notes it in a setting local to the
transaction) reads the table afresh, and keeps what it read to itself: its changes may yet
roll back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import BigInteger, Column, Engine, Table, Text

from clearinghouse.database import Tx
from clearinghouse.schema import metadata

T = TypeVar("T")

reference_versions = Table(
    "reference_versions",
    metadata,
    Column("name", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

VERSIONS = (
    "SELECT name, version, coalesce(current_setting('reference.changed_' || name, true), '')"
    " = 'on' AS changed FROM reference_versions"
)


def versions(tx: Tx) -> dict[str, int | None]:
    """The reference versions as this transaction sees them now (None: changed by this very
    transaction). The partner request path reads them in its first statement; anything else
    reads them at every use."""
    if tx.reference_versions is not None:
        return dict(tx.reference_versions)
    return {row.name: None if row.changed else row.version for row in tx.all(VERSIONS)}


def pin(tx: Tx) -> None:
    """Read the versions once for the rest of this transaction, as the partner request path
    does: for work that changes no reference data (a batch's chunk of lines)."""
    tx.reference_versions = {row.name: row.version for row in tx.all(VERSIONS)}


@dataclass(frozen=True)
class _Copy(Generic[T]):
    versions: tuple[int, ...]
    data: T

    def covers(self, seen: tuple[int, ...]) -> bool:
        return all(mine >= theirs for mine, theirs in zip(self.versions, seen, strict=True))


class Reference(Generic[T]):
    """Data loaded from `tables` by `load`, one copy per database (engine) in this process."""

    def __init__(self, tables: tuple[str, ...], load: Callable[[Tx], T]) -> None:
        self.tables = tables
        self._load = load
        self._copies: weakref.WeakKeyDictionary[Engine, _Copy[T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, tx: Tx) -> T:
        """The data as of this transaction or later."""
        seen_now = versions(tx)
        if any(seen_now[table] is None for table in self.tables):
            return self._load(tx)
        seen = tuple(v for table in self.tables if (v := seen_now[table]) is not None)
        engine = tx.connection.engine
        copy = self._copies.get(engine)
        if copy is not None and copy.covers(seen):
            return copy.data
        with self._lock:
            copy = self._copies.get(engine)
            if copy is None or not copy.covers(seen):
                copy = _Copy(seen, self._load(tx))
                self._copies[engine] = copy
        return copy.data

    def peek(self, engine: Engine) -> T | None:
        """The copy this process holds, without asking whether it is current: for a check that
        is confirmed later in a transaction (`get`)."""
        copy = self._copies.get(engine)
        return None if copy is None else copy.data
