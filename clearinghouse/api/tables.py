"""Stored answers to POST requests, by partner and idempotency key."""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("state", Text, nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=False),
    Column("response_status", Integer),
    Column("response_headers", JSONB),
    Column("response_body", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("completed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("partner_id", "key"),
    CheckConstraint("state IN ('in_progress', 'done')", name="state_known"),
    CheckConstraint("(state = 'done') = (response_status IS NOT NULL)", name="response_when_done"),
    Index("ix_idempotency_records_created_at", "created_at"),
)
