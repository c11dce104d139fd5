"""Sealing: committed journal entries are gathered into blocks, off the request path. A block
stores the Merkle root of its entries' canonical encodings (clearinghouse.audit.canonical) and
`block_hash = SHA-256("block" | number | count | previous block's hash | root)`, so the newest
block hash is a digest of the whole journal: anyone holding it can detect a changed, deleted or
inserted entry. Leaves and nodes are hashed as in RFC 6962: SHA-256(0x00 | leaf) and
SHA-256(0x01 | left | right); an odd node at the end of a level is carried up unchanged.

Sealing vouches for what it seals, so it first checks each entry as the ledger would: its
postings balance per asset, and the accounts it touches hold the balances their postings sum to.
It seals up to the entry before the first one that fails and stops there (`SealingHalted`),
every time it runs, until someone has looked.

The entries waiting are those in `seal_queue`, where a trigger on the journal adds each entry
written (migration 0015); the transaction that seals an entry takes it out. An entry written
behind the triggers' back is never queued, so never sealed: verification, which compares the
whole journal with the seals, reports it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Integer, LargeBinary, Text, any_, bindparam, cast, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.audit.canonical import EntryRecord, encode, id_array, load_entries
from clearinghouse.audit.tables import seal_blocks, seal_items, seal_queue
from clearinghouse.ledger.tables import accounts, journal_entries

GENESIS = bytes(32)
MAX_BLOCK_ENTRIES = 10_000
# Entries recorded in the last moments may belong to transactions still committing: sealing
# waits this long, so that an entry's place in the chain follows the order of time.
SEAL_DELAY = timedelta(seconds=2)
# An honest entry is sealed soon after it is recorded; one recorded this long before the block
# it first appears in was made was written with a back-dated clock, or inserted behind our back.
BACKDATE_TOLERANCE = timedelta(minutes=1)
# The periodic jobs seal this often (clearinghouse.jobs).
SEAL_INTERVAL = timedelta(seconds=5)
# An honest entry waits SEAL_DELAY, then at most an interval for the next run; two intervals
# more cover a full block's backlog or another process taking the jobs over. An entry still
# unsealed after that was skipped, or its seal was removed.
OVERDUE_AFTER = SEAL_DELAY + 3 * SEAL_INTERVAL

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

Side = Literal["L", "R"]


def parse_digest(text: str) -> str:
    """A digest as someone holds it (a block hash: 64 hex digits, either case), in lower case.
    Raises ValueError for anything else, so that a typo is never taken for a mismatch."""
    if not _DIGEST.fullmatch(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(f"a digest is a block hash of 64 hexadecimal digits, not {shown!r}")
    return text.lower()


class SealingHalted(Exception):
    """Sealing stopped before an entry that the ledger would not have written as it stands
    (changed behind the ledger's back): sealing it would vouch for the change."""

    def __init__(self, entry_id: int, reason: str, sealed: Sequence[Block] = ()) -> None:
        super().__init__(f"sealing stopped before entry {entry_id}: {reason}")
        self.entry_id = entry_id
        self.reason = reason
        self.sealed = list(sealed)  # the blocks this run sealed before it


def leaf_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + encoded).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = leaves
    while len(level) > 1:
        level = [
            node_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    return level[0]


def merkle_path(leaves: list[bytes], index: int) -> list[tuple[Side, bytes]]:
    """The siblings from leaf `index` up to the root, each with the side it sits on."""
    path: list[tuple[Side, bytes]] = []
    level = leaves
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("L" if sibling < index else "R", level[sibling]))
        level = [
            node_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
        index //= 2
    return path


def root_from_path(leaf: bytes, path: list[tuple[Side, bytes]]) -> bytes:
    node = leaf
    for side, sibling in path:
        node = node_hash(sibling, node) if side == "L" else node_hash(node, sibling)
    return node


def block_hash(number: int, entry_count: int, previous_hash: bytes, root: bytes) -> bytes:
    return hashlib.sha256(
        b"block" + number.to_bytes(8, "big") + entry_count.to_bytes(8, "big") + previous_hash + root
    ).digest()


@dataclass(frozen=True)
class Block:
    number: int
    entry_count: int
    merkle_root: bytes
    previous_hash: bytes
    block_hash: bytes
    sealed_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "entry_count": self.entry_count,
            "merkle_root": self.merkle_root.hex(),
            "previous_hash": self.previous_hash.hex(),
            "block_hash": self.block_hash.hex(),
            "sealed_at": self.sealed_at.isoformat(),
        }


def _block(row: Any) -> Block:
    return Block(
        row.number,
        row.entry_count,
        bytes(row.merkle_root),
        bytes(row.previous_hash),
        bytes(row.block_hash),
        row.sealed_at,
    )


