"""Batch files: a store's end-of-day operations, uploaded at once and applied by a worker.

`batches` holds one row per upload with its progress counters; `batch_lines` one row per line,
pending until the worker applies it and stores its result (the answer or the problem the line
would have had as a single call) in the same transaction as its effect. A line's `member_key`
(a hash of its member's id, or of the member of the transaction it refunds or voids) puts all of
a member's lines in the same lane of the worker.

Revision ID: 0017_batches
Revises: 0016_scoped_keys
Create Date: 2026-12-01 12:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0017_batches"
down_revision: str | None = "0016_scoped_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("partner_id", sa.Text(), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), sa.ForeignKey("stores.id")),
        sa.Column("file_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default=sa.text("'received'")),
        sa.Column("applied", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("replayed", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failed", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "state IN ('received', 'processing', 'done')", name="batches_state_known_check"
        ),
        sa.CheckConstraint("lines BETWEEN 1 AND 10000", name="batches_lines_range_check"),
        sa.CheckConstraint(
            "applied + replayed + failed <= lines", name="batches_counts_within_lines_check"
        ),
    )
    op.create_index("ix_batches_partner_id", "batches", ["partner_id", "received_at"])
    op.create_index(
        "ix_batches_open",
        "batches",
        ["received_at"],
        postgresql_where=sa.text("state <> 'done'"),
    )
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.Text(), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("operation", sa.Text()),
        sa.Column("partner_txn_id", sa.Text()),
        sa.Column("member_id", sa.Text()),
        sa.Column("member_key", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("body", JSONB()),
        sa.Column("state", sa.Text(), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("status", sa.SmallInteger()),
        sa.Column("result", JSONB()),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("batch_id", "line_no"),
        sa.CheckConstraint(
            "state IN ('pending', 'applied', 'replayed', 'failed')",
            name="batch_lines_state_known_check",
        ),
        sa.CheckConstraint(
            "(state = 'pending') = (result IS NULL)",
            name="batch_lines_result_when_processed_check",
        ),
    )

    op.create_index(
        "ix_batch_lines_pending",
        "batch_lines",
        ["batch_id", "line_no"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_batch_lines_pending", table_name="batch_lines")
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_open", table_name="batches")
    op.drop_index("ix_batches_partner_id", table_name="batches")
    op.drop_table("batches")
