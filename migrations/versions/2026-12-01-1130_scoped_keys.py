"""Partner keys scoped to one store, optionally one terminal, and keys that expire.

A key with a store acts for that store only; its terminal, when given, names the till that
holds it. A key past its `expires_at` is refused as a retired one is.

Revision ID: 0016_scoped_keys
Revises: 0015_seal_queue
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_scoped_keys"
down_revision: str | None = "0015_seal_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("partner_keys", sa.Column("store_id", sa.Text(), nullable=True))
    op.add_column("partner_keys", sa.Column("terminal_id", sa.Text(), nullable=True))
    op.add_column(
        "partner_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_foreign_key(
        "partner_keys_store_id_fkey", "partner_keys", "stores", ["store_id"], ["id"]
    )
    op.create_check_constraint(
        "partner_keys_terminal_in_store_check",
        "partner_keys",
        "terminal_id IS NULL OR store_id IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_constraint("partner_keys_terminal_in_store_check", "partner_keys", type_="check")
    op.drop_constraint("partner_keys_store_id_fkey", "partner_keys", type_="foreignkey")
    op.drop_column("partner_keys", "expires_at")
    op.drop_column("partner_keys", "terminal_id")
    op.drop_column("partner_keys", "store_id")
