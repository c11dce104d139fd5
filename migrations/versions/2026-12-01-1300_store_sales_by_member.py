"""A store's hourly sales are spread over their shards by member, not by server process.

`store_sales_add` put each purchase's amount in the shard of the backend that recorded it
(`pg_backend_pid() % 16`). Two transactions of backends with the same remainder that recorded
purchases at two stores in opposite orders waited for each other's new rows: a deadlock. The
batch worker's lanes (clearinghouse.batches.worker) hold their transactions for a chunk of lines,
so they met it. The shard is now the member's (`hashtext(member_id) & 15`): a lane applies the
lines of members whose hash falls in it, and so writes shards no other lane writes. A single call
writes one row, as before. The sums over the shards are unchanged, and so is every reader.

Revision ID: 0019_store_sales_by_member
Revises: 0018_offline_allowance
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_store_sales_by_member"
down_revision: str | None = "0018_offline_allowance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SALES_HOUR = "date_bin('1 hour', NEW.occurred_at, timestamptz '2000-01-01 00:00:00+00')"
STORE_SALES_ADD = """
CREATE OR REPLACE FUNCTION store_sales_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.store_id IS NOT NULL THEN
        INSERT INTO store_sales_by_hour AS s (store_id, hour, shard, amount_fen)
        VALUES (NEW.store_id, {hour}, {shard}, NEW.amount_fen)
        ON CONFLICT (store_id, hour, shard)
        DO UPDATE SET amount_fen = s.amount_fen + EXCLUDED.amount_fen;
    END IF;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.execute(STORE_SALES_ADD.format(hour=SALES_HOUR, shard="hashtext(NEW.member_id) & 15"))


def downgrade() -> None:
    op.execute(STORE_SALES_ADD.format(hour=SALES_HOUR, shard="pg_backend_pid() % 16"))
