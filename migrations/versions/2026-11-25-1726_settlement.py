"""Users with API tokens; daily settlement runs, the entries each covers, their per-partner
lines, approvals and state history; reconciliation uploads with their breaks.

Revision ID: 0004_settlement
Revises: 0003_points
Create Date: 2026-11-25 17:26:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_settlement"
down_revision: str | None = "0003_points"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("token_digest", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "id ~ '^[a-z0-9][a-z0-9._-]{1,39}$'", name=op.f("users_id_format_check")
        ),
        sa.CheckConstraint(
            "role IN ('finance', 'approver', 'auditor', 'operator')",
            name=op.f("users_role_known_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("users_pkey")),
        sa.UniqueConstraint("token_digest", name=op.f("users_token_digest_key")),
    )
    op.create_table(
        "settlement_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("bank_reference", sa.Text(), nullable=True),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(state = 'paid') = (bank_reference IS NOT NULL)",
            name=op.f("settlement_runs_paid_has_reference_check"),
        ),
        sa.CheckConstraint(
            "state IN ('computed', 'approved', 'paid', 'rejected')",
            name=op.f("settlement_runs_state_known_check"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("settlement_runs_entry_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("settlement_runs_pkey")),
        sa.UniqueConstraint(
            "business_date", "attempt", name=op.f("settlement_runs_business_date_attempt_key")
        ),
    )
    op.create_index(
        "ix_settlement_runs_business_date_live",
        "settlement_runs",
        ["business_date"],
        unique=True,
        postgresql_where=sa.text("state <> 'rejected'"),
    )
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("file_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("file", sa.LargeBinary(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("breaks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "uploaded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("reconciliations_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("reconciliations_pkey")),
        sa.UniqueConstraint(
            "partner_id",
            "business_date",
            "file_sha256",
            name=op.f("reconciliations_partner_id_business_date_file_sha256_key"),
        ),
    )
    op.create_index(
        "ix_reconciliations_business_date", "reconciliations", ["business_date"], unique=False
    )
    op.create_table(
        "settlement_approvals",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["settlement_runs.id"], name=op.f("settlement_approvals_run_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("settlement_approvals_user_id_fkey")
        ),
        sa.PrimaryKeyConstraint("run_id", "user_id", name=op.f("settlement_approvals_pkey")),
    )
    op.create_table(
        "settlement_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=True),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["settlement_runs.id"], name=op.f("settlement_events_run_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("settlement_events_user_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("settlement_events_pkey")),
    )
    op.create_index("ix_settlement_events_run_id", "settlement_events", ["run_id"], unique=False)
    op.create_table(
        "settlement_items",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("settlement_items_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["settlement_runs.id"], name=op.f("settlement_items_run_id_fkey")
        ),
        sa.PrimaryKeyConstraint("entry_id", "run_id", name=op.f("settlement_items_pkey")),
    )
    op.create_index("ix_settlement_items_run_id", "settlement_items", ["run_id"], unique=False)
    op.create_table(
        "settlement_lines",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("issued_points", sa.BigInteger(), nullable=False),
        sa.Column("issued_fen", sa.BigInteger(), nullable=False),
        sa.Column("reversed_points", sa.BigInteger(), nullable=False),
        sa.Column("reversed_fen", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_points", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_fen", sa.BigInteger(), nullable=False),
        sa.Column("redemption_refunded_points", sa.BigInteger(), nullable=False),
        sa.Column("redemption_refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("exchange_in_points", sa.BigInteger(), nullable=False),
        sa.Column("exchange_in_fen", sa.BigInteger(), nullable=False),
        sa.Column("exchange_out_points", sa.BigInteger(), nullable=False),
        sa.Column("exchange_out_fen", sa.BigInteger(), nullable=False),
        sa.Column("net_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "net_fen = issued_fen - reversed_fen - redeemed_fen + redemption_refunded_fen"
            " + exchange_in_fen - exchange_out_fen",
            name=op.f("settlement_lines_net_adds_up_check"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("settlement_lines_partner_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["settlement_runs.id"], name=op.f("settlement_lines_run_id_fkey")
        ),
        sa.PrimaryKeyConstraint("run_id", "partner_id", name=op.f("settlement_lines_pkey")),
    )

    op.execute(
        """
        CREATE TRIGGER settlement_events_append_only BEFORE UPDATE OR DELETE ON settlement_events
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER settlement_items_append_only BEFORE UPDATE OR DELETE ON settlement_items
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative, shards)
        VALUES ('coalition:clearing', 'CNY', 'coalition', NULL, 'clearing', false, 16),
               ('coalition:bank', 'CNY', 'coalition', NULL, 'bank', false, 16);
        """
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM account_balances WHERE account_id IN (SELECT id FROM accounts WHERE address "
        "IN ('coalition:clearing', 'coalition:bank'))"
    )
    op.execute("DELETE FROM accounts WHERE address IN ('coalition:clearing', 'coalition:bank')")
    op.drop_table("settlement_lines")
    op.drop_index("ix_settlement_items_run_id", table_name="settlement_items")
    op.drop_table("settlement_items")
    op.drop_index("ix_settlement_events_run_id", table_name="settlement_events")
    op.drop_table("settlement_events")
    op.drop_table("settlement_approvals")
    op.drop_index("ix_reconciliations_business_date", table_name="reconciliations")
    op.drop_table("reconciliations")
    op.drop_index(
        "ix_settlement_runs_business_date_live",
        table_name="settlement_runs",
        postgresql_where=sa.text("state <> 'rejected'"),
    )
    op.drop_table("settlement_runs")
    op.drop_table("users")
