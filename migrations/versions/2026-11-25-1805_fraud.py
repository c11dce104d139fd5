"""Fraud and risk control: versioned thresholds (coalition defaults, overridden per partner),
cases with every decision's rules, versions and inputs, and the operators' actions on them.
Version 1 of the coalition's thresholds is written out in full, so that it never changes with
the code.

Revision ID: 0006_fraud
Revises: 0005_audit
Create Date: 2026-11-25 18:05:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_fraud"
down_revision: str | None = "0005_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


FIRST_THRESHOLDS = {
    "redemptions_per_hour": 5,
    "points_per_day": 20000,
    "velocity_action": "review",
    "max_accrual_fen_online": 5000000,
    "max_accrual_fen_offline": 1000000,
    "store_daily_accrual_fen_online": 50000000,
    "store_daily_accrual_fen_offline": 10000000,
    "amount_cap_action": "block",
    "burn_after_earn_minutes": 10,
    "burn_after_earn_min_points": 1000,
    "burn_after_earn_action": "review",
    "refund_after_redeem_action": "review",
    "store_outlier_mads": 10.0,
    "store_outlier_history": 20,
    "store_outlier_action": "review",
    "new_member_hours": 24,
    "new_member_redeem_points": 5000,
    "new_member_action": "review",
    "max_speed_kmh": 800.0,
    "impossible_travel_action": "review",
    "exchange_round_trips_per_day": 3,
    "exchange_laundering_action": "review",
}


def upgrade() -> None:
    op.create_table(
        "fraud_thresholds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fraud_thresholds_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("fraud_thresholds_pkey")),
        sa.UniqueConstraint(
            "partner_id", "version", name=op.f("fraud_thresholds_partner_id_version_key")
        ),
    )
    op.create_table(
        "fraud_cases",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=True),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("verdicts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attempt", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("hold_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "decision IN ('review', 'block')", name=op.f("fraud_cases_decision_known_check")
        ),
        sa.CheckConstraint(
            "state IN ('open', 'approved', 'rejected', 'blocked')",
            name=op.f("fraud_cases_state_known_check"),
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.id"], name=op.f("fraud_cases_decided_by_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fraud_cases_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name=op.f("fraud_cases_hold_id_fkey")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fraud_cases_member_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fraud_cases_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("fraud_cases_pkey")),
    )
    op.create_index("ix_fraud_cases_partner_id", "fraud_cases", ["partner_id"], unique=False)
    op.create_index(
        "ix_fraud_cases_state_created_at", "fraud_cases", ["state", "created_at"], unique=False
    )
    op.create_table(
        "fraud_actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("case_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["fraud_cases.id"], name=op.f("fraud_actions_case_id_fkey")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fraud_actions_user_id_fkey")),
        sa.PrimaryKeyConstraint("id", name=op.f("fraud_actions_pkey")),
    )
    op.create_index("ix_fraud_actions_case_id", "fraud_actions", ["case_id"], unique=False)

    op.create_index("ix_purchases_store_id_occurred_at", "purchases", ["store_id", "occurred_at"])
    op.create_index("ix_purchases_store_id_id", "purchases", ["store_id", "id"])
    op.execute(
        sa.text(
            "INSERT INTO fraud_thresholds (partner_id, version, effective_from, settings) "
            "VALUES (NULL, 1, '2000-01-01T00:00:00Z', CAST(:settings AS jsonb))"
        ).bindparams(settings=json.dumps(FIRST_THRESHOLDS))
    )
    op.execute(
        """
        CREATE TRIGGER fraud_thresholds_append_only BEFORE UPDATE OR DELETE ON fraud_thresholds
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER fraud_actions_append_only BEFORE UPDATE OR DELETE ON fraud_actions
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        """
    )


def downgrade() -> None:
    op.drop_index("ix_purchases_store_id_id", table_name="purchases")
    op.drop_index("ix_purchases_store_id_occurred_at", table_name="purchases")
    op.drop_index("ix_fraud_actions_case_id", table_name="fraud_actions")
    op.drop_table("fraud_actions")
    op.drop_index("ix_fraud_cases_state_created_at", table_name="fraud_cases")
    op.drop_index("ix_fraud_cases_partner_id", table_name="fraud_cases")
    op.drop_table("fraud_cases")
    op.drop_table("fraud_thresholds")
