"""Campaign tables: budgets of engagement points and the awards drawn from them."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Table,
    Text,
    UniqueConstraint,
)

from clearinghouse.schema import metadata

AWARD_REASONS = ("sign_in", "survey", "review", "campaign_bonus")

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Text, primary_key=True),
    # NULL: the coalition funds it.
    Column("funder_partner_id", Text, ForeignKey("partners.id")),
    Column("name", Text, nullable=False),
    Column("budget_points", BigInteger, nullable=False),
    # What awards may still take: one checked UPDATE each, so the budget is never overspent.
    Column("remaining_points", BigInteger, nullable=False),
    # Points a member may get from it in all, and in one business day.
    Column("per_member_cap", BigInteger, nullable=False),
    Column("daily_cap", BigInteger, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("budget_points > 0", name="budget_positive"),
    CheckConstraint(
        "remaining_points >= 0 AND remaining_points <= budget_points", name="remaining_in_budget"
    ),
    CheckConstraint("per_member_cap > 0 AND daily_cap > 0", name="caps_positive"),
    CheckConstraint("ends_at > starts_at", name="period_ordered"),
    Index("ix_campaigns_funder_partner_id", "funder_partner_id"),
)

campaign_awards = Table(
    "campaign_awards",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("campaign_id", Text, ForeignKey("campaigns.id"), nullable=False),
    # The partner that asked for the award.
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    # The partner's own id of the award: the same one again answers the first award.
    Column("reference", Text, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    # The coalition's business day of the award (the daily cap's and the sign-in's day).
    Column("business_date", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("campaign_id", "partner_id", "reference"),
    CheckConstraint("points > 0", name="points_positive"),
    CheckConstraint(
        "reason IN ('sign_in', 'survey', 'review', 'campaign_bonus')", name="reason_known"
    ),
    Index("ix_campaign_awards_campaign_id_member_id", "campaign_id", "member_id", "business_date"),
)
