"""Users and their API tokens (kept only as SHA-256 digests)."""

from sqlalchemy import CheckConstraint, Column, DateTime, LargeBinary, Table, Text, text

from clearinghouse.schema import metadata

ROLES = ("finance", "approver", "auditor", "operator")

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("token_digest", LargeBinary, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("disabled_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('finance', 'approver', 'auditor', 'operator')", name="role_known"),
    CheckConstraint("id ~ '^[a-z0-9][a-z0-9._-]{1,39}$'", name="id_format"),
)