def newest_block(session: Session) -> Block | None:
    row = session.execute(
        select(seal_blocks).order_by(seal_blocks.c.number.desc()).limit(1)
    ).first()
    return None if row is None else _block(row)


@dataclass(frozen=True)
class SealedSpan:
    """A block with the first and last entries it seals (its entries are in id order)."""

    block: Block
    first_entry: int
    last_entry: int


def recent_blocks(session: Session, before: int | None = None, limit: int = 50) -> list[SealedSpan]:
    """Blocks newest first, `limit` of them numbered below `before` (a keyset), each with its
    first and last entry: read at positions 0 and count - 1, never a block's every item."""
    first, last = seal_items.alias("first_item"), seal_items.alias("last_item")
    query = (
        select(seal_blocks, first.c.entry_id.label("first_entry"), last.c.entry_id.label("last"))
        .join(
            first,
            (first.c.block_number == seal_blocks.c.number) & (first.c.position == 0),
        )
        .join(
            last,
            (last.c.block_number == seal_blocks.c.number)
            & (last.c.position == seal_blocks.c.entry_count - 1),
        )
        .order_by(seal_blocks.c.number.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(seal_blocks.c.number < before)
    return [SealedSpan(_block(row), row.first_entry, row.last) for row in session.execute(query)]


@dataclass(frozen=True)
class Waiting:
    """The entries written and not sealed yet (`seal_queue`), and the oldest of them."""

    count: int
    oldest_id: int | None
    oldest_recorded_at: datetime | None


def waiting(session: Session) -> Waiting:
    oldest = session.execute(
        select(journal_entries.c.id, journal_entries.c.recorded_at)
        .join(seal_queue, seal_queue.c.entry_id == journal_entries.c.id)
        .order_by(seal_queue.c.entry_id)
        .limit(1)
    ).first()
    count: int = session.execute(select(func.count()).select_from(seal_queue)).scalar_one()
    if oldest is None:
        return Waiting(count, None, None)
    return Waiting(count, oldest.id, oldest.recorded_at)


def _first_unsound(session: Session, entries: list[EntryRecord]) -> tuple[int, str] | None:
    """The position of the first entry that does not balance, or that touches an account whose
    balance differs from the sum of its postings, and why; None when all are sound. Only the
    accounts with a single balance row (members', stores') are summed: their histories are
    short, while summing a sharded partner or coalition account's whole history every few
    seconds would not be; `clearinghouse ledger check` covers those."""
    addresses = sorted({address for entry in entries for address, _, _ in entry.postings})
    single_row = session.execute(
        select(accounts.c.id).where(
            accounts.c.address == any_(bindparam("addresses", addresses, type_=ARRAY(Text))),
            accounts.c.shards == 1,
        )
    ).scalars()
    drifted = {m.address: m for m in ledger.check_consistency(session, list(single_row))}
    for position, entry in enumerate(entries):
        problem = ledger.unbalanced((asset, amount) for _, asset, amount in entry.postings)
        if problem:
            return position, problem
        for address, _, _ in entry.postings:
            if address in drifted:
                m = drifted[address]
                return position, (
                    f"account {address} holds {m.materialised} but its postings sum to "
                    f"{m.from_postings}"
                )
    return None


def seal_next(session: Session, delay: timedelta | None = None) -> Block | None:
    """Seal the next block of unsealed entries recorded more than `delay` (SEAL_DELAY) ago by
    the database's clock, oldest first; None when there are none. Stops before an unsound
    entry: the block ends with the entry before it, and when it would be the first,
    SealingHalted is raised."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("sealing"))))
    ids = list(
        session.execute(
            select(seal_queue.c.entry_id)
            .join(journal_entries, journal_entries.c.id == seal_queue.c.entry_id)
            .where(
                journal_entries.c.recorded_at
                < func.clock_timestamp() - (SEAL_DELAY if delay is None else delay)
            )
            .order_by(seal_queue.c.entry_id)
            .limit(MAX_BLOCK_ENTRIES)
        ).scalars()
    )
    if not ids:
        return None
    entries = load_entries(session, ids)
    unsound = _first_unsound(session, entries)
    if unsound is not None:
        position, reason = unsound
        if position == 0:
            raise SealingHalted(entries[0].id, reason)
        entries = entries[:position]
    leaves = [leaf_hash(encode(entry)) for entry in entries]
    previous = newest_block(session)
    number = 1 if previous is None else previous.number + 1
    previous_hash = GENESIS if previous is None else previous.block_hash
    root = merkle_root(leaves)
    digest = block_hash(number, len(leaves), previous_hash, root)
    row = session.execute(
        seal_blocks.insert()
        .values(
            number=number,
            entry_count=len(leaves),
            merkle_root=root,
            previous_hash=previous_hash,
            block_hash=digest,
        )
        .returning(seal_blocks)
    ).one()
    # The ids as one array and the leaves as one byte string, 32 bytes each in position order:
    # two parameters, however many entries; each item's recorded_at is its entry's.
    sealed = id_array("ids", (entry.id for entry in entries))
    items = (
        func.unnest(sealed).table_valued("entry_id", with_ordinality="position").render_derived()
    )
    index = items.c.position - 1
    leaf = func.substring(
        bindparam("leaves", b"".join(leaves), type_=LargeBinary),
        cast(index * 32 + 1, Integer),
        32,
        type_=LargeBinary,
    )
    session.execute(
        seal_items.insert().from_select(
            ["entry_id", "block_number", "position", "leaf_hash", "recorded_at"],
            select(
                items.c.entry_id, literal(number), index, leaf, journal_entries.c.recorded_at
            ).join_from(items, journal_entries, journal_entries.c.id == items.c.entry_id),
        )
    )
    session.execute(seal_queue.delete().where(seal_queue.c.entry_id == any_(sealed)))
    return _block(row)


def seal_all(sessions: sessionmaker[Session], delay: timedelta | None = None) -> list[Block]:
    """Seal until nothing older than `delay` (SEAL_DELAY) is left; each block in its own
    transaction. Raises SealingHalted, with the blocks sealed before it, at an unsound entry."""
    sealed: list[Block] = []
    while True:
        try:
            with sessions() as session, session.begin():
                block = seal_next(session, delay)
        except SealingHalted as halted:
            raise SealingHalted(halted.entry_id, halted.reason, sealed) from None
        if block is None:
            return sealed
        sealed.append(block)


@dataclass(frozen=True)
class Proof:
    entry: EntryRecord
    block: Block
    index: int
    path: list[tuple[Side, bytes]]
    later_blocks: list[Block]
    """The blocks after the entry's, up to the newest: they carry its hash forward."""

    def as_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry.as_json(),
            "block": self.block.as_json(),
            "index": self.index,
            "path": [{"side": side, "hash": h.hex()} for side, h in self.path],
            "later_blocks": [
                {
                    "number": b.number,
                    "entry_count": b.entry_count,
                    "merkle_root": b.merkle_root.hex(),
                }
                for b in self.later_blocks
            ],
            "newest_digest": (
                self.later_blocks[-1] if self.later_blocks else self.block
            ).block_hash.hex(),
        }


def prove(session: Session, entry_id: int) -> Proof | None:
    """The inclusion proof of a sealed entry; None if it is not sealed (yet)."""
    item = session.execute(select(seal_items).where(seal_items.c.entry_id == entry_id)).first()
    if item is None:
        return None
    block = _block(
        session.execute(select(seal_blocks).where(seal_blocks.c.number == item.block_number)).one()
    )
    leaves = [
        bytes(h)
        for h in session.execute(
            select(seal_items.c.leaf_hash)
            .where(seal_items.c.block_number == item.block_number)
            .order_by(seal_items.c.position)
        ).scalars()
    ]
    later = [
        _block(r)
        for r in session.execute(
            select(seal_blocks)
            .where(seal_blocks.c.number > block.number)
            .order_by(seal_blocks.c.number)
        )
    ]
    (entry,) = load_entries(session, [entry_id])
    return Proof(entry, block, item.position, merkle_path(leaves, item.position), later)


def check_proof(proof: dict[str, Any], digest: str) -> list[str]:
    """Check a proof (as served, JSON) against a published digest, with no database: the
    entry's leaf climbs its path to the block's root, the block hash follows, and the later
    blocks carry it forward to the digest. Returns the problems; empty means proven. A digest
    that is not a block hash at all raises ValueError."""
    digest = parse_digest(digest)
    problems: list[str] = []
    entry = EntryRecord.from_json(proof["entry"])
    leaf = leaf_hash(encode(entry))
    path = [(p["side"], bytes.fromhex(p["hash"])) for p in proof["path"]]
    root = root_from_path(leaf, path)
    block = proof["block"]
    if root.hex() != block["merkle_root"]:
        problems.append(f"entry {entry.id} does not lead to the root of block {block['number']}")
    current = block_hash(
        int(block["number"]),
        int(block["entry_count"]),
        bytes.fromhex(block["previous_hash"]),
        root,
    )
    # Any digest along the way covers the entry: one held from an earlier settlement proves it
    # as well as the newest.
    reached = {current.hex()}
    for later in proof["later_blocks"]:
        current = block_hash(
            int(later["number"]),
            int(later["entry_count"]),
            current,
            bytes.fromhex(later["merkle_root"]),
        )
        reached.add(current.hex())
    if digest not in reached:
        problems.append("the chain does not lead to the digest given")
    return problems
