"""Sealed blocks of journal entries: each block holds the Merkle root of its entries' canonical
encodings and a hash over the previous block's hash and that root."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    Table,
    UniqueConstraint,
    text,
)

from clearinghouse.schema import metadata

seal_blocks = Table(
    "seal_blocks",
    metadata,
    Column("number", Integer, primary_key=True),
    Column("entry_count", Integer, nullable=False),
    Column("merkle_root", LargeBinary, nullable=False),
    Column("previous_hash", LargeBinary, nullable=False),
    Column("block_hash", LargeBinary, nullable=False, unique=True),
    Column("sealed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

seal_items = Table(
    "seal_items",
    metadata,
    Column("entry_id", BigInteger, primary_key=True),
    Column("block_number", Integer, ForeignKey("seal_blocks.number"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    # When the entry was recorded, as sealed: tells an export whether a missing entry belongs in it.
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("block_number", "position"),
)

# The entries not sealed yet, in id order: filled by a trigger on the journal as entries are
# written, emptied by the transaction that seals them (migration 0015).
seal_queue = Table(
    "seal_queue",
    metadata,
    Column("entry_id", BigInteger, primary_key=True, autoincrement=False),
)
