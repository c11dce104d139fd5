"""Tamper evidence that cannot be fooled.

- the seal tables refuse TRUNCATE, as the journal does (UPDATE and DELETE were refused already):
  emptying them would leave a journal with no seals that verification could mistake for one
  not sealed yet;
- the read-only role reads `users` by column, without `password_hash` and `token_digest`:
  auditors have no need for credentials, even hashed.

Revision ID: 0009_tamper_evidence
Revises: 0008_request_path
Create Date: 2026-11-30 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_tamper_evidence"
down_revision: str | None = "0008_request_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every column of users but the credentials.
READABLE_USER_COLUMNS = "id, role, created_at, disabled_at, password_changed_at"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TRIGGER seal_blocks_no_truncate BEFORE TRUNCATE ON seal_blocks
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER seal_items_no_truncate BEFORE TRUNCATE ON seal_items
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
        REVOKE SELECT ON users FROM clearinghouse_readonly;
        GRANT SELECT ({READABLE_USER_COLUMNS}) ON users TO clearinghouse_readonly;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        -- Revoking the table's privilege takes the column privileges with it.
        REVOKE SELECT ON users FROM clearinghouse_readonly;
        GRANT SELECT ON users TO clearinghouse_readonly;
        DROP TRIGGER seal_items_no_truncate ON seal_items;
        DROP TRIGGER seal_blocks_no_truncate ON seal_blocks;
        """
    )
