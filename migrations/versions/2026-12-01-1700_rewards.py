"""The coalition's rewards catalogue: rewards supplied by partners, their effective-dated prices
in points, and the coupon codes a supplier uploads.

A reward's stock is `stock_left` (NULL: unlimited), which only an order or its supplier moves,
one statement at a time under a check that keeps it at or above zero; a coupon's stock is its
pool of codes not yet drawn. A price never changes: a new version supersedes it from its
`effective_from`.

Revision ID: 0022_rewards
Revises: 0021_webhook_events
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0022_rewards"
down_revision: str | None = "0021_webhook_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("supplier_id", sa.Text(), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("title_zh", sa.Text(), nullable=False),
        sa.Column("title_en", sa.Text(), nullable=False),
        sa.Column("description_zh", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("description_en", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("unit_value_fen", sa.BigInteger(), nullable=False),
        sa.Column("stock_left", sa.BigInteger()),
        sa.Column("per_member_daily_limit", sa.Integer()),
        sa.Column("per_member_limit", sa.Integer()),
        sa.Column("tiers", ARRAY(sa.Text())),
        sa.Column("channels", ARRAY(sa.Text())),
        sa.Column("cities", ARRAY(sa.Text())),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'active'")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('coupon', 'voucher', 'goods', 'membership', 'charity')",
            name=op.f("rewards_kind_known_check"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'withdrawn')", name=op.f("rewards_status_known_check")
        ),
        sa.CheckConstraint(
            "unit_value_fen >= 0", name=op.f("rewards_unit_value_fen_not_negative_check")
        ),
        sa.CheckConstraint("stock_left >= 0", name=op.f("rewards_stock_left_not_negative_check")),
        sa.CheckConstraint(
            "per_member_daily_limit > 0 AND per_member_limit > 0",
            name=op.f("rewards_limits_positive_check"),
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from",
            name=op.f("rewards_validity_ordered_check"),
        ),
    )
    op.create_index("ix_rewards_supplier_id", "rewards", ["supplier_id"])
    op.create_table(
        "reward_prices",
        sa.Column("reward_id", sa.Text(), sa.ForeignKey("rewards.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reward_id", "version", name=op.f("reward_prices_pkey")),
        sa.CheckConstraint("points > 0", name=op.f("reward_prices_points_positive_check")),
    )
    op.create_table(
        "reward_codes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("reward_id", sa.Text(), sa.ForeignKey("rewards.id"), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        # The order it was drawn for; none while it waits in the pool.
        sa.Column("order_id", sa.Text()),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("reward_id", "code", name=op.f("reward_codes_reward_id_code_key")),
    )
    op.create_index(
        "ix_reward_codes_pool",
        "reward_codes",
        ["reward_id", "id"],
        postgresql_where=sa.text("order_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("reward_codes")
    op.drop_table("reward_prices")
    op.drop_table("rewards")
