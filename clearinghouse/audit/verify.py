"""Verification: recompute every sealed block from the entries themselves — from the database,
or from an export folder with no database at all — and name the first block and entry that
differ. One function judges both sources.

A chain that is consistent in itself may still have been rewritten and sealed again; a digest
held from before (a partner's statement, an auditor's note) is what tells: some block of the
chain must have it. Entries not sealed yet are counted, and entries that should have been
sealed long ago are a failure: sealing stopped, or the seals were removed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from clearinghouse.audit import sealing
from clearinghouse.audit.canonical import EntryRecord, encode, load_entries
from clearinghouse.audit.exports import verify_manifest
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


def judge(
    blocks: list[SealedBlock],
    entries: dict[int, EntryRecord],
    window: tuple[datetime, datetime] | None = None,
    digest: str | None = None,
    now: datetime | None = None,
) -> Verdict:
    """`entries` are what the source holds; with a `window`, only entries recorded in it are
    expected (an export of a date range); without one, all of them (the database). `digest`
    must be the hash of one of the blocks (ValueError if it is no block hash at all). Entries
    unsealed though recorded OVERDUE_AFTER before `now` are a problem."""
    if digest is not None:
        digest = parse_digest(digest)
    problems: list[Problem] = []
    previous_hash = GENESIS.hex()
    previous_sealed: datetime | None = None
    # A full block was sealed in a batch with the next one: a backlog, not a back-dated entry.
    previous_full = False
    sealed_ids: set[int] = set()
    checked = 0
    for expected_number, block in enumerate(blocks, start=1):
        if block.number != expected_number:
            problems.append(Problem(block.number, None, f"block {expected_number} is missing"))
        if block.previous_hash != previous_hash:
            problems.append(Problem(block.number, None, "does not follow the previous block"))
        if len(block.items) != block.entry_count:
            problems.append(Problem(block.number, None, "holds another number of entries"))
        leaves: list[bytes] = []
        for entry_id, stored_leaf, recorded_at in block.items:
            sealed_ids.add(entry_id)
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
        previous_hash = block.block_hash
        previous_sealed = block.sealed_at
        previous_full = block.entry_count >= sealing.MAX_BLOCK_ENTRIES
    if digest is not None and digest not in {b.block_hash for b in blocks}:
        # Seals rewritten consistently pass every other check; a digest held elsewhere does not.
        problems.append(
            Problem(
                None,
                None,
                f"no block has the digest {digest}: this chain does not extend the one it "
                "sealed (rewritten and sealed again, or its seals removed)",
            )
        )
    unsealed = sorted(
        (e for e in entries.values() if e.id not in sealed_ids), key=lambda e: (e.recorded_at, e.id)
    )
    last_seal = blocks[-1].sealed_at if blocks else None
    overdue: list[EntryRecord] = []
    for entry in unsealed:
        if last_seal is not None and entry.recorded_at < last_seal - BACKDATE_TOLERANCE:
            problems.append(
                Problem(
                    None,
                    entry.id,
                    "recorded before the last seal but never sealed: inserted after the fact",
                )
            )
        elif now is not None and entry.recorded_at < now - OVERDUE_AFTER:
            overdue.append(entry)
    if overdue:
        problems.append(
            Problem(
                None,
                overdue[0].id,
                "entries not sealed though recorded more than "
                f"{OVERDUE_AFTER.total_seconds():g} s before {now:%Y-%m-%dT%H:%M:%S%z}: "
                f"{len(overdue)}, this the oldest; sealing stopped, or the seals were removed",
            )
        )
    problems.sort(
        key=lambda p: (p.block is None, p.block or 0, p.entry_id is None, p.entry_id or 0)
    )
    return Verdict(len(blocks), checked, problems, len(unsealed), unsealed[0] if unsealed else None)


def sealed_blocks(session: Session) -> list[SealedBlock]:
    items: dict[int, list[tuple[int, str, datetime]]] = {}
    for row in session.execute(
        select(seal_items).order_by(seal_items.c.block_number, seal_items.c.position)
    ):
        items.setdefault(row.block_number, []).append(
            (row.entry_id, bytes(row.leaf_hash).hex(), row.recorded_at)
        )
    return [
        SealedBlock(
            row.number,
            row.entry_count,
            bytes(row.merkle_root).hex(),
            bytes(row.previous_hash).hex(),
            bytes(row.block_hash).hex(),
            row.sealed_at,
            items.get(row.number, []),
        )
        for row in session.execute(select(seal_blocks).order_by(seal_blocks.c.number))
    ]


def verify_database(
    session: Session, digest: str | None = None, now: datetime | None = None
) -> Verdict:
    """Every block and entry in the database; entries overdue for sealing at `now` (the
    clock's time unless given) fail."""
    blocks = sealed_blocks(session)
    present = sorted(session.execute(select(journal_entries.c.id)).scalars())
    entries = {e.id: e for e in _load_in_batches(session, present)}
    return judge(blocks, entries, None, digest, now or datetime.now(UTC))


def _load_in_batches(session: Session, ids: list[int], size: int = 5000) -> Iterable[EntryRecord]:
    for start in range(0, len(ids), size):
        yield from load_entries(session, ids[start : start + size])


def write_seals(session: Session, out_dir: Path) -> int:
    """Write every block, with its items, next to an export; returns the number of blocks."""
    blocks = sealed_blocks(session)
    with (out_dir / SEALS_FILE).open("w") as out:
        for block in blocks:
            out.write(json.dumps(block.as_json(), sort_keys=True, separators=(",", ":")) + "\n")
    return len(blocks)


def verify_export(folder: Path, digest: str | None = None) -> Verdict:
    """Verify an export folder (entries.jsonl, seals.jsonl, manifest.json) alone."""
    damaged = [Problem(None, None, f"manifest: {p}") for p in verify_manifest(folder)]
    manifest = json.loads((folder / "manifest.json").read_text())
    window = (
        datetime.fromisoformat(manifest["start"]),
        datetime.fromisoformat(manifest["end"]),
    )
    entries = {}
    for line in (folder / "entries.jsonl").read_text().splitlines():
        if line:
            entry = EntryRecord.from_json(json.loads(line))
            entries[entry.id] = entry
    blocks = [
        SealedBlock.from_json(json.loads(line))
        for line in (folder / SEALS_FILE).read_text().splitlines()
        if line
    ]
    # The export was made no earlier than its newest entry and newest seal: entries overdue
    # by then were overdue when it was made.
    known = [e.recorded_at for e in entries.values()] + [b.sealed_at for b in blocks]
    verdict = judge(blocks, entries, window, digest, max(known, default=None))
    return replace(verdict, problems=verdict.problems + damaged)


def unsealed_count(session: Session) -> int:
    count: int = session.execute(
        select(func.count())
        .select_from(journal_entries)
        .where(~exists().where(seal_items.c.entry_id == journal_entries.c.id))
    ).scalar_one()
    return count
