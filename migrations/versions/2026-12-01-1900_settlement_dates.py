"""A rejected date's entries wait for that date: `unsettled_entries.held_for`, the date of the
rejected run that gave an entry back, which only that date's next attempt takes (a later date's
run used to take them, by their recorded instant). It replaces `freed`: an entry given back by
a rejected run is one whose issue value that run freed already. Filled here for the entries
waiting now, from the last rejected run that covered each.

Revision ID: 0027_settlement_dates
Revises: 0026_webhook_claims
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027_settlement_dates"
down_revision: str | None = "0026_webhook_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE unsettled_entries ADD COLUMN held_for date;
        UPDATE unsettled_entries AS u
           SET held_for = (
                SELECT r.business_date
                  FROM settlement_items AS i
                  JOIN settlement_runs AS r ON r.id = i.run_id
                 WHERE i.entry_id = u.entry_id AND r.state = 'rejected'
                 ORDER BY r.id DESC
                 LIMIT 1
               )
         WHERE u.freed;
        ALTER TABLE unsettled_entries DROP COLUMN freed;
        CREATE INDEX ix_unsettled_entries_held_for ON unsettled_entries (held_for)
            WHERE held_for IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE unsettled_entries ADD COLUMN freed boolean NOT NULL DEFAULT false;
        UPDATE unsettled_entries SET freed = true WHERE held_for IS NOT NULL;
        ALTER TABLE unsettled_entries DROP COLUMN held_for;
        """
    )
