"""Verification: recompute every sealed block from the entries themselves — from the database,
or from an export folder with no database at all — and name the first block and entry that
differ. One function judges both sources.

A chain that is consistent in itself may still have been rewritten and sealed again; a digest
held from before (a partner's statement, an auditor's note) is what tells: some block of the
chain must have it. Entries not sealed yet are counted, and entries that should have been
sealed long ago are a failure: sealing stopped, or the seals were removed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.audit import sealing
from clearinghouse.audit.canonical import EntryRecord, encode, entries_in_batches, load_entries
from clearinghouse.audit.exports import (
    ENTRIES_FILE,
    Manifest,
    Progress,
    export_part,
    record_file,
    verify_manifest,
)
from clearinghouse.audit.sealing import (
    BACKDATE_TOLERANCE,
    GENESIS,
    OVERDUE_AFTER,
    block_hash,
    leaf_hash,
    merkle_root,
    parse_digest,
)
from clearinghouse.audit.tables import seal_blocks, seal_items
from clearinghouse.ledger import partitions
from clearinghouse.ledger.tables import journal_entries

SEALS_FILE = "seals.jsonl"


@dataclass(frozen=True)
class SealedBlock:
    number: int
    entry_count: int
    merkle_root: str
    previous_hash: str
    block_hash: str
    sealed_at: datetime
    items: list[tuple[int, str, datetime]]
    """(entry id, leaf hash, recorded at) in position order."""

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "entry_count": self.entry_count,
            "merkle_root": self.merkle_root,
            "previous_hash": self.previous_hash,
            "block_hash": self.block_hash,
            "sealed_at": self.sealed_at.isoformat(),
            "items": [[e, h, r.isoformat()] for e, h, r in self.items],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SealedBlock:
        return cls(
            int(data["number"]),
            int(data["entry_count"]),
            data["merkle_root"],
            data["previous_hash"],
            data["block_hash"],
            datetime.fromisoformat(data["sealed_at"]),
            [(int(e), h, datetime.fromisoformat(r)) for e, h, r in data["items"]],
        )


@dataclass(frozen=True)
class Problem:
    block: int | None
    entry_id: int | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.block is not None:
            where.append(f"block {self.block}")
        if self.entry_id is not None:
            where.append(f"entry {self.entry_id}")
        return f"{', '.join(where) or 'journal'}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    blocks: int
    entries: int
    problems: list[Problem]
    unsealed: int = 0
    oldest_unsealed: EntryRecord | None = None


BATCH_SIZE = 5000
"""Entries read at a time from the database: what verification holds in memory."""

SourceBlock = tuple[SealedBlock, Mapping[int, EntryRecord]]
"""A block, and the source's entries among those it seals (or more)."""


