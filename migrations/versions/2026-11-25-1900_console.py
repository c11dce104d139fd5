"""The finance console: users may have a password (argon2), console sessions are kept by the
digest of their cookie, and every sign-in attempt is recorded (lock-out counts them). The
read-only role may read sign-in attempts but not sessions.

Revision ID: 0007_console
Revises: 0006_fraud
Create Date: 2026-11-25 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_console"
down_revision: str | None = "0006_fraud"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("password_hash", sa.Text(), nullable=True))
    op.add_column(
        "users", sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "console_sessions",
        sa.Column("id_digest", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("csrf_token", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("console_sessions_user_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id_digest", name=op.f("console_sessions_pkey")),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    op.create_table(
        "signin_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("login", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("remote_addr", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('signed_in', 'wrong_password', 'unknown_user', 'disabled',"
            " 'no_password', 'locked', 'unlocked')",
            name=op.f("signin_attempts_outcome_known_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("signin_attempts_pkey")),
    )
    op.create_index("ix_signin_attempts_login_at", "signin_attempts", ["login", "at"])
    op.execute("REVOKE ALL ON console_sessions FROM clearinghouse_readonly")


def downgrade() -> None:
    op.drop_index("ix_signin_attempts_login_at", table_name="signin_attempts")
    op.drop_table("signin_attempts")
    op.drop_index("ix_console_sessions_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_column("users", "password_changed_at")
    op.drop_column("users", "password_hash")
