"""Tables of the points lifecycle. Ledger entries hold the amounts; these tables hold what the
entries were for (purchases, lots, holds, refunds) and the rule versions they used (the rule
sets themselves: clearinghouse.rules.tables)."""

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
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

purchases = Table(
    "purchases",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("partner_txn_id", Text, nullable=False),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("store_id", Text, ForeignKey("stores.id")),
    Column("amount_fen", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("entry_id", BigInteger),
    Column("rules_version", Integer, nullable=False),
    Column("rates_version", Integer, nullable=False),
    Column("breakdown", JSONB, nullable=False),
    Column("issue_value_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_points", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_value_fen", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Of the points, those that repaid the member's debt (the entry's leg to it), kept here for
    # the answer to a repeated report once the entry's month has been archived.
    Column("debt_repaid", BigInteger, nullable=False, server_default=text("0")),
    UniqueConstraint("partner_id", "partner_txn_id"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("points >= 0", name="points_range"),
    CheckConstraint("refunded_fen BETWEEN 0 AND amount_fen", name="refund_within_amount"),
    CheckConstraint("refunded_points BETWEEN 0 AND points", name="refund_within_points"),
    CheckConstraint("refunded_value_fen BETWEEN 0 AND issue_value_fen", name="refund_within_value"),
    CheckConstraint("(points = 0) = (entry_id IS NULL)", name="entry_when_points"),
    CheckConstraint("debt_repaid BETWEEN 0 AND points", name="debt_repaid_range"),
    # A member's balance and an accrual's context add up a member's purchases from the index.
    Index(
        "ix_purchases_member_id_occurred_at",
        "member_id",
        "occurred_at",
        postgresql_include=[
            "points",
            "refunded_points",
            "amount_fen",
            "refunded_fen",
            "partner_id",
        ],
    ),
    # The risk rules read a store's recent purchases on every accrual and redemption.
    Index("ix_purchases_store_id_occurred_at", "store_id", "occurred_at"),
    Index("ix_purchases_store_id_id", "store_id", "id", postgresql_include=["amount_fen"]),
)

store_sales_by_hour = Table(
    "store_sales_by_hour",
    metadata,
    # Each store's purchase amounts by hour, kept by a trigger on purchases, in shards so that
    # a busy store's accruals do not queue on one row: the risk rules' "store's last day".
    Column("store_id", Text, ForeignKey("stores.id"), nullable=False),
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    PrimaryKeyConstraint("store_id", "hour", "shard"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("purchase_id", BigInteger, ForeignKey("purchases.id"), nullable=False),
    Column("partner_refund_id", Text, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("from_available", BigInteger, nullable=False),
    Column("to_debt", BigInteger, nullable=False),
    Column("value_fen", BigInteger, nullable=False),
    Column("entry_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("purchase_id", "partner_refund_id"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("points = from_available + to_debt", name="points_split"),
    CheckConstraint("(points = 0) = (entry_id IS NULL)", name="entry_when_points"),
    CheckConstraint("debt_repaid BETWEEN 0 AND points", name="debt_repaid_range"),
)

point_lots = Table(
    "point_lots",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("source", Text, nullable=False),
    Column("issuer_partner_id", Text, ForeignKey("partners.id")),
    Column("entry_id", BigInteger, nullable=False),
    Column("earned_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    # When the lot was written (the database's clock): the liability counts it from then.
    Column(
        "recorded_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("clock_timestamp()"),
    ),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("remaining BETWEEN 0 AND amount", name="remaining_range"),
    CheckConstraint("expires_at > earned_at", name="expiry_after_earning"),
    Index("ix_point_lots_member_id_expires_at", "member_id", "expires_at", "id"),
    Index(
        "ix_point_lots_expires_at_open",
        "expires_at",
        postgresql_where=text("remaining > 0"),
    ),
)

lot_movements = Table(
    "lot_movements",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("lot_id", BigInteger, ForeignKey("point_lots.id"), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column(
        "recorded_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("clock_timestamp()"),
    ),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
    Index("ix_lot_movements_lot_id", "lot_id"),
    Index("ix_lot_movements_entry_id", "entry_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("store_id", Text, ForeignKey("stores.id")),
    Column("partner_ref", Text),
    Column("amount", BigInteger, nullable=False),
    Column("captured", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded", BigInteger, nullable=False, server_default=text("0")),
    Column("state", Text, nullable=False, server_default=text("'held'")),
    Column("value_fen", BigInteger, nullable=False),
    Column("rates_version", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("hold_entry_id", BigInteger, nullable=False),
    Column("close_entry_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("closed_at", DateTime(timezone=True)),
    # What else the hold is for: 'reward_order', a catalogue order's, which the order closes.
    Column("purpose", Text),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("purpose IN ('reward_order')", name="purpose_known"),
    CheckConstraint("captured BETWEEN 0 AND amount", name="captured_range"),
    CheckConstraint("refunded BETWEEN 0 AND captured", name="refunded_range"),
    CheckConstraint("state IN ('held', 'captured', 'voided', 'expired')", name="state_known"),
    CheckConstraint("(state = 'held') = (closed_at IS NULL)", name="closed_when_final"),
    Index("ix_holds_expires_at_held", "expires_at", postgresql_where=text("state = 'held'")),
    # The risk rules count a member's holds of the last hour and day.
    Index("ix_holds_member_id_created_at", "member_id", "created_at"),
)

offline_redemptions = Table(
    "offline_redemptions",
    metadata,
    # A redemption approved at a till while it was offline, reported later: its business day
    # (of occurred_at) counts against the store's offline allowance for the member.
    Column("hold_id", Text, ForeignKey("holds.id"), primary_key=True),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("store_id", Text, ForeignKey("stores.id"), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("debt", BigInteger, nullable=False),
    Column("allowance_left", BigInteger, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    CheckConstraint("debt BETWEEN 0 AND points", name="debt_range"),
    CheckConstraint("allowance_left >= 0", name="allowance_left_range"),
    Index(
        "ix_offline_redemptions_member_id_store_id_occurred_at",
        "member_id",
        "store_id",
        "occurred_at",
    ),
)

tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("from_tier", Text, nullable=False),
    Column("to_tier", Text, nullable=False),
    Column("qualifying_points", BigInteger, nullable=False),
    Column("rules_version", Integer, nullable=False),
    Column(
        "changed_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("clock_timestamp()"),
    ),
    Index("ix_tier_changes_member_id_changed_at", "member_id", "changed_at"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("invitee_member_id", Text, ForeignKey("members.id"), primary_key=True),
    Column("inviter_member_id", Text, ForeignKey("members.id"), nullable=False),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("bonus_entry_id", BigInteger),
    CheckConstraint("invitee_member_id <> inviter_member_id", name="not_self"),
)
