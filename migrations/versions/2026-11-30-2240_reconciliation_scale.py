"""Reconciliation of large partner files.

- `reconciliation_breaks`: one row per break of a reconciliation, numbered (`seq`) in the order of
  (type, txn_id), so that a file of a million lines lists its breaks a page at a time by that
  number instead of as one JSON array on the reconciliation.
- `reconciliations.lines` and `reconciliations.break_count`: the file's line count and its
  number of breaks, so that listings and the open-breaks count read no break.
- The existing `reconciliations.breaks` arrays move into the new table, and the column goes.

Revision ID: 0013_reconciliation_scale
Revises: 0012_liability_snapshots
Create Date: 2026-11-30 22:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_reconciliation_scale"
down_revision: str | None = "0012_liability_snapshots"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
CREATE TABLE reconciliation_breaks (
    reconciliation_id bigint NOT NULL,
    seq integer NOT NULL,
    type text NOT NULL,
    txn_id text NOT NULL,
    break text NOT NULL,
    ours_amount_fen bigint,
    ours_points bigint,
    theirs_amount_fen bigint,
    theirs_points bigint,
    CONSTRAINT reconciliation_breaks_pkey PRIMARY KEY (reconciliation_id, seq),
    CONSTRAINT reconciliation_breaks_reconciliation_id_fkey FOREIGN KEY (reconciliation_id)
        REFERENCES reconciliations (id),
    CONSTRAINT reconciliation_breaks_break_known_check CHECK (
        break IN ('missing_ours', 'missing_theirs', 'amount_differs', 'points_differ')
    )
);

ALTER TABLE reconciliations
    ADD COLUMN lines integer NOT NULL DEFAULT 0,
    ADD COLUMN break_count integer NOT NULL DEFAULT 0;

INSERT INTO reconciliation_breaks
SELECT r.id, b.seq::integer, b.item ->> 'type', b.item ->> 'txn_id', b.item ->> 'break',
       (b.item -> 'ours' ->> 0)::bigint, (b.item -> 'ours' ->> 1)::bigint,
       (b.item -> 'theirs' ->> 0)::bigint, (b.item -> 'theirs' ->> 1)::bigint
FROM reconciliations r, jsonb_array_elements(r.breaks) WITH ORDINALITY AS b(item, seq);

UPDATE reconciliations
SET break_count = jsonb_array_length(breaks), lines = matched + (
    SELECT count(*) FROM jsonb_array_elements(breaks) AS b(item) WHERE b.item ? 'theirs'
);

ALTER TABLE reconciliations
    ALTER COLUMN lines DROP DEFAULT,
    ALTER COLUMN break_count DROP DEFAULT,
    DROP COLUMN breaks;
"""

DOWNGRADE = """
ALTER TABLE reconciliations ADD COLUMN breaks jsonb NOT NULL DEFAULT '[]';

UPDATE reconciliations r SET breaks = b.breaks
FROM (
    SELECT reconciliation_id, jsonb_agg(
        jsonb_strip_nulls(jsonb_build_object(
            'type', type, 'txn_id', txn_id, 'break', break,
            'ours', CASE WHEN ours_amount_fen IS NOT NULL
                THEN jsonb_build_array(ours_amount_fen, ours_points) END,
            'theirs', CASE WHEN theirs_amount_fen IS NOT NULL
                THEN jsonb_build_array(theirs_amount_fen, theirs_points) END
        )) ORDER BY seq
    ) AS breaks
    FROM reconciliation_breaks GROUP BY reconciliation_id
) b
WHERE b.reconciliation_id = r.id;

ALTER TABLE reconciliations
    ALTER COLUMN breaks DROP DEFAULT,
    DROP COLUMN lines,
    DROP COLUMN break_count;

DROP TABLE reconciliation_breaks;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
