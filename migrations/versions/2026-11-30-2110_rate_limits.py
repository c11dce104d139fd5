"""Rate limits shared by every worker.

- `rate_counters`: hits per subject (a partner, a source address) per fixed window, one row for
  each database connection that counted some, so that concurrent requests never wait on one
  another's counter; the sum of a window's rows is the subject's count. Unlogged: counters are
  worth nothing after a crash, and writing them costs no WAL.
- `rate_hit` counts hits (one by default; a process adds its partners' requests a batch at a
  time) and returns the window's total with the seconds left in the window; `rate_count` reads
  the total without counting. Both take the instant (the database's clock by default): the
  caller's clock then decides the window, and a window's edges can be tested without waiting.

Revision ID: 0010_rate_limits
Revises: 0009_tamper_evidence
Create Date: 2026-11-30 21:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_rate_limits"
down_revision: str | None = "0009_tamper_evidence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
CREATE UNLOGGED TABLE rate_counters (
    subject text NOT NULL,
    window_start timestamptz NOT NULL,
    backend integer NOT NULL,
    hits integer NOT NULL,
    CONSTRAINT rate_counters_pkey PRIMARY KEY (subject, window_start, backend)
);

CREATE FUNCTION rate_window(p_seconds integer, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM p_at) / p_seconds) * p_seconds)
$$;

CREATE FUNCTION rate_count(
    p_subject text, p_seconds integer, p_at timestamptz DEFAULT clock_timestamp()
) RETURNS TABLE (hits integer, retry_after integer) LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(c.hits), 0)::integer,
           ceil(extract(epoch FROM rate_window(p_seconds, p_at) - p_at) + p_seconds)::integer
      FROM rate_counters c
     WHERE c.subject = p_subject AND c.window_start = rate_window(p_seconds, p_at)
$$;

-- PL/pgSQL rather than SQL: its statements' plans are kept for the connection (rate_count
-- inlined into the second), where a two-statement SQL function's would be made again on every
-- call (a fifth of a millisecond, on every request).
CREATE FUNCTION rate_hit(
    p_subject text, p_seconds integer, p_hits integer DEFAULT 1,
    p_at timestamptz DEFAULT clock_timestamp()
) RETURNS TABLE (hits integer, retry_after integer) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rate_counters AS c (subject, window_start, backend, hits)
    VALUES (p_subject, rate_window(p_seconds, p_at), pg_backend_pid(), p_hits)
    ON CONFLICT (subject, window_start, backend) DO UPDATE SET hits = c.hits + p_hits;
    RETURN QUERY SELECT * FROM rate_count(p_subject, p_seconds, p_at);
END
$$;
"""

DOWNGRADE = """
DROP FUNCTION rate_hit(text, integer, integer, timestamptz);
DROP FUNCTION rate_count(text, integer, timestamptz);
DROP FUNCTION rate_window(integer, timestamptz);
DROP TABLE rate_counters;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
