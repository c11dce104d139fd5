"""The double-entry ledger: assets, accounts, balances, journal entries and postings.

The database itself enforces the ledger's invariants:
- every entry's postings sum to zero per asset, checked at commit (a deferred constraint trigger);
- journal entries and postings are append-only (UPDATE, DELETE and TRUNCATE are refused);
- balances are maintained from postings by a trigger; an account with a floor (a member's
  available points) can never go below zero, checked on the same row update;
- hot accounts (partners, the coalition) keep their balance in shards, so concurrent writers do
  not queue on one row.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-25 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADDRESS_PATTERN = r"^(coalition|(member|partner|store):[A-Za-z0-9_.-]+)(:[a-z0-9_]+)+$"

FUNCTIONS = r"""
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'LD007';
END
$$;

CREATE FUNCTION ledger_open_balance_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO account_balances (account_id, shard, non_negative)
    SELECT NEW.id, s, NEW.non_negative FROM generate_series(0, NEW.shards - 1) AS s;
    RETURN NULL;
END
$$;

-- Applies one posting to its account's balance. A guarded account has one row, updated only if
-- it stays at or above zero. A sharded account takes the first shard no other transaction holds,
-- starting from one chosen by this backend, so concurrent writers spread over the shards.
CREATE FUNCTION ledger_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shards smallint;
    v_shard smallint;
    v_address text;
