"""Partner tables: partners, their stores, conversion rates, API keys and seen nonces."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from clearinghouse.schema import metadata

PARTNER_KINDS = ("online_merchant", "store_chain", "programme", "charity")
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,39}$"

partners = Table(
    "partners",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("status_changed_at", DateTime(timezone=True)),
    # A partner programme's own points are an asset of the ledger.
    Column("programme_asset", Text, ForeignKey("assets.code"), unique=True),
    # How many days ahead the partner hears of its members' points expiring (points.expiring).
    Column("expiring_notice_days", SmallInteger, nullable=False, server_default=text("14")),
    # The name settlement reports and advices print, and where the partner's settlements are paid.
    Column("legal_name", Text, nullable=False),
    Column("bank_name", Text),
    Column("bank_account", Text),
    CheckConstraint(f"id ~ '{SLUG_PATTERN}'", name="id_format"),
    CheckConstraint("expiring_notice_days BETWEEN 1 AND 90", name="expiring_notice_days_range"),
    CheckConstraint(
        "(kind = 'programme') = (programme_asset IS NOT NULL)", name="programme_asset_present"
    ),
    CheckConstraint(
        "kind IN ('online_merchant', 'store_chain', 'programme', 'charity')", name="kind_known"
    ),
    CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
)

stores = Table(
    "stores",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("city", Text),
    Column("latitude", Double),
    Column("longitude", Double),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Points a member may redeem here in a business day while the till is offline, even beyond
    # the member's available points (the shortfall becomes points debt); 0: none.
    Column("offline_allowance", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint(f"id ~ '{SLUG_PATTERN}'", name="id_format"),
    CheckConstraint("channel IN ('online', 'offline', 'terminal')", name="channel_known"),
    CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
    CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
    CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
    CheckConstraint("offline_allowance >= 0", name="offline_allowance_range"),
    Index("ix_stores_partner_id", "partner_id"),
)

partner_rates = Table(
    "partner_rates",
    metadata,
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("earn_rate", Numeric(12, 6), nullable=False),
    Column("issue_price", Numeric(12, 6), nullable=False),
    Column("redemption_value", Numeric(12, 6), nullable=False),
    Column("exchange_rate", Numeric(12, 6)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("partner_id", "version"),
    UniqueConstraint("partner_id", "effective_from"),
    CheckConstraint("earn_rate >= 0", name="earn_rate_range"),
    CheckConstraint("issue_price >= 0", name="issue_price_range"),
    CheckConstraint("redemption_value >= 0", name="redemption_value_range"),
    CheckConstraint("exchange_rate IS NULL OR exchange_rate > 0", name="exchange_rate_range"),
)

partner_keys = Table(
    "partner_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("algorithm", Text, nullable=False, server_default=text("'ed25519'")),
    Column("public_key", LargeBinary, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("retire_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    # A key scoped to one of the partner's stores acts for it alone; its terminal names the
    # till that holds it.
    Column("store_id", Text, ForeignKey("stores.id")),
    Column("terminal_id", Text),
    Column("expires_at", DateTime(timezone=True)),
    CheckConstraint("algorithm = 'ed25519'", name="algorithm_known"),
    CheckConstraint("octet_length(public_key) = 32", name="public_key_length"),
    CheckConstraint("status IN ('active', 'retiring', 'revoked')", name="status_known"),
    CheckConstraint("(status = 'retiring') = (retire_at IS NOT NULL)", name="retire_at_present"),
    CheckConstraint("terminal_id IS NULL OR store_id IS NOT NULL", name="terminal_in_store"),
    Index("ix_partner_keys_partner_id", "partner_id"),
)

request_nonces = Table(
    "request_nonces",
    metadata,
    Column("key_id", Text, nullable=False),
    Column("nonce", Text, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("key_id", "nonce"),
    Index("ix_request_nonces_seen_at", "seen_at"),
)
