"""Sealed blocks of the journal, and the read-only role that auditors' requests run under.

The role `clearinghouse_readonly` (NOLOGIN) may read every table and write none; the
application's own role is made a member, so that an auditor's transaction can `SET LOCAL ROLE`
to it: a bug in an audit route then meets PostgreSQL's own refusal. Roles belong to the whole
server, so the role is created only if missing and is left in place on downgrade.

Revision ID: 0005_audit
Revises: 0004_settlement
Create Date: 2026-11-25 17:39:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_audit"
down_revision: str | None = "0004_settlement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seal_blocks",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(), nullable=False),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "sealed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("seal_blocks_pkey")),
        sa.UniqueConstraint("block_hash", name=op.f("seal_blocks_block_hash_key")),
    )
    op.create_table(
        "seal_items",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_number"], ["seal_blocks.number"], name=op.f("seal_items_block_number_fkey")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("seal_items_pkey")),
        sa.UniqueConstraint(
            "block_number", "position", name=op.f("seal_items_block_number_position_key")
        ),
    )

    op.execute(
        """
        CREATE TRIGGER seal_blocks_append_only BEFORE UPDATE OR DELETE ON seal_blocks
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER seal_items_append_only BEFORE UPDATE OR DELETE ON seal_items
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clearinghouse_readonly') THEN
                CREATE ROLE clearinghouse_readonly NOLOGIN;
            END IF;
        EXCEPTION
            -- Another database on the same server created it at the same moment.
            WHEN duplicate_object OR unique_violation THEN NULL;
        END
        $$;
        GRANT USAGE ON SCHEMA public TO clearinghouse_readonly;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO clearinghouse_readonly;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO clearinghouse_readonly;
        DO $$
        BEGIN
            GRANT clearinghouse_readonly TO CURRENT_USER;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
        END
        $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            REVOKE SELECT ON TABLES FROM clearinghouse_readonly;
        REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM clearinghouse_readonly;
        REVOKE USAGE ON SCHEMA public FROM clearinghouse_readonly;
        """
    )
    op.drop_table("seal_items")
    op.drop_table("seal_blocks")
