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

# What changes in ledger_post, as (its text in the partitions' migration, here).
POST_CHANGES = (
    (
        "    v_mismatched text;\n",
        "    v_mismatched text;\n    v_written bigint;\n    v_asset text;\n    v_sum numeric;\n",
    ),
    (
        "    INSERT INTO journal_entries\n",
        "    PERFORM set_config('ledger.entry_in_writing', v_id::text, true);\n"
        "    INSERT INTO journal_entries\n",
    ),
    (
        """    INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)
    SELECT v_id, a.id, i.asset, i.amount, v_recorded
      FROM unnest(p_addresses, p_assets, p_amounts) AS i(address, asset, amount)
      JOIN accounts a ON a.address = i.address
     ORDER BY a.id, i.amount DESC;
""",
        """    WITH written AS (
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
""",
    ),
)

# What changes in the balanced-entry check: it also looks the posting's entry up.
BALANCED_CHANGES = (
    (
        "BEGIN\n    SELECT asset, sum(amount) INTO v_asset, v_sum\n",
        "BEGIN\n"
        "    PERFORM FROM journal_entries e\n"
        "     WHERE e.id = NEW.entry_id AND e.recorded_at = NEW.recorded_at;\n"
        "    IF NOT FOUND THEN\n"
        "        RAISE EXCEPTION 'posting % names no journal entry % recorded at %',\n"
        "            NEW.id, NEW.entry_id, NEW.recorded_at\n"
        "            USING ERRCODE = 'LD005';\n"
        "    END IF;\n"
        "    SELECT asset, sum(amount) INTO v_asset, v_sum\n",
    ),
)


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


def _functions(*, changed: bool) -> list[str]:
    """ledger_post and the balanced-entry check as the partitions' migration wrote them, with
    this migration's changes or without."""
    partitions = load(PARTITIONS)
    written = []
    for name, changes in (
        ("ledger_post", POST_CHANGES),
        ("ledger_check_entry_balanced", BALANCED_CHANGES),
    ):
        text: str = (
            partitions.ledger_post()
            if name == "ledger_post"
            else partitions.function(partitions.FUNCTIONS, name)
        )
        for before, after in changes if changed else ():
            assert text.count(before) == 1, before
            text = text.replace(before, after)
        written.append(text)
    return written


def upgrade() -> None:
    op.execute("ALTER TABLE postings DROP CONSTRAINT postings_entry_id_recorded_at_fkey")
    for text in _functions(changed=True):
        op.execute(text)
    op.execute(_triggers(skip_in_writing=True))


def downgrade() -> None:
    for text in _functions(changed=False):
        op.execute(text)
    op.execute(_triggers(skip_in_writing=False))
    op.execute(
        "ALTER TABLE postings ADD CONSTRAINT postings_entry_id_recorded_at_fkey"
        " FOREIGN KEY (entry_id, recorded_at) REFERENCES journal_entries (id, recorded_at)"
    )