def judge(
    blocks: Iterable[SourceBlock],
    unsealed: Iterable[EntryRecord],
    window: tuple[datetime, datetime] | None = None,
    digest: str | None = None,
    now: datetime | None = None,
) -> Verdict:
    """`blocks` in chain order, each with what the source holds of its entries; `unsealed` the
    source's entries that no block seals, read once the blocks are. Both are consumed as they
    come, so a source can read them in batches. With a `window`, only entries recorded in it
    are expected (an export of a date range); without one, all of them (the database).
    `digest` must be the hash of one of the blocks (ValueError if it is no block hash at all).
    Entries unsealed though recorded OVERDUE_AFTER before `now` are a problem."""
    if digest is not None:
        digest = parse_digest(digest)
    problems: list[Problem] = []
    previous_hash = GENESIS.hex()
    previous_sealed: datetime | None = None
    # A full block was sealed in a batch with the next one: a backlog, not a back-dated entry.
    previous_full = False
    digest_found = False
    count = checked = 0
    for block, entries in blocks:
        count += 1
        if block.number != count:
            problems.append(Problem(block.number, None, f"block {count} is missing"))
        if block.previous_hash != previous_hash:
            problems.append(Problem(block.number, None, "does not follow the previous block"))
        if len(block.items) != block.entry_count:
            problems.append(Problem(block.number, None, "holds another number of entries"))
        leaves: list[bytes] = []
        for entry_id, stored_leaf, recorded_at in block.items:
            entry = entries.get(entry_id)
            expected = window is None or window[0] <= recorded_at < window[1]
            if entry is None:
                if expected:
                    problems.append(Problem(block.number, entry_id, "sealed entry is missing"))
                leaves.append(bytes.fromhex(stored_leaf))
                continue
            checked += 1
            leaf = leaf_hash(encode(entry))
            leaves.append(leaf)
            if leaf.hex() != stored_leaf:
                problems.append(Problem(block.number, entry_id, "entry changed after sealing"))
            if (
                previous_sealed is not None
                and not previous_full
                and entry.recorded_at < previous_sealed - BACKDATE_TOLERANCE
            ):
                problems.append(
                    Problem(
                        block.number,
                        entry_id,
                        "recorded long before the previous block was sealed: back-dated",
                    )
                )
        root = merkle_root(leaves)
        # Entries outside an export count with their sealed leaves, so the root still binds
        # every leaf it holds.
        if root.hex() != block.merkle_root:
            problems.append(Problem(block.number, None, "Merkle root differs from its entries"))
        recomputed = block_hash(
            block.number,
            block.entry_count,
            bytes.fromhex(block.previous_hash),
            bytes.fromhex(block.merkle_root),
        ).hex()
        if recomputed != block.block_hash:
            problems.append(Problem(block.number, None, "block hash differs from its contents"))
        digest_found = digest_found or block.block_hash == digest
        previous_hash = block.block_hash
        previous_sealed = block.sealed_at
        previous_full = block.entry_count >= sealing.MAX_BLOCK_ENTRIES
    if digest is not None and not digest_found:
        # Seals rewritten consistently pass every other check; a digest held elsewhere does not.
        problems.append(
            Problem(
                None,
                None,
                f"no block has the digest {digest}: this chain does not extend the one it "
                "sealed (rewritten and sealed again, or its seals removed)",
            )
        )
    unsealed_count = overdue_count = 0
    oldest: EntryRecord | None = None
    oldest_overdue: EntryRecord | None = None
    for entry in unsealed:
        unsealed_count += 1
        if oldest is None or _older(entry, oldest):
            oldest = entry
        if previous_sealed is not None and entry.recorded_at < previous_sealed - BACKDATE_TOLERANCE:
            problems.append(
                Problem(
                    None,
                    entry.id,
                    "recorded before the last seal but never sealed: inserted after the fact",
                )
            )
        elif now is not None and entry.recorded_at < now - OVERDUE_AFTER:
            overdue_count += 1
            if oldest_overdue is None or _older(entry, oldest_overdue):
                oldest_overdue = entry
    if oldest_overdue is not None:
        problems.append(
            Problem(
                None,
                oldest_overdue.id,
                "entries not sealed though recorded more than "
                f"{OVERDUE_AFTER.total_seconds():g} s before {now:%Y-%m-%dT%H:%M:%S%z}: "
                f"{overdue_count}, this the oldest; sealing stopped, or the seals were removed",
            )
        )
    problems.sort(
        key=lambda p: (p.block is None, p.block or 0, p.entry_id is None, p.entry_id or 0)
    )
    return Verdict(count, checked, problems, unsealed_count, oldest)


def _older(entry: EntryRecord, than: EntryRecord) -> bool:
    return (entry.recorded_at, entry.id) < (than.recorded_at, than.id)


def sealed_block_batches(session: Session, size: int = BATCH_SIZE) -> Iterator[list[SealedBlock]]:
    """Every block with its items, in order, as many blocks at a time as hold `size` entries
    (at least one block): read by keyset on the block number, never the whole chain."""
    after = 0
    while True:
        heads = session.execute(
            select(seal_blocks)
            .where(seal_blocks.c.number > after)
            .order_by(seal_blocks.c.number)
            .limit(size)
        ).all()
        if not heads:
            return
        taken, held = [heads[0]], heads[0].entry_count
        for row in heads[1:]:
            if held + row.entry_count > size:
                break
            taken.append(row)
            held += row.entry_count
        items: dict[int, list[tuple[int, str, datetime]]] = {}
        for row in session.execute(
            select(seal_items)
            .where(seal_items.c.block_number.between(taken[0].number, taken[-1].number))
            .order_by(seal_items.c.block_number, seal_items.c.position)
        ):
            items.setdefault(row.block_number, []).append(
                (row.entry_id, bytes(row.leaf_hash).hex(), row.recorded_at)
            )
        yield [
            SealedBlock(
                row.number,
                row.entry_count,
                bytes(row.merkle_root).hex(),
                bytes(row.previous_hash).hex(),
                bytes(row.block_hash).hex(),
                row.sealed_at,
                items.get(row.number, []),
            )
            for row in taken
        ]
        after = taken[-1].number


def sealed_blocks(session: Session) -> Iterator[SealedBlock]:
    """Every block with its items, in order, read in batches."""
    return itertools.chain.from_iterable(sealed_block_batches(session))


