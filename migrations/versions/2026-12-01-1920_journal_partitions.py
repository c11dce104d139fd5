"""The journal partitioned by month, so that years of a large coalition stay operable and a month
long sealed, exported and settled can leave the database for archive storage.

- `journal_entries` and `postings` are partitioned by range of `recorded_at`, one partition per
  UTC month (`journal_entries_y2026m12`, `postings_y2026m12`), and a default partition each
  that holds only what no month's partition takes (nothing, while the months are made ahead of
  time; a row written there is shown by `ledger partitions`). A posting's `recorded_at` is its
  entry's, so an entry and its postings share a month; the postings' foreign key to their entry
  names both columns.
- A partitioned table's unique keys must include the partition key, so an entry's key
  (origin, idempotency key) moves to `journal_keys`, a table of its own that every insert into
  the journal must add to (a trigger; an entry with a taken key is refused as before), and that
  `ledger_post` reads replays from. The keys stay when a month is archived: a replay of an
  archived entry still answers with the entry it made.
- Lots, holds, purchases, refunds, referrals, settlement, cases, orders and awards name their
  entries by id without a foreign key: an archived month's entries leave the database while the
  rows naming them stay. The ledger's functions write an entry and what names it in one
  transaction.
- `archived_balances`: what an account's postings in archived months add up to, which balances
  as of an instant, statements and the consistency check add to the postings still in.
- `journal_partitions` lists the months: made ahead by `ledger_add_partitions` (the
  `partitions` job), archived by `clearinghouse ledger archive`. TRUNCATE of a month's
  partition is refused like TRUNCATE of the journal (statement triggers are not inherited).
- The migration rewrites the journal once into the partitioned tables, every row as it was.

Revision ID: 0030_journal_partitions
Revises: 0029_partner_details
Create Date: 2026-12-01 19:20:00
"""

import re
from collections.abc import Sequence

from alembic import op

from migrations.earlier import load

revision: str = "0030_journal_partitions"
down_revision: str | None = "0029_partner_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every foreign key that names an entry by id: (table, constraint).
ENTRY_REFERENCES = (
    ("point_lots", "point_lots_entry_id_fkey"),
    ("referrals", "referrals_bonus_entry_id_fkey"),
    ("holds", "holds_close_entry_id_fkey"),
    ("holds", "holds_hold_entry_id_fkey"),
    ("lot_movements", "lot_movements_entry_id_fkey"),
    ("purchases", "purchases_entry_id_fkey"),
    ("refunds", "refunds_entry_id_fkey"),
    ("settlement_runs", "settlement_runs_entry_id_fkey"),
    ("settlement_items", "settlement_items_entry_id_fkey"),
    ("fraud_cases", "fraud_cases_entry_id_fkey"),
    ("reward_orders", "reward_orders_entry_id_fkey"),
    ("reward_orders", "reward_orders_return_entry_id_fkey"),
    ("campaign_awards", "campaign_awards_entry_id_fkey"),
)

