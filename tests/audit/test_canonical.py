"""The canonical encoding, written field by field, is exactly the JSON of the entry's fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clearinghouse.audit.canonical import EntryRecord, encode


def _reference(entry: EntryRecord) -> bytes:
    return json.dumps(
        entry.as_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
)
_metadata = st.dictionaries(
    st.text(),
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    max_size=5,
)
_instants = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@given(
    entry_id=st.integers(min_value=1, max_value=2**63 - 1),
    kind=st.text(min_size=1),
    origin=st.text(min_size=1),
    key=st.text(min_size=1),
    request_hash=st.binary(min_size=32, max_size=32).map(bytes.hex),
    occurred=_instants,
    recorded=_instants,
    metadata=_metadata,
    reverses=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    legs=st.lists(st.tuples(st.text(), st.text(), st.integers()), max_size=6),
)
def test_encode_is_the_sorted_compact_json_of_the_entry(
    entry_id: int,
    kind: str,
    origin: str,
    key: str,
    request_hash: str,
    occurred: datetime,
    recorded: datetime,
    metadata: dict[str, Any],
    reverses: int | None,
    legs: list[tuple[str, str, int]],
) -> None:
    entry = EntryRecord(
        entry_id,
        kind,
        origin,
        key,
        request_hash,
        occurred,
        recorded,
        metadata,
        reverses,
        tuple(legs),
    )
    assert encode(entry) == _reference(entry)
    assert encode(EntryRecord.from_json(json.loads(encode(entry)))) == encode(entry)


@given(odd=st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers())))
def test_a_forged_field_of_another_type_encodes_as_json_would(odd: object) -> None:
    # An export read back may hold anything where a string or an id belongs; verifying it must
    # hash what json.dumps would have written, and so report the entry changed.
    forged = {
        "id": 7,
        "kind": odd,
        "origin": "partner:p",
        "idempotency_key": "k",
        "request_hash": odd,
        "occurred_at": "2026-12-01T00:00:00.000000Z",
        "recorded_at": "2026-12-01T00:00:00.000001Z",
        "metadata": {},
        "reverses_id": odd,
        "postings": [],
    }
    entry = EntryRecord.from_json(forged)
    assert encode(entry) == _reference(entry)
