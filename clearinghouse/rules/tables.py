"""The versioned rule sets: the earning rules and the points policy in force from an instant on
(clearinghouse.rules.policy)."""

from sqlalchemy import Column, DateTime, Integer, Table, text
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

rule_sets = Table(
    "rule_sets",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("effective_from", DateTime(timezone=True), nullable=False, unique=True),
    Column("earning", JSONB, nullable=False),
    Column("policy", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