TABLES = """
CREATE TABLE journal_entries (
    id bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,
    origin text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash bytea NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    reverses_id bigint,
    CONSTRAINT journal_entries_idempotency_key_length_check
        CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    CONSTRAINT journal_entries_pkey PRIMARY KEY (id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX ix_journal_entries_reverses_id ON journal_entries (reverses_id);

CREATE TABLE postings (
    id bigint GENERATED ALWAYS AS IDENTITY,
    entry_id bigint NOT NULL,
    account_id bigint NOT NULL,
    asset text NOT NULL,
    amount bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT postings_amount_nonzero_check CHECK (amount <> 0),
    CONSTRAINT postings_pkey PRIMARY KEY (id, recorded_at),
    CONSTRAINT postings_account_id_asset_fkey
        FOREIGN KEY (account_id, asset) REFERENCES accounts (id, asset),
    CONSTRAINT postings_entry_id_recorded_at_fkey
        FOREIGN KEY (entry_id, recorded_at) REFERENCES journal_entries (id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX ix_postings_entry_id ON postings (entry_id);
CREATE INDEX ix_postings_account_id_recorded_at_id
    ON postings (account_id, recorded_at, id) INCLUDE (amount);

CREATE TABLE journal_entries_default PARTITION OF journal_entries DEFAULT;
CREATE TABLE postings_default PARTITION OF postings DEFAULT;

CREATE TABLE journal_keys (
    origin text NOT NULL,
    idempotency_key text NOT NULL,
    entry_id bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    request_hash bytea NOT NULL,
    CONSTRAINT journal_keys_pkey PRIMARY KEY (origin, idempotency_key)
);

CREATE TABLE archived_balances (
    account_id bigint NOT NULL,
    amount bigint NOT NULL,
    CONSTRAINT archived_balances_pkey PRIMARY KEY (account_id),
    CONSTRAINT archived_balances_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (id)
);

CREATE TABLE journal_partitions (
    month date NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    archive_folder text,
    archive_digest text,
    entries bigint,
    postings bigint,
    entry_kinds jsonb,
    CONSTRAINT journal_partitions_pkey PRIMARY KEY (month),
    CONSTRAINT journal_partitions_month_first_day_check
        CHECK (extract(day FROM month) = 1),
    CONSTRAINT journal_partitions_archived_whole_check
        CHECK ((archived_at IS NULL) = (archive_digest IS NULL)
               AND (archived_at IS NULL) = (entries IS NULL)
               AND (archived_at IS NULL) = (postings IS NULL)
               AND (archived_at IS NULL) = (entry_kinds IS NULL))
);
"""

FUNCTIONS = r"""
-- The month partitions of the journal from the month of p_from through the month of p_through
-- that are not made yet (nor archived): the partitions job makes them months ahead, so that no
-- entry waits for one. Months are UTC months. Returns the number of months made.
CREATE FUNCTION ledger_add_partitions(p_from timestamptz, p_through timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_month date;
    v_made integer := 0;
    v_start timestamptz;
    v_end timestamptz;
    v_suffix text;
BEGIN
    LOCK TABLE journal_partitions IN SHARE ROW EXCLUSIVE MODE;
    FOR v_month IN
        SELECT m::date
          FROM generate_series(date_trunc('month', p_from AT TIME ZONE 'UTC'),
                               date_trunc('month', p_through AT TIME ZONE 'UTC'),
                               interval '1 month') AS m
         WHERE NOT EXISTS (SELECT FROM journal_partitions p WHERE p.month = m::date)
    LOOP
        v_start := v_month::timestamp AT TIME ZONE 'UTC';
        v_end := (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        v_suffix := to_char(v_month, '"y"YYYY"m"MM');
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF journal_entries FOR VALUES FROM (%L) TO (%L)',
            'journal_entries_' || v_suffix, v_start, v_end);
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF postings FOR VALUES FROM (%L) TO (%L)',
            'postings_' || v_suffix, v_start, v_end);
        PERFORM ledger_refuse_truncate('journal_entries_' || v_suffix);
        PERFORM ledger_refuse_truncate('postings_' || v_suffix);
        INSERT INTO journal_partitions (month, starts_at, ends_at)
        VALUES (v_month, v_start, v_end);
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END
$$;

-- TRUNCATE refused on one of the journal's tables (statement triggers are not inherited by
-- partitions, so each has its own).
CREATE FUNCTION ledger_refuse_truncate(p_table text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
        'FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()',
        p_table || '_no_truncate', p_table);
END
$$;

-- Every entry's key is taken in journal_keys, whoever inserts it: ledger_post takes it first
-- (and finds it taken by the entry it inserts), a raw insert takes it here.
CREATE FUNCTION ledger_take_entry_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO journal_keys (origin, idempotency_key, entry_id, recorded_at, request_hash)
    VALUES (NEW.origin, NEW.idempotency_key, NEW.id, NEW.recorded_at, NEW.request_hash)
    ON CONFLICT (origin, idempotency_key) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM FROM journal_keys k
         WHERE k.origin = NEW.origin AND k.idempotency_key = NEW.idempotency_key
           AND k.entry_id = NEW.id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "journal_keys_pkey"'
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'journal_keys_pkey',
                      DETAIL = format('Key (origin, idempotency_key)=(%s, %s) already exists.',
                                      NEW.origin, NEW.idempotency_key);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- An entry's postings are found in its own month's partition.
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_asset text;
    v_sum numeric;
BEGIN
    SELECT asset, sum(amount) INTO v_asset, v_sum
      FROM postings WHERE entry_id = NEW.entry_id AND recorded_at = NEW.recorded_at
     GROUP BY asset HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            NEW.entry_id, v_asset, v_sum
            USING ERRCODE = 'LD005';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ledger_check_entry_has_postings() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- count(*) rather than NOT EXISTS: a plan cached while postings was small would scan the
    -- whole table at every commit for the life of the connection.
    IF (SELECT count(*) FROM postings
         WHERE entry_id = NEW.id AND recorded_at = NEW.recorded_at) = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'LD005';
    END IF;
    RETURN NULL;
END
$$;
"""


