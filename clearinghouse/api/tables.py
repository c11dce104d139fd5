"""Stored answers to POST requests, by partner and idempotency key; rate limit counters."""

from sqlalchemy import (
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
    Column("response_status", Integer, nullable=False),
    Column("response_headers", JSONB, nullable=False),
    Column("response_body", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("partner_id", "key"),
    Index("ix_idempotency_records_created_at", "created_at"),
)

# Hits per subject and fixed window, a row for each database connection that counted some
# (clearinghouse.api.throttle; written through the functions of migration 0010_rate_limits).
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("subject", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("backend", Integer, nullable=False),
    Column("hits", Integer, nullable=False),
    PrimaryKeyConstraint("subject", "window_start", "backend"),
    prefixes=["UNLOGGED"],
)
