"""Rewards tables: the catalogue, its effective-dated prices in points, and coupon code pools."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from clearinghouse.schema import metadata

REWARD_KINDS = ("coupon", "voucher", "goods", "membership", "charity")

rewards = Table(
    "rewards",
    metadata,
    Column("id", Text, primary_key=True),
    Column("supplier_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("title_zh", Text, nullable=False),
    Column("title_en", Text, nullable=False),
    Column("description_zh", Text, nullable=False, server_default=text("''")),
    Column("description_en", Text, nullable=False, server_default=text("''")),
    # What the supplier is paid for each unit delivered, in fen.
    Column("unit_value_fen", BigInteger, nullable=False),
    # Units left to order; NULL: unlimited. A coupon's stock is its pool of codes not drawn.
    Column("stock_left", BigInteger),
    Column("per_member_daily_limit", Integer),
    # Units a member may order over the reward's whole validity (its campaign).
    Column("per_member_limit", Integer),
    # Who may order it: NULL allows every tier, channel or city.
    Column("tiers", ARRAY(Text)),
    Column("channels", ARRAY(Text)),
    Column("cities", ARRAY(Text)),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_until", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "kind IN ('coupon', 'voucher', 'goods', 'membership', 'charity')", name="kind_known"
    ),
    CheckConstraint("status IN ('active', 'withdrawn')", name="status_known"),
    CheckConstraint("unit_value_fen >= 0", name="unit_value_fen_not_negative"),
    CheckConstraint("stock_left >= 0", name="stock_left_not_negative"),
    CheckConstraint("per_member_daily_limit > 0 AND per_member_limit > 0", name="limits_positive"),
    CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="validity_ordered"),
    Index("ix_rewards_supplier_id", "supplier_id"),
)

reward_prices = Table(
    "reward_prices",
    metadata,
    Column("reward_id", Text, ForeignKey("rewards.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("reward_id", "version"),
    CheckConstraint("points > 0", name="points_positive"),
)

reward_codes = Table(
    "reward_codes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("reward_id", Text, ForeignKey("rewards.id"), nullable=False),
    Column("code", Text, nullable=False),
    # The order it was drawn for; none while it waits in the pool.
    Column("order_id", Text),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("reward_id", "code"),
    Index("ix_reward_codes_pool", "reward_id", "id", postgresql_where=text("order_id IS NULL")),
)
