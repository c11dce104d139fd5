"""Members have one coalition id; each partner links its own customer reference to it."""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from clearinghouse.schema import metadata

members = Table(
    "members",
    metadata,
    Column("id", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("birth_month", SmallInteger),
    CheckConstraint("id ~ '^M[0-9A-Z]{12}$'", name="id_format"),
    CheckConstraint("birth_month BETWEEN 1 AND 12", name="birth_month_range"),
)

member_links = Table(
    "member_links",
    metadata,
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("customer_ref", Text, nullable=False),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # When the member's earliest purchase at the partner occurred (the least occurred_at of its
    # purchases, kept by record_purchase): an accrual's first-purchase bonus reads it rather
    # than the member's history.
    Column("first_purchase_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("partner_id", "customer_ref"),
    UniqueConstraint("partner_id", "member_id"),
    CheckConstraint("length(customer_ref) BETWEEN 1 AND 100", name="customer_ref_length"),
    Index("ix_member_links_member_id", "member_id"),
)
