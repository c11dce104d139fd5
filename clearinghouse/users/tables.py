"""Users, their API tokens (kept only as SHA-256 digests), their passwords (argon2 hashes), the
console sessions they open and every sign-in attempt."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    Table,
    Text,
    text,
)

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
    Column("password_hash", Text),
    Column("password_changed_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('finance', 'approver', 'auditor', 'operator')", name="role_known"),
    CheckConstraint("id ~ '^[a-z0-9][a-z0-9._-]{1,39}$'", name="id_format"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    # The cookie's value is never stored: a stolen table opens no session.
    Column("id_digest", LargeBinary, primary_key=True),
    Column("user_id", Text, ForeignKey("users.id"), nullable=False),
    Column("csrf_token", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Index("ix_console_sessions_user_id", "user_id"),
)

signin_attempts = Table(
    "signin_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    # The name as typed: attempts on names that do not exist count towards lock-out too.
    Column("login", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("succeeded", Boolean, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("remote_addr", Text),
    CheckConstraint(
        "outcome IN ('signed_in', 'wrong_password', 'unknown_user', 'disabled', 'no_password',"
        " 'locked', 'unlocked')",
        name="outcome_known",
    ),
    Index("ix_signin_attempts_login_at", "login", "at"),
)