def verify_database(
    session: Session,
    digest: str | None = None,
    now: datetime | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> Verdict:
    """Every block and entry in the database, `batch_size` entries at a time; entries overdue
    for sealing at `now` (the clock's time unless given) fail. Entries of archived months are
    not expected (`clearinghouse.audit.archive`)."""

    def blocks() -> Iterator[SourceBlock]:
        for batch in sealed_block_batches(session, batch_size):
            ids = [entry_id for block in batch for entry_id, _, _ in block.items]
            entries = {e.id: e for e in load_entries(session, ids)}
            for block in batch:
                yield block, entries

    not_sealed = ~exists().where(seal_items.c.entry_id == journal_entries.c.id)
    unsealed = itertools.chain.from_iterable(
        entries_in_batches(session, not_sealed, size=batch_size)
    )
    # Archived months' entries are judged by the leaf hashes their seals keep.
    archived = partitions.archived_until(session)
    window = None if archived is None else (archived, datetime.max.replace(tzinfo=UTC))
    return judge(blocks(), unsealed, window, digest, now or clock.now())


def write_seals(session: Session, out_dir: Path) -> int:
    """Write every block, with its items, next to an export; returns the number of blocks."""
    count = 0
    with (out_dir / SEALS_FILE).open("w") as out:
        for block in sealed_blocks(session):
            out.write(json.dumps(block.as_json(), sort_keys=True, separators=(",", ":")) + "\n")
            count += 1
    return count


def export_sealed(
    session: Session,
    start: datetime,
    end: datetime,
    out_dir: Path,
    *,
    max_entries: int | None = None,
    workers: int = 1,
) -> Manifest | Progress:
    """An export (or its next part) with, once finished, the sealed blocks beside it: what
    `audit export` and the export route write (`workers`: see `export_part`)."""
    done = export_part(session, start, end, out_dir, max_entries=max_entries, workers=workers)
    if isinstance(done, Progress):
        return done
    write_seals(session, out_dir)
    return record_file(out_dir, SEALS_FILE)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class _ExportEntries:
    """The entries of `entries.jsonl`, read once, in file (id) order, as the blocks ask for
    them. A block's ids are in order and mostly above the previous block's, so reading runs
    just ahead of the blocks; an entry read ahead waits in `pending` until its block comes
    (one sealed late, behind entries with higher ids) or, never claimed, is unsealed."""

    def __init__(self, path: Path) -> None:
        self._lines = (EntryRecord.from_json(data) for data in _lines(path))
        self._pending: dict[int, EntryRecord] = {}
        self._last_read: int | None = None

    def claim(self, ids: Iterable[int]) -> dict[int, EntryRecord]:
        found: dict[int, EntryRecord] = {}
        for entry_id in ids:
            while entry_id not in self._pending and (
                self._last_read is None or self._last_read < entry_id
            ):
                entry = next(self._lines, None)
                if entry is None:
                    break
                self._pending[entry.id] = entry
                self._last_read = entry.id
            if entry_id in self._pending:
                found[entry_id] = self._pending.pop(entry_id)
        return found

    def unclaimed(self) -> Iterator[EntryRecord]:
        yield from sorted(self._pending.values(), key=lambda e: e.id)
        self._pending.clear()
        yield from self._lines


def verify_export(folder: Path, digest: str | None = None) -> Verdict:
    """Verify an export folder (entries.jsonl, seals.jsonl, manifest.json) alone, reading each
    file as it goes."""
    damaged = [Problem(None, None, f"manifest: {p}") for p in verify_manifest(folder)]
    try:
        manifest = Manifest.read(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Verdict(0, 0, damaged)  # no range to judge the files by
    window = (manifest.start, manifest.end)
    entries_path, seals_path = folder / ENTRIES_FILE, folder / SEALS_FILE
    # The export was made no earlier than its newest entry and newest seal: entries overdue
    # by then were overdue when it was made.
    instants = itertools.chain(
        (datetime.fromisoformat(data["recorded_at"]) for data in _lines(entries_path)),
        (datetime.fromisoformat(data["sealed_at"]) for data in _lines(seals_path)),
    )
    newest = max(instants, default=None)
    entries = _ExportEntries(entries_path)
    blocks = (
        (block, entries.claim(entry_id for entry_id, _, _ in block.items))
        for block in (SealedBlock.from_json(data) for data in _lines(seals_path))
    )
    verdict = judge(blocks, entries.unclaimed(), window, digest, newest)
    return replace(verdict, problems=verdict.problems + damaged)


def unsealed_count(session: Session) -> int:
    count: int = session.execute(
        select(func.count())
        .select_from(journal_entries)
        .where(~exists().where(seal_items.c.entry_id == journal_entries.c.id))
    ).scalar_one()
    return count
