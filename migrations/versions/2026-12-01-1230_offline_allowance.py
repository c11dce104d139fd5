"""Offline redemptions within a store's allowance.

- `stores.offline_allowance`: the points a member may redeem at the store in a business day
  while its till is offline, even beyond the member's available points (0, the default: none).
- `offline_redemptions`: one row per redemption approved at a till while offline and reported
  later, with the time it was approved (its business day counts against the allowance), the
  points that became debt, and what the allowance left the member that day.
- `record_hold` takes `p_from_lots`, the points the member's lots give; an offline redemption
  within the allowance takes what the available points cover from the lots and the rest from
  the member's debt account.

Revision ID: 0018_offline_allowance
Revises: 0017_batches
Create Date: 2026-12-01 12:30:00
"""

from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from migrations.earlier import load

revision: str = "0018_offline_allowance"
down_revision: str | None = "0017_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _request_path() -> ModuleType:
    """The request-path migration, whose entry parameters record_hold keeps."""
    return load("2026-11-30-1700_request_path.py")


_OLD_SIGNATURE = """record_hold(text, text, text, bytea, timestamptz, jsonb, bigint, text[], text[],
                    bigint[], text, text, text, text, text, bigint, bigint, integer, timestamptz"""


# How record_hold takes the hold's points from the lots: all of them (before), or p_from_lots.
_CONSUME_ALL = "PERFORM lots_consume(p_member_id, p_points, v_entry, NULL);"
_CONSUME_FROM_LOTS = """IF p_from_lots > 0 THEN
        PERFORM lots_consume(p_member_id, p_from_lots, v_entry, NULL);
    END IF;"""


def _record_hold(parameter: str, consume: str) -> str:
    entry = _request_path()
    return f"""
-- A hold's writes: its entry, the points taken from the member's lots, the hold.
CREATE FUNCTION record_hold(
    {entry.ENTRY},
    p_hold_id text, p_partner_id text, p_member_id text, p_store_id text, p_partner_ref text,
    p_points bigint, p_value_fen bigint, p_rates_version integer,
    p_expires_at timestamptz{parameter}
) RETURNS SETOF holds LANGUAGE plpgsql AS $$
DECLARE
    v_entry bigint;
BEGIN
    SELECT l.entry_id INTO v_entry FROM {entry.POST_ENTRY} l;
    {consume}
    RETURN QUERY
    INSERT INTO holds
        (id, partner_id, member_id, store_id, partner_ref, amount, value_fen, rates_version,
         expires_at, hold_entry_id)
    VALUES (p_hold_id, p_partner_id, p_member_id, p_store_id, p_partner_ref, p_points,
            p_value_fen, p_rates_version, p_expires_at, v_entry)
    RETURNING *;
END
$$;
"""


def upgrade() -> None:
    op.add_column(
        "stores",
        sa.Column("offline_allowance", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "stores_offline_allowance_range_check", "stores", "offline_allowance >= 0"
    )
    op.create_table(
        "offline_redemptions",
        sa.Column("hold_id", sa.Text(), sa.ForeignKey("holds.id"), primary_key=True),
        sa.Column("member_id", sa.Text(), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("store_id", sa.Text(), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("allowance_left", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name="offline_redemptions_points_positive_check"),
        sa.CheckConstraint(
            "debt BETWEEN 0 AND points", name="offline_redemptions_debt_range_check"
        ),
        sa.CheckConstraint(
            "allowance_left >= 0", name="offline_redemptions_allowance_left_range_check"
        ),
    )
    op.create_index(
        "ix_offline_redemptions_member_id_store_id_occurred_at",
        "offline_redemptions",
        ["member_id", "store_id", "occurred_at"],
    )
    op.execute(f"DROP FUNCTION {_OLD_SIGNATURE});")
    op.execute(_record_hold(", p_from_lots bigint", _CONSUME_FROM_LOTS))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_OLD_SIGNATURE}, bigint);")
    op.execute(_record_hold("", _CONSUME_ALL))
    op.drop_index(
        "ix_offline_redemptions_member_id_store_id_occurred_at", table_name="offline_redemptions"
    )
    op.drop_table("offline_redemptions")
    op.drop_constraint("stores_offline_allowance_range_check", "stores", type_="check")
    op.drop_column("stores", "offline_allowance")
