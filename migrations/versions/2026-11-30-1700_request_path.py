"""The partner request path in one transaction.

- `reference_versions`: a version per table of reference data (partners, keys, stores, rates,
  rule sets, risk thresholds), moved by a trigger in the transaction that changes the table, so
  that every process can keep these tables in memory and know, from one cheap read, whether its
  copy is current (clearinghouse.reference). The first versions come from the clock, so that a
  database created again under the same name never matches a copy of the old one.
- `idempotency_records` keep only answers: a request's answer is written in the transaction
  that does its work, so a claim with a lease is no longer needed. Requests with one key wait
  for each other on a transaction-scoped advisory lock instead.
- `partner_request_open` spends a request's nonce, reads the reference versions and takes its
  idempotency key, returning the stored answer when there is one: the first statement of every
  partner request.

Revision ID: 0008_request_path
Revises: 0007_console
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0008_request_path"
down_revision: str | None = "0007_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables of reference data, and the columns whose change matters to a copy of them
# (None: any change). A key's last_used_at is not among them.
REFERENCE_TABLES: dict[str, tuple[str, ...] | None] = {
    "partners": None,
    "partner_keys": ("partner_id", "algorithm", "public_key", "status", "retire_at"),
    "stores": None,
    "partner_rates": None,
    "rule_sets": None,
    "fraud_thresholds": None,
}

# The advisory lock class of idempotency keys (the two-integer lock space).
IDEMPOTENCY_LOCK_CLASS = 1

REFERENCE_VERSIONS = """
CREATE TABLE reference_versions (
    name text CONSTRAINT reference_versions_pkey PRIMARY KEY,
    version bigint NOT NULL
);

CREATE FUNCTION reference_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reference_versions SET version = version + 1 WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END
$$;
"""

REQUEST_OPEN = f"""
CREATE FUNCTION partner_request_open(
    p_key_id text, p_nonce text, p_partner_id text, p_key text, p_request_hash bytea
) RETURNS TABLE (
    outcome text, versions jsonb, response_status integer, response_headers jsonb,
    response_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    v_versions jsonb;
    v_record idempotency_records%ROWTYPE;
BEGIN
    INSERT INTO request_nonces (key_id, nonce) VALUES (p_key_id, p_nonce) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'nonce_replayed', NULL::jsonb, NULL::integer, NULL::jsonb,
                            NULL::bytea;
        RETURN;
    END IF;
    SELECT jsonb_object_agg(name, version) INTO v_versions FROM reference_versions;
    IF p_key IS NOT NULL THEN
        -- A second request with the key waits here until the first commits or rolls back,
        -- then reads its answer (each statement of this function sees what has committed).
        PERFORM pg_advisory_xact_lock({IDEMPOTENCY_LOCK_CLASS},
                                      hashtext(p_partner_id || ' ' || p_key));
        SELECT * INTO v_record FROM idempotency_records r
         WHERE r.partner_id = p_partner_id AND r.key = p_key;
        IF FOUND THEN
            IF v_record.request_hash <> p_request_hash THEN
                RETURN QUERY SELECT 'reused', v_versions, NULL::integer, NULL::jsonb,
                                    NULL::bytea;
            ELSE
                RETURN QUERY SELECT 'replay', v_versions, v_record.response_status,
                                    v_record.response_headers, v_record.response_body;
            END IF;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT 'new', v_versions, NULL::integer, NULL::jsonb, NULL::bytea;
END
$$;
"""


def _reference_triggers() -> str:
    statements = []
    for table, columns in REFERENCE_TABLES.items():
        update = "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"
        statements.append(
            f"CREATE TRIGGER {table}_reference_touch "
            f"AFTER INSERT OR {update} OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION reference_touch();"
        )
    return "\n".join(statements)


def upgrade() -> None:
    op.execute(REFERENCE_VERSIONS)
    op.execute(
        text(
            "INSERT INTO reference_versions (name, version) "
            "SELECT name, (extract(epoch FROM clock_timestamp()) * 1000)::bigint "
            "FROM unnest(CAST(:names AS text[])) AS name"
        ).bindparams(names=list(REFERENCE_TABLES))
    )
    op.execute(_reference_triggers())
    op.execute(
        """
        DELETE FROM idempotency_records WHERE state = 'in_progress';
        ALTER TABLE idempotency_records
            DROP CONSTRAINT idempotency_records_response_when_done_check,
            DROP CONSTRAINT idempotency_records_state_known_check,
            DROP COLUMN state,
            DROP COLUMN lease_until,
            DROP COLUMN completed_at,
            ALTER COLUMN response_status SET NOT NULL,
            ALTER COLUMN response_headers SET NOT NULL,
            ALTER COLUMN response_body SET NOT NULL;
        """
    )
    op.execute(REQUEST_OPEN)


def downgrade() -> None:
    op.execute("DROP FUNCTION partner_request_open(text, text, text, text, bytea)")
    op.execute(
        """
        ALTER TABLE idempotency_records
            ADD COLUMN state text NOT NULL DEFAULT 'done',
            ADD COLUMN lease_until timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN completed_at timestamptz,
            ALTER COLUMN response_status DROP NOT NULL,
            ALTER COLUMN response_headers DROP NOT NULL,
            ALTER COLUMN response_body DROP NOT NULL,
            ADD CONSTRAINT idempotency_records_state_known_check
                CHECK (state IN ('in_progress', 'done')),
            ADD CONSTRAINT idempotency_records_response_when_done_check
                CHECK ((state = 'done') = (response_status IS NOT NULL));
        ALTER TABLE idempotency_records ALTER COLUMN state DROP DEFAULT,
            ALTER COLUMN lease_until DROP DEFAULT;
        """
    )
    for table in REFERENCE_TABLES:
        op.execute(f"DROP TRIGGER {table}_reference_touch ON {table}")
    op.execute("DROP FUNCTION reference_touch(); DROP TABLE reference_versions;")
