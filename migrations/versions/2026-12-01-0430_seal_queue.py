"""The entries awaiting sealing, kept as they are written.

The sealer found its next block by an anti-join of the whole journal against `seal_items`,
every five seconds: 0.1 s at 57,550 entries, and growing with the journal for ever. Now a
statement trigger on `journal_entries` adds every new entry's id to `seal_queue`, and the
sealer reads its next block from there and takes the ids out in the transaction that seals
them. Filled here with the entries not sealed yet.

An entry written with the triggers switched off is not queued, so never sealed: verification,
which still compares the whole journal with the seals, reports it inserted after the fact.

Revision ID: 0015_seal_queue
Revises: 0014_floor_shard_race
Create Date: 2026-12-01 04:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_seal_queue"
down_revision: str | None = "0014_floor_shard_race"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE seal_queue (
            entry_id bigint NOT NULL,
            CONSTRAINT seal_queue_pkey PRIMARY KEY (entry_id)
        );

        -- Once per statement, with all its rows: a bulk insert queues them in one go.
        CREATE FUNCTION seal_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO seal_queue (entry_id) SELECT id FROM written;
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER journal_entries_seal_queue AFTER INSERT ON journal_entries
            REFERENCING NEW TABLE AS written
            FOR EACH STATEMENT EXECUTE FUNCTION seal_enqueue();

        INSERT INTO seal_queue (entry_id)
        SELECT id FROM journal_entries j
         WHERE NOT EXISTS (SELECT FROM seal_items s WHERE s.entry_id = j.id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER journal_entries_seal_queue ON journal_entries;
        DROP FUNCTION seal_enqueue();
        DROP TABLE seal_queue;
        """
    )
