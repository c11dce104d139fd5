"""Reward orders: a member's order of a catalogue reward through a partner's front end.

An order reserves the reward's stock (and its coupon codes) and the member's points in a hold;
confirming it captures the points to the supplier, who is owed the unit value; cancelling a
reserved order gives both back. A hold taken for an order (`holds.purpose`) is the order's to
close: the holds API refuses to capture or void it.

Revision ID: 0023_reward_orders
Revises: 0022_rewards
Create Date: 2026-12-01 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_reward_orders"
down_revision: str | None = "0022_rewards"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


HOLD_FOR_UPDATE = """
CREATE FUNCTION hold_for_update(p_partner_id text, p_hold_id text)
RETURNS TABLE (
    id text, partner_id text, member_id text, store_id text, partner_ref text, amount bigint,
    captured bigint, refunded bigint, state text, value_fen bigint, rates_version integer,
    expires_at timestamptz, hold_entry_id bigint, close_entry_id bigint,
    created_at timestamptz, closed_at timestamptz, {purpose}open_case_id text
) LANGUAGE plpgsql AS $$
DECLARE
    v_member text;
BEGIN
    SELECT h.member_id INTO v_member FROM holds h
     WHERE h.id = p_hold_id AND (p_partner_id IS NULL OR h.partner_id = p_partner_id);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM FROM members m WHERE m.id = v_member FOR NO KEY UPDATE;
    PERFORM FROM holds h WHERE h.id = p_hold_id FOR NO KEY UPDATE;
    RETURN QUERY
    SELECT h.id, h.partner_id, h.member_id, h.store_id, h.partner_ref, h.amount, h.captured,
           h.refunded, h.state, h.value_fen, h.rates_version, h.expires_at, h.hold_entry_id,
           h.close_entry_id, h.created_at, h.closed_at, {purpose_value}
           (SELECT c.id FROM fraud_cases c WHERE c.hold_id = h.id AND c.state = 'open')
      FROM holds h WHERE h.id = p_hold_id;
END
$$;
"""
"""The member's lock, then the hold's, and the hold as it is: now with its purpose."""


def upgrade() -> None:
    op.add_column("holds", sa.Column("purpose", sa.Text()))
    op.execute("DROP FUNCTION hold_for_update(text, text)")
    op.execute(HOLD_FOR_UPDATE.format(purpose="purpose text, ", purpose_value="h.purpose,"))
    op.create_check_constraint(
        op.f("holds_purpose_known_check"), "holds", "purpose IN ('reward_order')"
    )
    op.create_table(
        "reward_orders",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("reward_id", sa.Text(), sa.ForeignKey("rewards.id"), nullable=False),
        sa.Column("partner_id", sa.Text(), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("member_id", sa.Text(), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("store_id", sa.Text(), sa.ForeignKey("stores.id")),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("price_version", sa.Integer(), nullable=False),
        sa.Column("unit_value_fen", sa.BigInteger(), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.Text(), sa.ForeignKey("holds.id"), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("fulfilment", sa.Text()),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), sa.ForeignKey("journal_entries.id")),
        sa.Column("return_entry_id", sa.BigInteger(), sa.ForeignKey("journal_entries.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint(
            "partner_id",
            "idempotency_key",
            name=op.f("reward_orders_partner_id_idempotency_key_key"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("reward_orders_quantity_positive_check")),
        sa.CheckConstraint(
            "state IN ('reserved', 'confirmed', 'cancelled', 'expired', 'returned')",
            name=op.f("reward_orders_state_known_check"),
        ),
        sa.CheckConstraint(
            "fulfilment IN ('placed', 'shipped', 'ready', 'delivered', 'collected', 'returned')",
            name=op.f("reward_orders_fulfilment_known_check"),
        ),
    )
    op.create_index(
        "ix_reward_orders_reward_id_member_id", "reward_orders", ["reward_id", "member_id"]
    )
    op.create_index(
        "ix_reward_orders_reserved",
        "reward_orders",
        ["created_at"],
        postgresql_where=sa.text("state = 'reserved'"),
    )
    op.create_foreign_key(
        op.f("reward_codes_order_id_fkey"), "reward_codes", "reward_orders", ["order_id"], ["id"]
    )


def downgrade() -> None:
    op.drop_constraint(op.f("reward_codes_order_id_fkey"), "reward_codes")
    op.drop_table("reward_orders")
    op.execute("DROP FUNCTION hold_for_update(text, text)")
    op.execute(HOLD_FOR_UPDATE.format(purpose="", purpose_value=""))
    op.drop_column("holds", "purpose")
