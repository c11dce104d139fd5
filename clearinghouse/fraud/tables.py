"""Fraud thresholds (versioned, per partner over coalition defaults), cases and their actions."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

fraud_thresholds = Table(
    "fraud_thresholds",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id")),
    Column("version", Integer, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("settings", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("partner_id", "version"),
)

fraud_cases = Table(
    "fraud_cases",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("member_id", Text, ForeignKey("members.id")),
    Column("operation", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("verdicts", JSONB, nullable=False),
    Column("attempt", JSONB, nullable=False),
    Column("entry_id", BigInteger),
    Column("hold_id", Text, ForeignKey("holds.id")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", Text, ForeignKey("users.id")),
    CheckConstraint("decision IN ('review', 'block')", name="decision_known"),
    CheckConstraint("state IN ('open', 'approved', 'rejected', 'blocked')", name="state_known"),
    Index("ix_fraud_cases_state_created_at", "state", "created_at"),
    Index("ix_fraud_cases_partner_id", "partner_id"),
    # A hold's or an accrual's open case is looked up when the partner sees it.
    Index("ix_fraud_cases_entry_id", "entry_id", postgresql_where=text("entry_id IS NOT NULL")),
    Index("ix_fraud_cases_hold_id", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
)

fraud_actions = Table(
    "fraud_actions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("case_id", Text, ForeignKey("fraud_cases.id"), nullable=False),
    Column("action", Text, nullable=False),
    Column("user_id", Text, ForeignKey("users.id")),
    Column("note", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    Index("ix_fraud_actions_case_id", "case_id"),
)
