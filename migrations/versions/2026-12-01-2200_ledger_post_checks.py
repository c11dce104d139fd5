"""`ledger_post` checks its own entry as it writes it; the journal's triggers check the rest.

An entry written by `ledger_post` paid, on the partitioned journal, for nine statements on
partitioned tables besides its own inserts: the postings' foreign key to their entry (one
lookup per posting), the deferred balanced-entry check (one per posting) and the deferred
no-postings check (one per entry), each opening the month's partitions again. Now:

- `ledger_post` checks what it wrote in the statement that writes it: the postings it inserted
  (returned by the insert) balance per asset and are not none (`LD005`, as the triggers). It
  names the entry it is writing in the transaction-local setting `ledger.entry_in_writing`
  while it inserts the entry and its postings, and clears it before returning.
- The deferred checks and the key-taking trigger are queued only for rows that are not that
  entry's (`WHEN`, evaluated as the row is inserted): any other insert, a raw one included,
  is checked as before, and a posting also for its entry being there at its own time, which
  replaces the postings' foreign key `(entry_id, recorded_at)` to the partitioned journal.

Revision ID: 0032_ledger_post_checks
Revises: 0031_member_purchases_index
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import load

revision: str = "0032_ledger_post_checks"
down_revision: str | None = "0031_member_purchases_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONS = "2026-12-01-1920_journal_partitions.py"
IN_WRITING = "current_setting('ledger.entry_in_writing', true)"

FUNCTIONS = r"""
-- Writes one journal entry and its postings. An (origin, idempotency key) seen before returns
-- the first entry when the request hash matches, and fails with LD004 when it does not. The
-- key is taken first, with the entry's id, so that a second writer with the same key waits
-- for the first and then answers with its entry. The postings written must balance per asset
-- (LD005): checked here, so the journal's deferred checks skip this entry's rows.
CREATE OR REPLACE FUNCTION ledger_post(
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
    v_recorded timestamptz := clock_timestamp();
    v_hash bytea;
    v_unknown text;
    v_mismatched text;
    v_written bigint;
    v_asset text;
    v_sum numeric;
BEGIN
    INSERT INTO journal_keys AS k
        (origin, idempotency_key, entry_id, recorded_at, request_hash)
    VALUES (p_origin, p_idempotency_key, nextval('journal_entries_id_seq'), v_recorded,
            p_request_hash)
    ON CONFLICT (origin, idempotency_key) DO NOTHING
    RETURNING k.entry_id INTO v_id;

    IF v_id IS NULL THEN
        SELECT k.entry_id, k.recorded_at, k.request_hash INTO v_id, v_recorded, v_hash
          FROM journal_keys k
         WHERE k.origin = p_origin AND k.idempotency_key = p_idempotency_key;
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

    PERFORM set_config('ledger.entry_in_writing', v_id::text, true);
    INSERT INTO journal_entries
        (id, kind, origin, idempotency_key, request_hash, occurred_at, recorded_at, metadata,
         reverses_id)
    OVERRIDING SYSTEM VALUE
    VALUES (v_id, p_kind, p_origin, p_idempotency_key, p_request_hash, p_occurred_at,
            v_recorded, p_metadata, p_reverses);

    -- Postings go in account order, so balance rows are locked in one global order; within an
    -- account, credits before debits, so a floor judges the entry's net effect on the account.
    WITH written AS (
        INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)
        SELECT v_id, a.id, i.asset, i.amount, v_recorded
          FROM unnest(p_addresses, p_assets, p_amounts) AS i(address, asset, amount)
          JOIN accounts a ON a.address = i.address
         ORDER BY a.id, i.amount DESC
        RETURNING postings.asset, postings.amount
    ), per_asset AS (
        SELECT w.asset, sum(w.amount) AS total, count(*) AS postings
          FROM written w GROUP BY w.asset
    )
    SELECT coalesce(sum(s.postings), 0),
           (array_agg(s.asset ORDER BY s.asset) FILTER (WHERE s.total <> 0))[1],
           (array_agg(s.total ORDER BY s.asset) FILTER (WHERE s.total <> 0))[1]
      INTO v_written, v_asset, v_sum
      FROM per_asset s;
    IF v_written = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', v_id USING ERRCODE = 'LD005';
    END IF;
    IF v_asset IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            v_id, v_asset, v_sum
            USING ERRCODE = 'LD005';
    END IF;
    PERFORM set_config('ledger.entry_in_writing', '', true);

    RETURN QUERY SELECT v_id, v_recorded, false;
END
$$;

-- A posting written outside ledger_post: its entry is there, at the posting's own time, and
-- the entry's postings balance per asset.
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_asset text;
    v_sum numeric;
BEGIN
    PERFORM FROM journal_entries e WHERE e.id = NEW.entry_id AND e.recorded_at = NEW.recorded_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'posting % names no journal entry % recorded at %',
            NEW.id, NEW.entry_id, NEW.recorded_at
            USING ERRCODE = 'LD005';
    END IF;
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
"""


def _triggers(*, skip_in_writing: bool) -> str:
    """The journal's checks of each inserted row: for every row, or for those of any entry but
    the one ledger_post is writing."""

    def rows(column: str) -> str:
        if not skip_in_writing:
            return "FOR EACH ROW"
        return f"FOR EACH ROW WHEN ({IN_WRITING} IS DISTINCT FROM NEW.{column}::text)"

    return f"""
DROP TRIGGER postings_balanced ON postings;
DROP TRIGGER journal_entries_have_postings ON journal_entries;
DROP TRIGGER journal_entries_take_key ON journal_entries;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    {rows("entry_id")} EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    {rows("id")} EXECUTE FUNCTION ledger_check_entry_has_postings();
CREATE TRIGGER journal_entries_take_key AFTER INSERT ON journal_entries
    {rows("id")} EXECUTE FUNCTION ledger_take_entry_key();
"""


def upgrade() -> None:
    op.execute("ALTER TABLE postings DROP CONSTRAINT postings_entry_id_recorded_at_fkey")
    op.execute(FUNCTIONS)
    op.execute(_triggers(skip_in_writing=True))


def downgrade() -> None:
    partitions = load(PARTITIONS)
    for name in ("ledger_post", "ledger_check_entry_balanced"):
        op.execute(partitions.function(partitions.FUNCTIONS, name))
    op.execute(_triggers(skip_in_writing=False))
    op.execute(
        "ALTER TABLE postings ADD CONSTRAINT postings_entry_id_recorded_at_fkey"
        " FOREIGN KEY (entry_id, recorded_at) REFERENCES journal_entries (id, recorded_at)"
    )
