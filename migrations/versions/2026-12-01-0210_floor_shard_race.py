"""A debit of a sharded floor never waits for shards while holding one out of order.

The debit first takes, without waiting, a shard that can pay it. As written before, that
statement tested the balance in the locking query itself: when the shard it found had been
changed by a transaction that committed since the statement's snapshot, PostgreSQL locked the
newest version, re-tested it and, if it could no longer pay, skipped it *still locked*. The
debit then went on to lock every shard in order while already holding that one, and two such
debits deadlocked.

Now the candidates (shards that could pay in the snapshot) are chosen first, without a lock, and
the lock is taken on one of them by its key alone, so it is the shard the debit holds. If its
newest balance cannot pay, the debit holds a shard out of order and must not wait for the
others: it fails with a serialization failure (40001), which the request path runs again (as it
does a deadlock), on a fresh transaction. Only a debit that holds no shard waits for all of
them, in order; such debits cannot form a cycle.

Revision ID: 0014_floor_shard_race
Revises: 0011_settlement_in_sql
Create Date: 2026-12-01 02:10:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import load

revision: str = "0014_floor_shard_race"
down_revision: str | None = "0011_settlement_in_sql"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPLY_POSTING = """
CREATE OR REPLACE FUNCTION ledger_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shards smallint;
    v_floor boolean;
    v_shard smallint;
    v_balance bigint;
    v_address text;
    v_left bigint;
BEGIN
    SELECT a.shards, a.non_negative INTO v_shards, v_floor FROM accounts a
     WHERE a.id = NEW.account_id;
    IF v_shards = 1 THEN
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = 0
           AND (NOT non_negative OR balance + NEW.amount >= 0);
        IF NOT FOUND THEN
            SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
            RAISE EXCEPTION 'insufficient balance in %', v_address
                USING ERRCODE = 'LD001', DETAIL = v_address;
        END IF;
    ELSIF NOT v_floor OR NEW.amount > 0 THEN
        -- The first shard no other transaction holds, from one chosen by this backend.
        SELECT shard INTO v_shard FROM account_balances
         WHERE account_id = NEW.account_id
         ORDER BY (shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NULL THEN
            v_shard := pg_backend_pid() % v_shards;
        END IF;
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = v_shard;
    ELSE
        -- A debit against a floor: of the shards that could pay it as of this statement, the
        -- first no other transaction holds, locked by its key alone, so that the one locked is
        -- the one returned...
        SELECT b.shard, b.balance INTO v_shard, v_balance FROM account_balances b
         WHERE b.account_id = NEW.account_id
           AND b.shard = ANY (ARRAY(
               SELECT c.shard FROM account_balances c
                WHERE c.account_id = NEW.account_id AND c.balance + NEW.amount >= 0))
         ORDER BY (b.shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NOT NULL AND v_balance + NEW.amount >= 0 THEN
            UPDATE account_balances SET balance = balance + NEW.amount
             WHERE account_id = NEW.account_id AND shard = v_shard;
        ELSIF v_shard IS NOT NULL THEN
            -- ...which a transaction committed since has drawn down: holding it, this one may
            -- not wait for the other shards (two such would deadlock); it runs again.
            SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
            RAISE EXCEPTION 'a shard of % was drawn down while being taken', v_address
                USING ERRCODE = '40001', DETAIL = v_address;
        ELSE
            -- ...else, holding none, all of them, locked in order: paid if together they can,
            -- and what is left spread evenly again.
            PERFORM FROM account_balances WHERE account_id = NEW.account_id
             ORDER BY shard FOR UPDATE;
            SELECT sum(balance) + NEW.amount INTO v_left FROM account_balances
             WHERE account_id = NEW.account_id;
            IF v_left < 0 THEN
                SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
                RAISE EXCEPTION 'insufficient balance in %', v_address
                    USING ERRCODE = 'LD001', DETAIL = v_address;
            END IF;
            UPDATE account_balances
               SET balance = v_left / v_shards + CASE WHEN shard < v_left % v_shards THEN 1
                                                       ELSE 0 END
             WHERE account_id = NEW.account_id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.execute(APPLY_POSTING)


def downgrade() -> None:
    # The function as the request-path migration wrote it.
    op.execute(load("2026-11-30-1700_request_path.py").APPLY_POSTING)
