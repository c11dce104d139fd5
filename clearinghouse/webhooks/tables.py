"""Webhook tables: partners' endpoints and their signing secrets, the outbox of events, and each
event's deliveries to each endpoint with their attempts."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from clearinghouse.schema import metadata

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", ARRAY(Text), nullable=False),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    # Since the first failed attempt with no success after it; cleared by a success.
    Column("failing_since", DateTime(timezone=True)),
    Column("disabled_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("status IN ('active', 'disabled')", name="status_known"),
    Index("ix_webhook_endpoints_partner_id", "partner_id"),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("endpoint_id", Text, ForeignKey("webhook_endpoints.id"), nullable=False),
    # `whsec_` + base64: the endpoint signs with it, so it is kept as given, not hashed.
    Column("secret", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set when a newer secret replaces it: both sign until then (the rotation's overlap).
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_webhook_secrets_endpoint_id", "endpoint_id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    # `msg_…`: the webhook-id, the same at every delivery of the event.
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("type", Text, nullable=False),
    # The body sent: {"type", "version", "timestamp", "data"}.
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # From one sequence, in the transaction of the change: a member's events follow the order
    # of the member's changes (each takes the member's lock). Sent in the body as `sequence`.
    Column(
        "sequence",
        BigInteger,
        nullable=False,
        server_default=text("nextval('webhook_event_sequence')"),
    ),
    # Set for an event sent once (a reminder, a notice): emitted again, it is not written.
    Column("dedupe_key", Text),
    UniqueConstraint("partner_id", "dedupe_key"),
    Index("ix_webhook_events_partner_id", "partner_id", "created_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", Text, ForeignKey("webhook_events.id"), nullable=False),
    Column("endpoint_id", Text, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("state", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When the partner or an operator last asked for it again.
    Column("redelivered_at", DateTime(timezone=True)),
    UniqueConstraint("event_id", "endpoint_id"),
    CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state_known"),
    Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "created_at"),
    # A claim's reads: each endpoint's earliest due deliveries.
    Index(
        "ix_webhook_deliveries_endpoint_due",
        "endpoint_id",
        "next_attempt_at",
        "id",
        postgresql_where=text("state = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("delivery_id", BigInteger, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("status", SmallInteger),
    Column("error", Text),
    Column("latency_ms", Integer, nullable=False),
    # The first KiB of the response body, as text.
    Column("response", Text),
    CheckConstraint("(status IS NULL) <> (error IS NULL)", name="status_or_error"),
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)
