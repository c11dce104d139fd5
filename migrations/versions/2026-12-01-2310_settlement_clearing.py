"""A settlement run keeps the coalition's leg of the entry it posted
(`settlement_runs.clearing_fen`), read when it was posted, so that its report (the coalition's
revenue, the zero-sum check) stays right once the run's month has been archived: the report read
that leg from the entry.

Revision ID: 0035_settlement_clearing
Revises: 0034_purchase_debt_repaid
Create Date: 2026-12-01 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_settlement_clearing"
down_revision: str | None = "0034_purchase_debt_repaid"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "settlement_runs",
        sa.Column("clearing_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    # The address is written in two pieces: a colon before a word reads as a bound parameter.
    op.execute(
        """
        UPDATE settlement_runs r SET clearing_fen = c.amount
          FROM (SELECT u.id, sum(p.amount) AS amount
                  FROM settlement_runs u
                  JOIN postings p ON p.entry_id = u.entry_id
                  JOIN accounts a ON a.id = p.account_id AND a.address = 'coalition:' || 'clearing'
                 GROUP BY u.id) c
         WHERE c.id = r.id
        """
    )


def downgrade() -> None:
    op.drop_column("settlement_runs", "clearing_fen")
