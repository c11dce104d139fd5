"""Partners' legal names and bank details; a repeated line of a reconciliation file is a break.

- `partners.legal_name`: the name a settlement report and advice print (filled from `name` for
  the partners there are); `partners.bank_name`, `partners.bank_account`: where the partner's
  settlements are paid, printed on its settlement advice (empty until set).
- `reconciliation_breaks.break` takes `duplicate`: a line of the partner's file whose type and
  txn_id an earlier line of the file has already (the file is kept and reconciled, not refused).

Revision ID: 0029_partner_details
Revises: 0028_liability_lines
Create Date: 2026-12-01 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_partner_details"
down_revision: str | None = "0028_liability_lines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BREAKS = "'missing_ours', 'missing_theirs', 'amount_differs', 'points_differ'"
_BREAK_KNOWN = "reconciliation_breaks_break_known_check"


def _break_known(kinds: str) -> None:
    op.drop_constraint(op.f(_BREAK_KNOWN), "reconciliation_breaks", type_="check")
    op.create_check_constraint(op.f(_BREAK_KNOWN), "reconciliation_breaks", f"break IN ({kinds})")


def upgrade() -> None:
    op.add_column("partners", sa.Column("legal_name", sa.Text()))
    op.execute("UPDATE partners SET legal_name = name")
    op.alter_column("partners", "legal_name", nullable=False)
    op.add_column("partners", sa.Column("bank_name", sa.Text()))
    op.add_column("partners", sa.Column("bank_account", sa.Text()))
    _break_known(f"{_BREAKS}, 'duplicate'")


def downgrade() -> None:
    op.execute("DELETE FROM reconciliation_breaks WHERE break = 'duplicate'")
    _break_known(_BREAKS)
    op.drop_column("partners", "bank_account")
    op.drop_column("partners", "bank_name")
    op.drop_column("partners", "legal_name")
