"""Batch tables: an uploaded file of operations, and one row per line with its result."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

BATCH_STATES = ("received", "processing", "done")
LINE_STATES = ("pending", "applied", "replayed", "failed")

batches = Table(
    "batches",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    # The key that uploaded it: a store's key scopes every line to its store.
    Column("key_id", Text, nullable=False),
    Column("store_id", Text, ForeignKey("stores.id")),
    Column("file_sha256", LargeBinary, nullable=False),
    Column("lines", Integer, nullable=False),
    Column("state", Text, nullable=False, server_default=text("'received'")),
    Column("applied", Integer, nullable=False, server_default=text("0")),
    Column("replayed", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint("state IN ('received', 'processing', 'done')", name="state_known"),
    CheckConstraint("lines BETWEEN 1 AND 10000", name="lines_range"),
    CheckConstraint("applied + replayed + failed <= lines", name="counts_within_lines"),
    Index("ix_batches_partner_id", "partner_id", "received_at"),
    Index("ix_batches_open", "received_at", postgresql_where=text("state <> 'done'")),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", Text, ForeignKey("batches.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("operation", Text),
    Column("partner_txn_id", Text),
    Column("member_id", Text),
    # A hash of the line's member: which lane of the worker applies it (batches.worker).
    Column("member_key", BigInteger, nullable=False, server_default=text("0")),
    # The line as read (NULL when it was not a JSON object); its result once processed.
    Column("body", JSONB),
    Column("state", Text, nullable=False, server_default=text("'pending'")),
    Column("status", SmallInteger),
    Column("result", JSONB),
    Column("processed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("batch_id", "line_no"),
    CheckConstraint("state IN ('pending', 'applied', 'replayed', 'failed')", name="state_known"),
    CheckConstraint("(state = 'pending') = (result IS NULL)", name="result_when_processed"),
    Index(
        "ix_batch_lines_pending",
        "batch_id",
        "line_no",
        postgresql_where=text("state = 'pending'"),
    ),
)
