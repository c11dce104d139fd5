"""A member's purchases read from their index alone: the index by member and time carries the
columns the member's balance (qualifying points over the tier window) and an accrual's context
(the month's spend, the day's points at the partner, qualifying points then and now) add up, so
a member with years of purchases costs a read of the index, not a heap page per purchase
(purchases' rows are wide: their `breakdown`).

Revision ID: 0031_member_purchases_index
Revises: 0030_journal_partitions
Create Date: 2026-12-01 20:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031_member_purchases_index"
down_revision: str | None = "0030_journal_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INCLUDED = ["points", "refunded_points", "amount_fen", "refunded_fen", "partner_id"]


def upgrade() -> None:
    op.drop_index("ix_purchases_member_id_occurred_at", table_name="purchases")
    op.create_index(
        "ix_purchases_member_id_occurred_at",
        "purchases",
        ["member_id", "occurred_at"],
        postgresql_include=INCLUDED,
    )


def downgrade() -> None:
    op.drop_index("ix_purchases_member_id_occurred_at", table_name="purchases")
    op.create_index("ix_purchases_member_id_occurred_at", "purchases", ["member_id", "occurred_at"])
