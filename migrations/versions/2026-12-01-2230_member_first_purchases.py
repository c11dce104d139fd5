"""An accrual reads a member's purchases over its rule windows only, not over the member's whole
history.

`accrual_context` summed every purchase the member ever made, because one of its figures,
whether the member had bought at the partner before (the first-purchase bonus), needs all of
them. The link between the member and the partner now keeps when the member's earliest purchase
there occurred (`member_links.first_purchase_at`: the least `occurred_at` of its purchases, kept
by `record_purchase` with each purchase, filled from the purchases for the members who have
bought already), and the sums (the month's
spend, the day's points at the partner, the tier windows' qualifying points) read the purchases
from the earliest of those windows' starts on: a member's years of purchases cost an accrual
nothing beyond the tier window.

Revision ID: 0033_member_first_purchases
Revises: 0032_ledger_post_checks
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.earlier import load

revision: str = "0033_member_first_purchases"
down_revision: str | None = "0032_ledger_post_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REQUEST_PATH = "2026-11-30-1700_request_path.py"
PARTITIONS = "2026-12-01-1920_journal_partitions.py"

# What changes in the request path's two functions, as (their text before, after).
CONTEXT_CHANGES = (
    (
        "    v_replay bigint;\nBEGIN\n"
        "    PERFORM FROM member_links l"
        " WHERE l.partner_id = p_partner_id AND l.member_id = p_member_id;\n",
        "    v_replay bigint;\n    v_bought_here boolean;\nBEGIN\n"
        "    SELECT l.first_purchase_at IS NOT NULL INTO v_bought_here FROM member_links l\n"
        "     WHERE l.partner_id = p_partner_id AND l.member_id = p_member_id;\n",
    ),
    (
        "           coalesce(bool_or(p.partner_id = p_partner_id), false),\n",
        "           v_bought_here,\n",
    ),
    (
        "      FROM purchases p WHERE p.member_id = p_member_id;\n",
        "      FROM purchases p WHERE p.member_id = p_member_id\n"
        "       AND p.occurred_at >= least(p_month_start, p_day_start, p_then_from, p_now_from);\n",
    ),
)
RECORD_CHANGES = (
    (
        "    RETURNING id INTO v_purchase;\n",
        "    RETURNING id INTO v_purchase;\n"
        "    UPDATE member_links SET first_purchase_at = p_purchased_at\n"
        "     WHERE partner_id = p_partner_id AND member_id = p_member_id\n"
        "       AND (first_purchase_at IS NULL OR first_purchase_at > p_purchased_at);\n",
    ),
)


def _functions(*, reverse: bool) -> list[str]:
    """accrual_context and record_purchase as the request path's migration wrote them, with
    this migration's changes (or, `reverse`, as it wrote them)."""
    partitions = load(PARTITIONS)
    written = load(REQUEST_PATH).FUNCTIONS
    changed = []
    for name, changes in (
        ("accrual_context", CONTEXT_CHANGES),
        ("record_purchase", RECORD_CHANGES),
    ):
        text = partitions.function(written, name)
        if not reverse:
            for before, after in changes:
                assert text.count(before) == 1, (name, before)
                text = text.replace(before, after)
        changed.append(text)
    return changed


def upgrade() -> None:
    op.add_column("member_links", sa.Column("first_purchase_at", sa.DateTime(timezone=True)))
    op.execute(
        """
        UPDATE member_links l SET first_purchase_at = f.first_at
          FROM (SELECT partner_id, member_id, min(occurred_at) AS first_at
                  FROM purchases GROUP BY partner_id, member_id) f
         WHERE l.partner_id = f.partner_id AND l.member_id = f.member_id
        """
    )
    for text in _functions(reverse=False):
        op.execute(text)


def downgrade() -> None:
    for text in _functions(reverse=True):
        op.execute(text)
    op.drop_column("member_links", "first_purchase_at")