BEGIN
    SELECT shards INTO v_shards FROM accounts WHERE id = NEW.account_id;
    IF v_shards = 1 THEN
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = 0
           AND (NOT non_negative OR balance + NEW.amount >= 0);
        IF NOT FOUND THEN
            SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
            RAISE EXCEPTION 'insufficient balance in %', v_address
                USING ERRCODE = 'LD001', DETAIL = v_address;
        END IF;
    ELSE
        SELECT shard INTO v_shard FROM account_balances
         WHERE account_id = NEW.account_id
         ORDER BY (shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NULL THEN
            v_shard := pg_backend_pid() % v_shards;
        END IF;
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = v_shard;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_asset text;
    v_sum numeric;
BEGIN
    SELECT asset, sum(amount) INTO v_asset, v_sum
      FROM postings WHERE entry_id = NEW.entry_id
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

CREATE FUNCTION ledger_check_entry_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- count(*) rather than NOT EXISTS: a plan cached while postings was small would scan the
    -- whole table at every commit for the life of the connection.
    IF (SELECT count(*) FROM postings WHERE entry_id = NEW.id) = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'LD005';
    END IF;
    RETURN NULL;
END
$$;

-- Writes one journal entry and its postings. An (origin, idempotency key) seen before returns
-- the first entry when the request hash matches, and fails with LD004 when it does not.
CREATE FUNCTION ledger_post(
    p_kind text,
    p_origin text,
    p_idempotency_key text,
    p_request_hash bytea,
    p_occurred_at timestamptz,
    p_metadata jsonb,
    p_reverses bigint,
    p_addresses text[],
    p_assets text[],
    p_amounts bigint[]
) RETURNS TABLE (entry_id bigint, recorded_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_recorded timestamptz;
    v_hash bytea;
    v_unknown text;
    v_mismatched text;
BEGIN
    INSERT INTO journal_entries AS e
        (kind, origin, idempotency_key, request_hash, occurred_at, metadata, reverses_id)
    VALUES (p_kind, p_origin, p_idempotency_key, p_request_hash, p_occurred_at, p_metadata,
            p_reverses)
    ON CONFLICT (origin, idempotency_key) DO NOTHING
    RETURNING e.id, e.recorded_at INTO v_id, v_recorded;

    IF v_id IS NULL THEN
        SELECT e.id, e.recorded_at, e.request_hash INTO v_id, v_recorded, v_hash
          FROM journal_entries e
         WHERE e.origin = p_origin AND e.idempotency_key = p_idempotency_key;
        IF v_hash <> p_request_hash THEN
            RAISE EXCEPTION 'idempotency key % of % was used for another entry',
                p_idempotency_key, p_origin
                USING ERRCODE = 'LD004', DETAIL = v_id::text;
        END IF;
        RETURN QUERY SELECT v_id, v_recorded, true;
        RETURN;
    END IF;

    SELECT string_agg(i.address, ', ') FILTER (WHERE a.id IS NULL),
           string_agg(i.address, ', ') FILTER (WHERE a.asset <> i.asset)
      INTO v_unknown, v_mismatched
      FROM unnest(p_addresses, p_assets) AS i(address, asset)
      LEFT JOIN accounts a ON a.address = i.address;
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown account: %', v_unknown
            USING ERRCODE = 'LD002', DETAIL = v_unknown;
    END IF;
    IF v_mismatched IS NOT NULL THEN
        RAISE EXCEPTION 'asset does not match the account: %', v_mismatched
            USING ERRCODE = 'LD003', DETAIL = v_mismatched;
    END IF;

    -- Postings go in account order, so balance rows are locked in one global order; within an
    -- account, credits before debits, so a floor judges the entry's net effect on the account.
    INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)
    SELECT v_id, a.id, i.asset, i.amount, v_recorded
      FROM unnest(p_addresses, p_assets, p_amounts) AS i(address, asset, amount)
      JOIN accounts a ON a.address = i.address
     ORDER BY a.id, i.amount DESC;

    RETURN QUERY SELECT v_id, v_recorded, false;
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER accounts_open_balance_rows AFTER INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_open_balance_rows();
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_posting();
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_has_postings();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
"""


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            r"code ~ '^[A-Z][A-Z0-9_]{1,15}$'", name=op.f("assets_code_format_check")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("assets_pkey")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("owner_type", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("non_negative", sa.Boolean(), nullable=False),
        sa.Column("shards", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            f"address ~ '{ADDRESS_PATTERN}'", name=op.f("accounts_address_format_check")
        ),
        sa.CheckConstraint(
            "owner_type IN ('member', 'partner', 'store', 'coalition')",
            name=op.f("accounts_owner_type_known_check"),
        ),
        sa.CheckConstraint(
            "(owner_type = 'coalition') = (owner_id IS NULL)",
            name=op.f("accounts_owner_id_present_check"),
        ),
        sa.CheckConstraint("shards BETWEEN 1 AND 64", name=op.f("accounts_shards_range_check")),
        sa.CheckConstraint(
            "NOT non_negative OR shards = 1", name=op.f("accounts_guarded_unsharded_check")
        ),
        sa.ForeignKeyConstraint(["asset"], ["assets.code"], name=op.f("accounts_asset_fkey")),
        sa.PrimaryKeyConstraint("id", name=op.f("accounts_pkey")),
        sa.UniqueConstraint("address", name=op.f("accounts_address_key")),
        sa.UniqueConstraint("id", "asset", name=op.f("accounts_id_asset_key")),
    )
    op.create_table(
        "account_balances",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("non_negative", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "NOT non_negative OR balance >= 0", name=op.f("account_balances_floor_check")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("account_balances_account_id_fkey")
        ),
        sa.PrimaryKeyConstraint("account_id", "shard", name=op.f("account_balances_pkey")),
    )
    op.create_table(
        "journal_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "length(idempotency_key) BETWEEN 1 AND 200",
            name=op.f("journal_entries_idempotency_key_length_check"),
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"], ["journal_entries.id"], name=op.f("journal_entries_reverses_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("journal_entries_pkey")),
        sa.UniqueConstraint(
            "origin", "idempotency_key", name=op.f("journal_entries_origin_idempotency_key_key")
        ),
    )
    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("postings_amount_nonzero_check")),
        sa.ForeignKeyConstraint(
            ["account_id", "asset"],
            ["accounts.id", "accounts.asset"],
            name=op.f("postings_account_id_asset_fkey"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("postings_entry_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("postings_pkey")),
    )
    op.create_index("ix_postings_entry_id", "postings", ["entry_id"])
    op.create_index("ix_journal_entries_reverses_id", "journal_entries", ["reverses_id"])
    op.create_index(
        "ix_postings_account_id_recorded_at_id",
        "postings",
        ["account_id", "recorded_at", "id"],
        postgresql_include=["amount"],
    )
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    op.execute(
        """
        INSERT INTO assets (code, name, unit) VALUES
            ('PTS', 'Coalition points', 'point'),
            ('CNY', 'Chinese yuan', 'fen');
        INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative, shards)
        VALUES
            ('coalition:breakage', 'PTS', 'coalition', NULL, 'breakage', false, 16),
            ('coalition:rounding', 'PTS', 'coalition', NULL, 'rounding', false, 16);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE postings, journal_entries, account_balances, accounts, assets CASCADE;
        DROP FUNCTION ledger_post(text, text, text, bytea, timestamptz, jsonb, bigint, text[],
                                  text[], bigint[]);
        DROP FUNCTION ledger_check_entry_has_postings();
        DROP FUNCTION ledger_check_entry_balanced();
        DROP FUNCTION ledger_apply_posting();
        DROP FUNCTION ledger_open_balance_rows();
        DROP FUNCTION ledger_refuse_change();
        """
    )
