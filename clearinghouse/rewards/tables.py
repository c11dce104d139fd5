"""Rewards tables: the catalogue, its effective-dated prices in points, and coupon code pools."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
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
    Column("order_id", Text, ForeignKey("reward_orders.id")),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("reward_id", "code"),
    Index("ix_reward_codes_pool", "reward_id", "id", postgresql_where=text("order_id IS NULL")),
)

ORDER_STATES = ("reserved", "confirmed", "cancelled", "expired", "returned")
FULFILMENT = ("placed", "shipped", "ready", "delivered", "collected", "returned")

reward_orders = Table(
    "reward_orders",
    metadata,
    Column("id", Text, primary_key=True),
    Column("reward_id", Text, ForeignKey("rewards.id"), nullable=False),
    # The partner whose front end the member ordered through.
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("store_id", Text, ForeignKey("stores.id")),
    Column("idempotency_key", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("price_version", Integer, nullable=False),
    Column("unit_value_fen", BigInteger, nullable=False),
    Column("value_fen", BigInteger, nullable=False),
    # The hold of the member's points (holds.purpose 'reward_order').
    Column("hold_id", Text, ForeignKey("holds.id"), nullable=False),
    Column("state", Text, nullable=False),
    # Goods only: where the parcel or the pick-up is.
    Column("fulfilment", Text),
    # The coalition's business day it was ordered on (the per-member daily limit's day).
    Column("business_date", Date, nullable=False),
    Column("entry_id", BigInteger),
    Column("return_entry_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    UniqueConstraint("partner_id", "idempotency_key"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint(
        "state IN ('reserved', 'confirmed', 'cancelled', 'expired', 'returned')",
        name="state_known",
    ),
    CheckConstraint(
        "fulfilment IN ('placed', 'shipped', 'ready', 'delivered', 'collected', 'returned')",
        name="fulfilment_known",
    ),
    Index("ix_reward_orders_reward_id_member_id", "reward_id", "member_id"),
    Index("ix_reward_orders_reserved", "created_at", postgresql_where=text("state = 'reserved'")),
)