# What changes in ledger_post (as the ledger's migration wrote it): the entry's key is taken
# first in journal_keys, with the entry's id and its recorded_at, so that a second writer with
# the same key waits for the first and then answers with its entry; then the entry is inserted
# with that id.
LEDGER_POST_CHANGES = (
    ("    v_recorded timestamptz;\n", "    v_recorded timestamptz := clock_timestamp();\n"),
    (
        """    INSERT INTO journal_entries AS e
        (kind, origin, idempotency_key, request_hash, occurred_at, metadata, reverses_id)
    VALUES (p_kind, p_origin, p_idempotency_key, p_request_hash, p_occurred_at, p_metadata,
            p_reverses)
    ON CONFLICT (origin, idempotency_key) DO NOTHING
    RETURNING e.id, e.recorded_at INTO v_id, v_recorded;
""",
        """    INSERT INTO journal_keys AS k
        (origin, idempotency_key, entry_id, recorded_at, request_hash)
    VALUES (p_origin, p_idempotency_key, nextval('journal_entries_id_seq'), v_recorded,
            p_request_hash)
    ON CONFLICT (origin, idempotency_key) DO NOTHING
    RETURNING k.entry_id INTO v_id;
""",
    ),
    (
        """        SELECT e.id, e.recorded_at, e.request_hash INTO v_id, v_recorded, v_hash
          FROM journal_entries e
         WHERE e.origin = p_origin AND e.idempotency_key = p_idempotency_key;
""",
        """        SELECT k.entry_id, k.recorded_at, k.request_hash INTO v_id, v_recorded, v_hash
          FROM journal_keys k
         WHERE k.origin = p_origin AND k.idempotency_key = p_idempotency_key;
""",
    ),
    (
        "    -- Postings go in account order,",
        """    INSERT INTO journal_entries
        (id, kind, origin, idempotency_key, request_hash, occurred_at, recorded_at, metadata,
         reverses_id)
    OVERRIDING SYSTEM VALUE
    VALUES (v_id, p_kind, p_origin, p_idempotency_key, p_request_hash, p_occurred_at,
            v_recorded, p_metadata, p_reverses);

    -- Postings go in account order,""",
    ),
)
# operation_context reads an earlier attempt's entry from journal_keys.
OPERATION_CONTEXT_CHANGES = (
    (
        """    SELECT e.id INTO v_replay FROM journal_entries e
     WHERE e.origin = p_origin AND e.idempotency_key = p_entry_key;
""",
        """    SELECT k.entry_id INTO v_replay FROM journal_keys k
     WHERE k.origin = p_origin AND k.idempotency_key = p_entry_key;
""",
    ),
)


def _changed(filename: str, name: str, changes: tuple[tuple[str, str], ...]) -> str:
    """Function `name` as the migration in `filename` wrote it, with `changes` made."""
    text = function(load(filename).FUNCTIONS, name)
    for before, after in changes:
        assert text.count(before) == 1, before
        text = text.replace(before, after)
    return text


def ledger_post() -> str:
    """ledger_post on the partitioned journal (its keys in journal_keys)."""
    return _changed("2026-11-25-1640_ledger.py", "ledger_post", LEDGER_POST_CHANGES)


def _operation_context() -> str:
    return _changed(
        "2026-11-30-1700_request_path.py", "operation_context", OPERATION_CONTEXT_CHANGES
    )


