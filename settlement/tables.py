"""Settlement runs, what they cover, their per-partner lines and their history; partners'
reconciliation uploads and the breaks found in them, one row each."""

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
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clearinghouse.schema import metadata
from settlement import categories

settlement_runs = Table(
    "settlement_runs",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("cutoff", DateTime(timezone=True), nullable=False),
    Column("state", Text, nullable=False),
    Column("entry_id", BigInteger),
    Column("bank_reference", Text),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # How many entries the run covers (its settlement_items), kept so listings need not count.
    Column("entries", BigInteger, nullable=False, server_default=text("0")),
    # The coalition's leg of the run's entry, read when it was posted: its report stays right
    # once the entry's month has been archived.
    Column("clearing_fen", BigInteger, nullable=False, server_default=text("0")),
    # Its late arrivals as its report lists them, written when it was computed (NULL for a run
    # computed before they were kept: read from the journal).
    Column("late_arrivals", JSONB),
    UniqueConstraint("business_date", "attempt"),
    CheckConstraint("state IN ('computed', 'approved', 'paid', 'rejected')", name="state_known"),
    CheckConstraint("(state = 'paid') = (bank_reference IS NOT NULL)", name="paid_has_reference"),
    # The run key: one live run per business date.
    Index(
        "ix_settlement_runs_business_date_live",
        "business_date",
        unique=True,
        postgresql_where=text("state <> 'rejected'"),
    ),
)

settlement_items = Table(
    "settlement_items",
    metadata,
    Column("entry_id", BigInteger, nullable=False),
    Column("run_id", BigInteger, ForeignKey("settlement_runs.id"), nullable=False),
    PrimaryKeyConstraint("entry_id", "run_id"),
    Index("ix_settlement_items_run_id", "run_id"),
)

# Every settleable entry not covered by a live run, with the instant it was recorded: written
# by a trigger on journal_entries as the entry is, taken by the run that covers it, given back
# when that run is rejected. A run reads its day here, never by scanning the journal.
unsettled_entries = Table(
    "unsettled_entries",
    metadata,
    Column("entry_id", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # Given back by a rejected run of this date, which freed its issue value from exposure
    # already: only the date's next attempt takes it.
    Column("held_for", Date),
    PrimaryKeyConstraint("recorded_at", "entry_id"),
    Index(
        "ix_unsettled_entries_held_for",
        "held_for",
        postgresql_where=text("held_for IS NOT NULL"),
    ),
)

# Each failed try to settle a date, with its error and when the job tries again. A date's
# failures are current until a run of that attempt (or a later one) is computed.
settlement_failures = Table(
    "settlement_failures",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Column("retry_at", DateTime(timezone=True), nullable=False),
    Column("error", Text, nullable=False),
    Index("ix_settlement_failures_business_date", "business_date"),
)

settlement_lines = Table(
    "settlement_lines",
    metadata,
    Column("run_id", BigInteger, ForeignKey("settlement_runs.id"), nullable=False),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    # A points and a fen column per category, in the categories' order (the migration that made
    # the table wrote them out, as they were then; a later category's migration adds its own,
    # which the database keeps after net_fen).
    *(Column(column, BigInteger, nullable=False) for column in categories.LINE_COLUMNS),
    Column("net_fen", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "partner_id"),
    CheckConstraint(f"net_fen = {categories.net_expression()}", name="net_adds_up"),
)

settlement_events = Table(
    "settlement_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("run_id", BigInteger, ForeignKey("settlement_runs.id"), nullable=False),
    Column("from_state", Text),
    Column("to_state", Text, nullable=False),
    Column("user_id", Text, ForeignKey("users.id")),
    Column("note", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    Index("ix_settlement_events_run_id", "run_id"),
)

settlement_approvals = Table(
    "settlement_approvals",
    metadata,
    Column("run_id", BigInteger, ForeignKey("settlement_runs.id"), nullable=False),
    Column("user_id", Text, ForeignKey("users.id"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("run_id", "user_id"),
)

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id"), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("file_sha256", LargeBinary, nullable=False),
    Column("file", LargeBinary, nullable=False),
    Column("lines", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    Column("break_count", Integer, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("resolved_at", DateTime(timezone=True)),
    Index("ix_reconciliations_business_date", "business_date"),
    UniqueConstraint("partner_id", "business_date", "file_sha256"),
)

reconciliation_breaks = Table(
    "reconciliation_breaks",
    metadata,
    Column("reconciliation_id", BigInteger, ForeignKey("reconciliations.id"), nullable=False),
    # The break's place in the order of (type, txn_id): the cursor of its pages.
    Column("seq", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("txn_id", Text, nullable=False),
    Column("break", Text, nullable=False),
    Column("ours_amount_fen", BigInteger),
    Column("ours_points", BigInteger),
    Column("theirs_amount_fen", BigInteger),
    Column("theirs_points", BigInteger),
    PrimaryKeyConstraint("reconciliation_id", "seq"),
    CheckConstraint(
        "break IN ('missing_ours', 'missing_theirs', 'amount_differs', 'points_differ',"
        " 'duplicate')",
        name="break_known",
    ),
)

# The liability at the end of each closed business day, taken once and never changed.
liability_snapshots = Table(
    "liability_snapshots",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)

liability_snapshot_issuers = Table(
    "liability_snapshot_issuers",
    metadata,
    Column(
        "business_date",
        Date,
        ForeignKey("liability_snapshots.business_date"),
        nullable=False,
    ),
    # NULL: the coalition's own bonuses.
    Column("issuer_partner_id", Text, ForeignKey("partners.id")),
    Column("points", BigInteger, nullable=False),
    UniqueConstraint("business_date", "issuer_partner_id", postgresql_nulls_not_distinct=True),
    CheckConstraint("points > 0", name="points_positive"),
)
