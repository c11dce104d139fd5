"""A settlement run keeps its late arrivals as its report lists them
(`settlement_runs.late_arrivals`), written when it is computed: the report read them from the
journal (the entries' kinds, transactions, points and dates), which an archived month has left.
Runs computed before keep NULL and are read from the journal as before.

Revision ID: 0036_settlement_late_arrivals
Revises: 0035_settlement_clearing
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0036_settlement_late_arrivals"
down_revision: str | None = "0035_settlement_clearing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("settlement_runs", sa.Column("late_arrivals", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("settlement_runs", "late_arrivals")
