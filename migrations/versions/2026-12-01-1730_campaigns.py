"""Campaigns of engagement points: a partner (or the coalition) awards points for a sign-in, a
survey, a review or a campaign bonus from a campaign's budget.

- `campaigns`: the budget in points and what is left of it (`remaining_points`, never below
  zero: each award takes its points by one checked UPDATE), the caps per member in all and per
  business day, the period it runs.
- `campaign_awards`: each award, its reason and its entry; the partner's reference is unique per
  campaign and partner, so the same reference again answers the first award.
- The trigger that queues settleable entries is recreated with `engagement` in its test: a
  partner-funded award is issuance, settled like an accrual. A coalition-funded one names no
  partner and is never queued.

Revision ID: 0025_campaigns
Revises: 0024_catalogue_settlement
Create Date: 2026-12-01 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_campaigns"
down_revision: str | None = "0024_catalogue_settlement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The settleable kinds before this revision and after it (settlement.categories); a test checks
# that the trigger and the code agree.
KINDS_BEFORE = (
    "'accrual', 'referral_bonus', 'refund', 'fraud_reversal', 'capture',"
    " 'redemption_refund', 'exchange_in', 'exchange_out', 'reward_order', 'reward_order_return'"
)
KINDS = f"{KINDS_BEFORE}, 'engagement'"


def _trigger(kinds: str) -> str:
    return f"""
        DROP TRIGGER journal_entries_settleable ON journal_entries;
        CREATE TRIGGER journal_entries_settleable AFTER INSERT ON journal_entries
            FOR EACH ROW WHEN (NEW.kind IN ({kinds}) AND NEW.metadata ? 'partner_id'
                               AND NEW.metadata ? 'value_fen')
            EXECUTE FUNCTION settlement_enqueue();
        """


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("funder_partner_id", sa.Text(), sa.ForeignKey("partners.id")),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("budget_points", sa.BigInteger(), nullable=False),
        sa.Column("remaining_points", sa.BigInteger(), nullable=False),
        sa.Column("per_member_cap", sa.BigInteger(), nullable=False),
        sa.Column("daily_cap", sa.BigInteger(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("budget_points > 0", name=op.f("campaigns_budget_positive_check")),
        sa.CheckConstraint(
            "remaining_points >= 0 AND remaining_points <= budget_points",
            name=op.f("campaigns_remaining_in_budget_check"),
        ),
        sa.CheckConstraint(
            "per_member_cap > 0 AND daily_cap > 0", name=op.f("campaigns_caps_positive_check")
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("campaigns_period_ordered_check")),
    )
    op.create_index("ix_campaigns_funder_partner_id", "campaigns", ["funder_partner_id"])
    op.create_table(
        "campaign_awards",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("campaign_id", sa.Text(), sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("partner_id", sa.Text(), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("member_id", sa.Text(), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), sa.ForeignKey("journal_entries.id"), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "campaign_id",
            "partner_id",
            "reference",
            name=op.f("campaign_awards_campaign_id_partner_id_reference_key"),
        ),
        sa.CheckConstraint("points > 0", name=op.f("campaign_awards_points_positive_check")),
        sa.CheckConstraint(
            "reason IN ('sign_in', 'survey', 'review', 'campaign_bonus')",
            name=op.f("campaign_awards_reason_known_check"),
        ),
    )
    op.create_index(
        "ix_campaign_awards_campaign_id_member_id",
        "campaign_awards",
        ["campaign_id", "member_id", "business_date"],
    )
    op.execute(_trigger(KINDS))


def downgrade() -> None:
    # Awards left unsettled would be taken by a run that no longer values them.
    op.execute(
        """
        DELETE FROM unsettled_entries AS u
         USING journal_entries AS e
         WHERE e.id = u.entry_id AND e.kind = 'engagement'
        """
    )
    op.execute(_trigger(KINDS_BEFORE))
    op.drop_table("campaign_awards")
    op.drop_table("campaigns")