def _triggers(*, partitioned: bool) -> str:
    """The journal's triggers; partitioned, with each entry's key taken in journal_keys and
    TRUNCATE refused on each partition as well."""
    kinds = load("2026-12-01-1730_campaigns.py").KINDS
    tables = ["journal_entries", "postings"]
    if partitioned:
        tables += ["journal_entries_default", "postings_default"]
    take_key = (
        """CREATE TRIGGER journal_entries_take_key AFTER INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_take_entry_key();"""
        if partitioned
        else ""
    )
    truncate = "\n".join(
        f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();"
        for t in tables
    )
    return f"""
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_posting();
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_has_postings();
{take_key}
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_entries_settleable AFTER INSERT ON journal_entries
    FOR EACH ROW WHEN (NEW.kind IN ({kinds}) AND NEW.metadata ? 'partner_id'
                       AND NEW.metadata ? 'value_fen')
    EXECUTE FUNCTION settlement_enqueue();
CREATE TRIGGER journal_entries_seal_queue AFTER INSERT ON journal_entries
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION seal_enqueue();
{truncate}
"""


def upgrade() -> None:
    for table, constraint in ENTRY_REFERENCES:
        op.drop_constraint(constraint, table, type_="foreignkey")
    op.execute(
        """
        ALTER TABLE journal_entries RENAME TO journal_entries_before;
        ALTER TABLE postings RENAME TO postings_before;
        ALTER TABLE journal_entries_before RENAME CONSTRAINT journal_entries_pkey
            TO journal_entries_before_pkey;
        ALTER TABLE postings_before RENAME CONSTRAINT postings_pkey TO postings_before_pkey;
        ALTER INDEX ix_journal_entries_reverses_id RENAME TO ix_journal_entries_before_reverses;
        ALTER INDEX ix_postings_entry_id RENAME TO ix_postings_before_entry_id;
        ALTER INDEX ix_postings_account_id_recorded_at_id RENAME TO ix_postings_before_account;
        ALTER SEQUENCE journal_entries_id_seq RENAME TO journal_entries_before_id_seq;
        ALTER SEQUENCE postings_id_seq RENAME TO postings_before_id_seq;
        """
    )
    op.execute(TABLES)
    op.execute(FUNCTIONS)
    op.execute(ledger_post())
    # The months the journal holds through three months ahead; then every row as it was.
    op.execute(
        """
        SELECT ledger_add_partitions(
            coalesce((SELECT min(recorded_at) FROM journal_entries_before), now()),
            now() + interval '3 months');

        INSERT INTO journal_entries OVERRIDING SYSTEM VALUE SELECT * FROM journal_entries_before;
        INSERT INTO postings OVERRIDING SYSTEM VALUE SELECT * FROM postings_before;
        INSERT INTO journal_keys (origin, idempotency_key, entry_id, recorded_at, request_hash)
        SELECT origin, idempotency_key, id, recorded_at, request_hash FROM journal_entries;
        SELECT setval('journal_entries_id_seq',
                      greatest((SELECT max(id) FROM journal_entries), 1),
                      (SELECT max(id) FROM journal_entries) IS NOT NULL);
        SELECT setval('postings_id_seq', greatest((SELECT max(id) FROM postings), 1),
                      (SELECT max(id) FROM postings) IS NOT NULL);
        DROP TABLE postings_before;
        DROP TABLE journal_entries_before;
        """
    )
    op.execute(_operation_context())
    op.execute(_triggers(partitioned=True))


