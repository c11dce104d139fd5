"""Settlement computed in the database, and failed runs kept.

- `unsettled_entries`: every settleable entry not covered by a live run, with its `recorded_at`
  (the key, so a run takes the entries before its cut-off by an index range, never by scanning
  the journal). A trigger on `journal_entries` adds each settleable entry as it is written
  (the same test the run applies: a settleable kind, a `partner_id` and a `value_fen`); a run
  takes its day's out in the statement that records them as its items; a rejected run gives
  its entries back, marked `freed` (it gave their issue value back to the partner's headroom
  already). Filled here with the entries settleable today and not covered.
- `settlement_runs.entries`: the number of entries a run covers, so that listings do not count
  its items.
- `settlement_failures`: each failed try to settle a date, with its error and when the job tries
  it again.

Revision ID: 0011_settlement_in_sql
Revises: 0013_reconciliation_scale
Create Date: 2026-11-30 22:20:00

(Written as 0011; it comes last in the chain, after 0012 and 0013, which were committed first.)
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_settlement_in_sql"
down_revision: str | None = "0013_reconciliation_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# settlement.netting.CATEGORIES: the kinds a run settles. Kept here as they were at this
# revision; a test checks that the trigger and the code agree.
SETTLEABLE = (
    "NEW.kind IN ('accrual', 'referral_bonus', 'refund', 'fraud_reversal', 'capture',"
    " 'redemption_refund', 'exchange_in', 'exchange_out')"
    " AND NEW.metadata ? 'partner_id' AND NEW.metadata ? 'value_fen'"
)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE unsettled_entries (
            entry_id bigint NOT NULL,
            recorded_at timestamptz NOT NULL,
            freed boolean NOT NULL DEFAULT false,
            CONSTRAINT unsettled_entries_pkey PRIMARY KEY (recorded_at, entry_id)
        );

        CREATE FUNCTION settlement_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO unsettled_entries (entry_id, recorded_at)
            VALUES (NEW.id, NEW.recorded_at);
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER journal_entries_settleable AFTER INSERT ON journal_entries
            FOR EACH ROW WHEN ({SETTLEABLE})
            EXECUTE FUNCTION settlement_enqueue();

        INSERT INTO unsettled_entries (entry_id, recorded_at, freed)
        SELECT e.id, e.recorded_at, EXISTS (
                SELECT 1
                  FROM settlement_items AS i
                  JOIN settlement_runs AS r ON r.id = i.run_id
                 WHERE i.entry_id = e.id AND r.state = 'rejected'
               )
          FROM journal_entries AS e
         WHERE {SETTLEABLE.replace("NEW.", "e.")}
           AND NOT EXISTS (
                SELECT 1
                  FROM settlement_items AS i
                  JOIN settlement_runs AS r ON r.id = i.run_id
                 WHERE i.entry_id = e.id AND r.state <> 'rejected'
           );

        ALTER TABLE settlement_runs ADD COLUMN entries bigint NOT NULL DEFAULT 0;
        UPDATE settlement_runs AS r
           SET entries = (SELECT count(*) FROM settlement_items AS i WHERE i.run_id = r.id);

        CREATE TABLE settlement_failures (
            id bigint GENERATED ALWAYS AS IDENTITY,
            business_date date NOT NULL,
            attempt integer NOT NULL,
            failed_at timestamptz NOT NULL,
            retry_at timestamptz NOT NULL,
            error text NOT NULL,
            CONSTRAINT settlement_failures_pkey PRIMARY KEY (id)
        );
        CREATE INDEX ix_settlement_failures_business_date
            ON settlement_failures (business_date);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE settlement_failures;
        ALTER TABLE settlement_runs DROP COLUMN entries;
        DROP TRIGGER journal_entries_settleable ON journal_entries;
        DROP FUNCTION settlement_enqueue();
        DROP TABLE unsettled_entries;
        """
    )
