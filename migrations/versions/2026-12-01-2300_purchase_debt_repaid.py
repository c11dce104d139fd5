"""A purchase keeps how many of its points repaid the member's debt (`purchases.debt_repaid`), so
that a transaction reported again answers as it did the first time even once the month of its
entry has left the database: the answer read that figure from the entry's postings.

`record_purchase` writes it from the entry it posts (the legs to the member's debt account);
the migration fills it from the postings for the purchases recorded so far.

Revision ID: 0034_purchase_debt_repaid
Revises: 0033_member_first_purchases
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.earlier import load

revision: str = "0034_purchase_debt_repaid"
down_revision: str | None = "0033_member_first_purchases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_PURCHASES = "2026-12-01-2230_member_first_purchases.py"

# The purchase's row as record_purchase inserts it: its columns and values, before and after.
INSERTED = (
    (
        "breakdown, issue_value_fen)\n",
        "breakdown, issue_value_fen,\n         debt_repaid)\n",
    ),
    (
        "            p_issue_value_fen)\n",
        "            p_issue_value_fen,\n"
        "            coalesce((SELECT sum(x.amount)\n"
        "                        FROM unnest(p_addresses, p_amounts) AS x(address, amount)\n"
        "                       WHERE x.address = 'member:' || p_member_id || ':' || 'debt'),\n"
        "                     0))\n",
    ),
)


def _record_purchase(*, with_debt_repaid: bool) -> str:
    """record_purchase as the previous migration left it, with this one's change or without."""
    written: list[str] = load(FIRST_PURCHASES)._functions(reverse=False)
    (text,) = (function for function in written if "FUNCTION record_purchase(" in function)
    if with_debt_repaid:
        for before, after in INSERTED:
            assert text.count(before) == 1, before
            text = text.replace(before, after)
    return text


def upgrade() -> None:
    op.add_column(
        "purchases",
        sa.Column("debt_repaid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        """
        UPDATE purchases p SET debt_repaid = d.repaid
          FROM (SELECT u.id, sum(po.amount) AS repaid
                  FROM purchases u
                  JOIN accounts a ON a.owner_type = 'member' AND a.owner_id = u.member_id
                                 AND a.kind = 'debt'
                  JOIN postings po ON po.entry_id = u.entry_id AND po.account_id = a.id
                 GROUP BY u.id) d
         WHERE d.id = p.id AND d.repaid <> 0
        """
    )
    # Named by the metadata's convention: purchases_debt_repaid_range_check.
    op.create_check_constraint("debt_repaid_range", "purchases", "debt_repaid BETWEEN 0 AND points")
    op.execute(_record_purchase(with_debt_repaid=True))


def downgrade() -> None:
    op.execute(_record_purchase(with_debt_repaid=False))
    op.drop_column("purchases", "debt_repaid")  # and its check with it