def function(sql: str, name: str) -> str:
    """Function `name` as `sql` (a migration's text) creates it, to replace a later one."""
    found = re.search(rf"CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?\$\$.*?\$\$;", sql, re.DOTALL)
    assert found is not None, name
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def downgrade() -> None:
    ledger = load("2026-11-25-1640_ledger.py")
    request_path = load("2026-11-30-1700_request_path.py")
    op.execute(
        """
        ALTER TABLE journal_entries RENAME TO journal_entries_partitioned;
        ALTER TABLE postings RENAME TO postings_partitioned;
        ALTER TABLE journal_entries_partitioned RENAME CONSTRAINT journal_entries_pkey
            TO journal_entries_partitioned_pkey;
        ALTER TABLE postings_partitioned RENAME CONSTRAINT postings_pkey
            TO postings_partitioned_pkey;
        ALTER INDEX ix_journal_entries_reverses_id RENAME TO ix_journal_entries_partitioned_rev;
        ALTER INDEX ix_postings_entry_id RENAME TO ix_postings_partitioned_entry_id;
        ALTER INDEX ix_postings_account_id_recorded_at_id RENAME TO ix_postings_partitioned_acc;
        ALTER SEQUENCE journal_entries_id_seq RENAME TO journal_entries_partitioned_id_seq;
        ALTER SEQUENCE postings_id_seq RENAME TO postings_partitioned_id_seq;

        CREATE TABLE journal_entries (
            id bigint GENERATED ALWAYS AS IDENTITY,
            kind text NOT NULL,
            origin text NOT NULL,
            idempotency_key text NOT NULL,
            request_hash bytea NOT NULL,
            occurred_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            reverses_id bigint,
            CONSTRAINT journal_entries_idempotency_key_length_check
                CHECK (length(idempotency_key) BETWEEN 1 AND 200),
            CONSTRAINT journal_entries_pkey PRIMARY KEY (id),
            CONSTRAINT journal_entries_origin_idempotency_key_key
                UNIQUE (origin, idempotency_key),
            CONSTRAINT journal_entries_reverses_id_fkey
                FOREIGN KEY (reverses_id) REFERENCES journal_entries (id)
        );
        CREATE INDEX ix_journal_entries_reverses_id ON journal_entries (reverses_id);
        CREATE TABLE postings (
            id bigint GENERATED ALWAYS AS IDENTITY,
            entry_id bigint NOT NULL,
            account_id bigint NOT NULL,
            asset text NOT NULL,
            amount bigint NOT NULL,
            recorded_at timestamptz NOT NULL,
            CONSTRAINT postings_amount_nonzero_check CHECK (amount <> 0),
            CONSTRAINT postings_pkey PRIMARY KEY (id),
            CONSTRAINT postings_account_id_asset_fkey
                FOREIGN KEY (account_id, asset) REFERENCES accounts (id, asset),
            CONSTRAINT postings_entry_id_fkey
                FOREIGN KEY (entry_id) REFERENCES journal_entries (id)
        );
        CREATE INDEX ix_postings_entry_id ON postings (entry_id);
        CREATE INDEX ix_postings_account_id_recorded_at_id
            ON postings (account_id, recorded_at, id) INCLUDE (amount);

        INSERT INTO journal_entries OVERRIDING SYSTEM VALUE
        SELECT * FROM journal_entries_partitioned;
        INSERT INTO postings OVERRIDING SYSTEM VALUE SELECT * FROM postings_partitioned;
        SELECT setval('journal_entries_id_seq',
                      greatest((SELECT max(id) FROM journal_entries), 1),
                      (SELECT max(id) FROM journal_entries) IS NOT NULL);
        SELECT setval('postings_id_seq', greatest((SELECT max(id) FROM postings), 1),
                      (SELECT max(id) FROM postings) IS NOT NULL);
        DROP TABLE postings_partitioned;
        DROP TABLE journal_entries_partitioned;
        DROP TABLE journal_keys;
        DROP TABLE journal_partitions;
        DROP TABLE archived_balances;
        DROP FUNCTION ledger_add_partitions(timestamptz, timestamptz);
        DROP FUNCTION ledger_refuse_truncate(text);
        DROP FUNCTION ledger_take_entry_key();
        """
    )
    for name in ("ledger_post", "ledger_check_entry_balanced", "ledger_check_entry_has_postings"):
        op.execute(function(ledger.FUNCTIONS, name))
    op.execute(function(request_path.FUNCTIONS, "operation_context"))
    op.execute(_triggers(partitioned=False))
    for table, constraint in ENTRY_REFERENCES:
        column = constraint.removeprefix(f"{table}_").removesuffix("_fkey")
        op.create_foreign_key(constraint, table, "journal_entries", [column], ["id"])
