"""Lots carry the instant they were recorded, so that the liability counts a lot from then: a
purchase reported late (its lot earned on an earlier day) counts from the day it arrives, and a
closed day's liability is the same however often it is computed.

- `point_lots.recorded_at`: stamped by the database (`clock_timestamp()`, as lot movements
  are) when the lot is written. Existing lots take their entry's `recorded_at`, or, for the lot
  of an accrual released after a risk review, the later instant its case was approved.

Revision ID: 0028_liability_lines
Revises: 0027_settlement_dates
Create Date: 2026-12-01 19:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028_liability_lines"
down_revision: str | None = "0027_settlement_dates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added empty, filled, then given its default: a volatile default on ADD COLUMN would
    # rewrite the table with one instant for every existing lot.
    op.execute(
        """
        ALTER TABLE point_lots ADD COLUMN recorded_at timestamptz;
        UPDATE point_lots l
        SET recorded_at = greatest(
            j.recorded_at,
            (SELECT max(c.decided_at) FROM fraud_cases c
             WHERE c.entry_id = l.entry_id AND c.state = 'approved')
        )
        FROM journal_entries j
        WHERE j.id = l.entry_id;
        ALTER TABLE point_lots
            ALTER COLUMN recorded_at SET DEFAULT clock_timestamp(),
            ALTER COLUMN recorded_at SET NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE point_lots DROP COLUMN recorded_at")
