"""The points lifecycle: versioned rule sets, purchases and refunds, lots and their movements,
redemption holds, tier changes and referrals.

Rule sets and lot movements are append-only. Version 1 of the rules is the seeds' defaults,
effective from the start, written out here in full so that it never changes with the code.

Revision ID: 0003_points
Revises: 0002_partners
Create Date: 2026-11-25 17:00:00
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_points"
down_revision: str | None = "0002_partners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


FIRST_RULES_START = datetime(2000, 1, 1, tzinfo=UTC)
FIRST_EARNING_RULES = {
    "version": 1,
    "effective_from": "2000-01-01T00:00:00Z",
    "monthly_brackets": [
        {"min_month_spend_fen": 10000, "points_per_yuan": "1"},
        {"min_month_spend_fen": 30000, "points_per_yuan": "1.5"},
        {"min_month_spend_fen": 50000, "points_per_yuan": "2"},
    ],
    "tiers": [
        {"name": "normal", "min_qualifying_points": 0, "multiplier": "1"},
        {"name": "silver", "min_qualifying_points": 5000, "multiplier": "1.25"},
        {"name": "gold", "min_qualifying_points": 20000, "multiplier": "1.5"},
        {"name": "diamond", "min_qualifying_points": 50000, "multiplier": "2"},
    ],
    "promotions": [],
    "birthday_multiplier": "2",
    "first_purchase_bonus": 500,
    "first_purchase_bonus_by_partner": {},
    "multiplier_stacking": "multiply",
    "per_transaction_cap": None,
    "per_day_cap": None,
    "caps_by_partner": {},
}
FIRST_POLICY = {
    "expiry_months": 24,
    "hold_minutes": 15,
    "min_redeem_points": 100,
    "max_backdate_days": 30,
    "tier_window_days": 365,
    "referral_bonus_points": 500,
    "referral_funder": "coalition",
    "exchange": {},
    "default_exchange": {"fee_percent": "0", "min_points": 100, "max_points": 1000000},
}

APPEND_ONLY = """
CREATE TRIGGER rule_sets_append_only BEFORE UPDATE OR DELETE ON rule_sets
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER rule_sets_no_truncate BEFORE TRUNCATE ON rule_sets
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER lot_movements_append_only BEFORE UPDATE OR DELETE ON lot_movements
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER lot_movements_no_truncate BEFORE TRUNCATE ON lot_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
"""


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("earning", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("rule_sets_pkey")),
        sa.UniqueConstraint("effective_from", name=op.f("rule_sets_effective_from_key")),
    )
    op.create_table(
        "point_lots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("issuer_partner_id", sa.Text(), nullable=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("point_lots_amount_positive_check")),
        sa.CheckConstraint(
            "expires_at > earned_at", name=op.f("point_lots_expiry_after_earning_check")
        ),
        sa.CheckConstraint(
            "remaining BETWEEN 0 AND amount", name=op.f("point_lots_remaining_range_check")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("point_lots_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["issuer_partner_id"], ["partners.id"], name=op.f("point_lots_issuer_partner_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("point_lots_member_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("point_lots_pkey")),
    )
    op.create_index(
        "ix_point_lots_expires_at_open",
        "point_lots",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_point_lots_member_id_expires_at",
        "point_lots",
        ["member_id", "expires_at", "id"],
        unique=False,
    )
    op.create_table(
        "referrals",
        sa.Column("invitee_member_id", sa.Text(), nullable=False),
        sa.Column("inviter_member_id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("bonus_entry_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "invitee_member_id <> inviter_member_id", name=op.f("referrals_not_self_check")
        ),
        sa.ForeignKeyConstraint(
            ["bonus_entry_id"], ["journal_entries.id"], name=op.f("referrals_bonus_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["invitee_member_id"], ["members.id"], name=op.f("referrals_invitee_member_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["inviter_member_id"], ["members.id"], name=op.f("referrals_inviter_member_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("referrals_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("invitee_member_id", name=op.f("referrals_pkey")),
    )
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("from_tier", sa.Text(), nullable=False),
        sa.Column("to_tier", sa.Text(), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger(), nullable=False),
        sa.Column("rules_version", sa.Integer(), nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("tier_changes_member_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("tier_changes_pkey")),
    )
    op.create_index(
        "ix_tier_changes_member_id_changed_at",
        "tier_changes",
        ["member_id", "changed_at"],
        unique=False,
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=True),
        sa.Column("partner_ref", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refunded", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'held'"), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("rates_version", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("close_entry_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(state = 'held') = (closed_at IS NULL)", name=op.f("holds_closed_when_final_check")
        ),
        sa.CheckConstraint(
            "state IN ('held', 'captured', 'voided', 'expired')",
            name=op.f("holds_state_known_check"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("holds_amount_positive_check")),
        sa.CheckConstraint(
            "captured BETWEEN 0 AND amount", name=op.f("holds_captured_range_check")
        ),
        sa.CheckConstraint(
            "refunded BETWEEN 0 AND captured", name=op.f("holds_refunded_range_check")
        ),
        sa.ForeignKeyConstraint(
            ["close_entry_id"], ["journal_entries.id"], name=op.f("holds_close_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["hold_entry_id"], ["journal_entries.id"], name=op.f("holds_hold_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("holds_member_id_fkey")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("holds_partner_id_fkey")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("holds_store_id_fkey")),
        sa.PrimaryKeyConstraint("id", name=op.f("holds_pkey")),
    )
    op.create_index(
        "ix_holds_expires_at_held",
        "holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'held'"),
    )
    op.create_index("ix_holds_member_id", "holds", ["member_id"], unique=False)
    op.create_table(
        "lot_movements",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("lot_movements_amount_nonzero_check")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("lot_movements_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["point_lots.id"], name=op.f("lot_movements_lot_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("lot_movements_pkey")),
    )
    op.create_index("ix_lot_movements_entry_id", "lot_movements", ["entry_id"], unique=False)
    op.create_index("ix_lot_movements_lot_id", "lot_movements", ["lot_id"], unique=False)
    op.create_table(
        "purchases",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("partner_txn_id", sa.Text(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("rules_version", sa.Integer(), nullable=False),
        sa.Column("rates_version", sa.Integer(), nullable=False),
        sa.Column("breakdown", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("issue_value_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refunded_points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "refunded_value_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(points = 0) = (entry_id IS NULL)", name=op.f("purchases_entry_when_points_check")
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("purchases_amount_positive_check")),
        sa.CheckConstraint("points >= 0", name=op.f("purchases_points_range_check")),
        sa.CheckConstraint(
            "refunded_fen BETWEEN 0 AND amount_fen",
            name=op.f("purchases_refund_within_amount_check"),
        ),
        sa.CheckConstraint(
            "refunded_points BETWEEN 0 AND points",
            name=op.f("purchases_refund_within_points_check"),
        ),
        sa.CheckConstraint(
            "refunded_value_fen BETWEEN 0 AND issue_value_fen",
            name=op.f("purchases_refund_within_value_check"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("purchases_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("purchases_member_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("purchases_partner_id_fkey")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("purchases_store_id_fkey")),
        sa.PrimaryKeyConstraint("id", name=op.f("purchases_pkey")),
        sa.UniqueConstraint(
            "partner_id", "partner_txn_id", name=op.f("purchases_partner_id_partner_txn_id_key")
        ),
    )
    op.create_index(
        "ix_purchases_member_id_occurred_at",
        "purchases",
        ["member_id", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("purchase_id", sa.BigInteger(), nullable=False),
        sa.Column("partner_refund_id", sa.Text(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("from_available", sa.BigInteger(), nullable=False),
        sa.Column("to_debt", sa.BigInteger(), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(points = 0) = (entry_id IS NULL)", name=op.f("refunds_entry_when_points_check")
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("refunds_amount_positive_check")),
        sa.CheckConstraint(
            "points = from_available + to_debt", name=op.f("refunds_points_split_check")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("refunds_entry_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["purchase_id"], ["purchases.id"], name=op.f("refunds_purchase_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("refunds_pkey")),
        sa.UniqueConstraint(
            "purchase_id",
            "partner_refund_id",
            name=op.f("refunds_purchase_id_partner_refund_id_key"),
        ),
    )
    op.add_column("partners", sa.Column("programme_asset", sa.Text(), nullable=True))
    op.create_foreign_key(
        op.f("partners_programme_asset_fkey"), "partners", "assets", ["programme_asset"], ["code"]
    )
    op.create_unique_constraint(
        op.f("partners_programme_asset_key"), "partners", ["programme_asset"]
    )
    op.create_check_constraint(
        op.f("partners_programme_asset_present_check"),
        "partners",
        "(kind = 'programme') = (programme_asset IS NOT NULL)",
    )
    op.add_column("members", sa.Column("birth_month", sa.SmallInteger(), nullable=True))
    op.create_check_constraint(
        op.f("members_birth_month_range_check"), "members", "birth_month BETWEEN 1 AND 12"
    )
    op.execute(APPEND_ONLY)
    op.execute(
        sa.text(
            "INSERT INTO rule_sets (version, effective_from, earning, policy) "
            "VALUES (1, :start, CAST(:earning AS jsonb), CAST(:policy AS jsonb))"
        ).bindparams(
            start=FIRST_RULES_START,
            earning=json.dumps(FIRST_EARNING_RULES),
            policy=json.dumps(FIRST_POLICY),
        )
    )
    op.execute(
        """
        INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative, shards)
        VALUES ('coalition:bonus', 'PTS', 'coalition', NULL, 'bonus', false, 16),
               ('coalition:fees', 'PTS', 'coalition', NULL, 'fees', false, 16),
               ('coalition:credit_lines', 'CNY', 'coalition', NULL, 'credit_lines', false, 16);
        """
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM account_balances WHERE account_id IN (SELECT id FROM accounts WHERE address "
        "IN ('coalition:bonus', 'coalition:fees', 'coalition:credit_lines'))"
    )
    op.execute(
        "DELETE FROM accounts WHERE address IN "
        "('coalition:bonus', 'coalition:fees', 'coalition:credit_lines')"
    )
    op.drop_column("members", "birth_month")
    op.drop_column("partners", "programme_asset")
    op.drop_table("refunds")
    op.drop_index("ix_purchases_member_id_occurred_at", table_name="purchases")
    op.drop_table("purchases")
    op.drop_index("ix_lot_movements_lot_id", table_name="lot_movements")
    op.drop_index("ix_lot_movements_entry_id", table_name="lot_movements")
    op.drop_table("lot_movements")
    op.drop_index("ix_holds_member_id", table_name="holds")
    op.drop_index(
        "ix_holds_expires_at_held", table_name="holds", postgresql_where=sa.text("state = 'held'")
    )
    op.drop_table("holds")
    op.drop_index("ix_tier_changes_member_id_changed_at", table_name="tier_changes")
    op.drop_table("tier_changes")
    op.drop_table("referrals")
    op.drop_index("ix_point_lots_member_id_expires_at", table_name="point_lots")
    op.drop_index(
        "ix_point_lots_expires_at_open",
        table_name="point_lots",
        postgresql_where=sa.text("remaining > 0"),
    )
    op.drop_table("point_lots")
    op.drop_table("rule_sets")
