"""Ledger tables. The schema itself is owned by the migrations; these mirror it for queries."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata

OWNER_TYPES = ("member", "partner", "store", "coalition")
ADDRESS_PATTERN = r"^(coalition|(member|partner|store):[A-Za-z0-9_.-]+)(:[a-z0-9_]+)+$"

assets = Table(
    "assets",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(r"code ~ '^[A-Z][A-Z0-9_]{1,15}$'", name="code_format"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("address", Text, nullable=False, unique=True),
    Column("asset", Text, ForeignKey("assets.code"), nullable=False),
    Column("owner_type", Text, nullable=False),
    Column("owner_id", Text),
    Column("kind", Text, nullable=False),
    Column("non_negative", Boolean, nullable=False),
    Column("shards", SmallInteger, nullable=False, server_default=text("1")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("id", "asset"),
    CheckConstraint(f"address ~ '{ADDRESS_PATTERN}'", name="address_format"),
    CheckConstraint(
        "owner_type IN ('member', 'partner', 'store', 'coalition')", name="owner_type_known"
    ),
    CheckConstraint("(owner_type = 'coalition') = (owner_id IS NULL)", name="owner_id_present"),
    CheckConstraint("shards BETWEEN 1 AND 64", name="shards_range"),
    # A floor can only be checked atomically on a single balance row.
)

account_balances = Table(
    "account_balances",
    metadata,
    Column("account_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("shard", SmallInteger, primary_key=True),
    Column("balance", BigInteger, nullable=False, server_default=text("0")),
    Column("non_negative", Boolean, nullable=False),
    CheckConstraint("NOT non_negative OR balance >= 0", name="floor"),
)

# The journal is partitioned by month of recorded_at (partitions are made by
# ledger_add_partitions, not listed here; see clearinghouse.ledger.partitions). A partitioned
# table's keys include the partition key: an entry is (id, recorded_at), its idempotency key is
# unique in journal_keys, and other tables name entries by id without a foreign key.
journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column(
        "recorded_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("clock_timestamp()"),
        primary_key=True,
    ),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # The entry this one corrects, if any; the original is never changed.
    Column("reverses_id", BigInteger),
    Index("ix_journal_entries_reverses_id", "reverses_id"),
    CheckConstraint("length(idempotency_key) BETWEEN 1 AND 200", name="idempotency_key_length"),
    postgresql_partition_by="RANGE (recorded_at)",
)

journal_keys = Table(
    "journal_keys",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("entry_id", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
)

archived_balances = Table(
    "archived_balances",
    metadata,
    # What the postings of archived months add up to, per account: balances as of an instant,
    # statements and the consistency check start from it.
    Column("account_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

journal_partitions = Table(
    "journal_partitions",
    metadata,
    Column("month", Date, primary_key=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("archived_at", DateTime(timezone=True)),
    Column("archive_folder", Text),
    Column("archive_digest", Text),
    Column("entries", BigInteger),
    Column("postings", BigInteger),
    # Entries by kind, when archived: the metrics' count of entries written goes on.
    Column("entry_kinds", JSONB),
    CheckConstraint("extract(day FROM month) = 1", name="month_first_day"),
    CheckConstraint(
        "(archived_at IS NULL) = (archive_digest IS NULL)"
        " AND (archived_at IS NULL) = (entries IS NULL)"
        " AND (archived_at IS NULL) = (postings IS NULL)"
        " AND (archived_at IS NULL) = (entry_kinds IS NULL)",
        name="archived_whole",
    ),
)

postings = Table(
    "postings",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("entry_id", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # The entry's recorded_at: an entry and its postings are in one month's partition. That the
    # entry is there at that time is checked by ledger_post as it writes both, and for any
    # other insert by the postings_balanced trigger, not by a foreign key (its lookups cost as
    # much as the rest of an entry's write on the partitioned journal).
    Column("recorded_at", DateTime(timezone=True), nullable=False, primary_key=True),
    ForeignKeyConstraint(["account_id", "asset"], ["accounts.id", "accounts.asset"]),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
    Index("ix_postings_entry_id", "entry_id"),
    # Serves balances as of an instant and statements in one index.
    Index(
        "ix_postings_account_id_recorded_at_id",
        "account_id",
        "recorded_at",
        "id",
        postgresql_include=["amount"],
    ),
    postgresql_partition_by="RANGE (recorded_at)",
)
