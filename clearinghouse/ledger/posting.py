"""Writing journal entries: `post()` checks an entry, then writes it and its postings atomically."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from clearinghouse.ledger import errors
from clearinghouse.ledger.accounts import Address

BIGINT_MAX = 2**63 - 1
_KIND = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_ASSET = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")


@dataclass(frozen=True)
class Posting:
    """One leg of an entry: a positive amount raises the account's balance, a negative one
    lowers it. Amounts are integers in the asset's unit (points, fen)."""

    account: str
    amount: int
    asset: str = "PTS"


@dataclass(frozen=True)
class Entry:
    kind: str
    origin: str
    idempotency_key: str
    postings: Sequence[Posting]
    occurred_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reverses: int | None = None


@dataclass(frozen=True)
class PostedEntry:
    id: int
    recorded_at: datetime
    replayed: bool


def transfer(
    *,
    kind: str,
    origin: str,
    idempotency_key: str,
    source: str | Address,
    destination: str | Address,
    amount: int,
    occurred_at: datetime,
    asset: str = "PTS",
    metadata: Mapping[str, Any] | None = None,
    reverses: int | None = None,
) -> Entry:
    """An entry moving `amount` of `asset` from one account to another."""
    return Entry(
        kind=kind,
        origin=origin,
        idempotency_key=idempotency_key,
        postings=(
            Posting(str(source), -amount, asset),
            Posting(str(destination), amount, asset),
        ),
        occurred_at=occurred_at,
        metadata=metadata or {},
        reverses=reverses,
    )


def validate(entry: Entry) -> None:
    """Refuse an entry the database would refuse, before it gets there."""
    if not _KIND.match(entry.kind):
        raise errors.InvalidEntry(f"malformed entry kind {entry.kind!r}")
    if not entry.origin:
        raise errors.InvalidEntry("an entry needs an origin")
    if not 1 <= len(entry.idempotency_key) <= 200:
        raise errors.InvalidEntry("an idempotency key has 1 to 200 characters")
    if entry.occurred_at.tzinfo is None:
        raise errors.InvalidEntry("occurred_at must carry a time zone")
    for posting in entry.postings:
        Address.parse(posting.account)
        if not _ASSET.match(posting.asset):
            raise errors.InvalidEntry(f"malformed asset code {posting.asset!r}")
        amount = posting.amount
        if type(amount) is not int or amount == 0 or abs(amount) > BIGINT_MAX:
            raise errors.InvalidEntry(
                f"posting amounts are non-zero integers within 64 bits, not {amount!r}"
            )
    try:
        canonical_json(entry.metadata)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidEntry(f"metadata must be JSON: {exc}") from exc
    problem = unbalanced((p.asset, p.amount) for p in entry.postings)
    if problem:
        raise errors.UnbalancedEntry(problem)


def unbalanced(legs: Iterable[tuple[str, int]]) -> str | None:
    """Why the legs (asset, amount) of an entry do not balance; None when they do. Checked on
    an entry before it is posted, and again on a stored one before it is sealed."""
    sums: dict[str, int] = defaultdict(int)
    count = 0
    for asset, amount in legs:
        sums[asset] += amount
        count += 1
    if count < 2:
        return "an entry needs at least two postings"
    off = {asset: total for asset, total in sums.items() if total != 0}
    if off:
        return "postings must sum to zero for every asset: " + ", ".join(
            f"{asset} sums to {total}" for asset, total in sorted(off.items())
        )
    return None


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


def request_hash(entry: Entry) -> bytes:
    """A digest of everything an entry says, so that a retry can be told from a reuse of its key.
    The order of postings does not matter."""
    content = {
        "kind": entry.kind,
        "occurred_at": entry.occurred_at.astimezone(UTC).isoformat(),
        "postings": sorted([p.account, p.asset, p.amount] for p in entry.postings),
        "metadata": entry.metadata,
        "reverses": entry.reverses,
    }
    return hashlib.sha256(canonical_json(content).encode()).digest()


Arguments = tuple[object, ...]
"""An entry as the SQL function ledger_post takes it: kind, origin, idempotency key, request
hash, occurred_at, metadata, reverses, addresses, assets, amounts. SQL functions that write an
entry together with what it is for take the same ten, in this order (ENTRY_PARAMETERS)."""

ENTRY_PARAMETERS = "%s, %s, %s, %s, %s, %s::jsonb, %s::bigint, %s::text[], %s::text[], %s::bigint[]"


def arguments(entry: Entry) -> Arguments:
    """The entry checked and laid out for ledger_post."""
    validate(entry)
    return (
        entry.kind,
        entry.origin,
        entry.idempotency_key,
        request_hash(entry),
        entry.occurred_at,
        canonical_json(entry.metadata),
        entry.reverses,
        [p.account for p in entry.postings],
        [p.asset for p in entry.postings],
        [p.amount for p in entry.postings],
    )


def post(db: Session | Tx, entry: Entry) -> PostedEntry:
    """Write `entry` in the transaction and return it.

    The same origin and idempotency key with the same content returns the first entry
    (`replayed=True`) and writes nothing; with other content it raises `IdempotencyConflict`.
    A refused entry leaves the transaction failed: roll it back.
    """
    tx = Tx.of(db)
    with refused_as_domain_errors():
        row = tx.one(
            "SELECT entry_id, recorded_at, replayed FROM ledger_post(" + ENTRY_PARAMETERS + ")",
            arguments(entry),
        )
    return PostedEntry(id=row.entry_id, recorded_at=row.recorded_at, replayed=row.replayed)


@contextmanager
def refused_as_domain_errors() -> Iterator[None]:
    """The ledger's refusals (an overdraft, an unknown account...) from any statement that
    writes entries, as domain errors."""
    try:
        yield
    except (DBAPIError, psycopg.Error) as exc:
        domain = errors.translate(exc)
        if domain is None:
            raise
        raise domain from exc
