"""Partners, stores, effective-dated conversion rates, API keys, request nonces, members and
their links to partners, and stored answers for idempotent requests.

Rates are never edited in place: a new version supersedes the old, and the database refuses
UPDATE and DELETE on them.

Revision ID: 0002_partners
Revises: 0001_ledger
Create Date: 2026-11-25 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_partners"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id ~ '^M[0-9A-Z]{12}$'", name=op.f("members_id_format_check")),
        sa.PrimaryKeyConstraint("id", name=op.f("members_pkey")),
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "id ~ '^[a-z0-9][a-z0-9_-]{1,39}$'", name=op.f("partners_id_format_check")
        ),
        sa.CheckConstraint(
            "kind IN ('online_merchant', 'store_chain', 'programme', 'charity')",
            name=op.f("partners_kind_known_check"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("partners_status_known_check")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("partners_pkey")),
    )
    op.create_table(
        "request_nonces",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("key_id", "nonce", name=op.f("request_nonces_pkey")),
    )
    op.create_index("ix_request_nonces_seen_at", "request_nonces", ["seen_at"], unique=False)
    op.create_table(
        "idempotency_records",
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(state = 'done') = (response_status IS NOT NULL)",
            name=op.f("idempotency_records_response_when_done_check"),
        ),
        sa.CheckConstraint(
            "state IN ('in_progress', 'done')", name=op.f("idempotency_records_state_known_check")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("idempotency_records_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("partner_id", "key", name=op.f("idempotency_records_pkey")),
    )
    op.create_index(
        "ix_idempotency_records_created_at", "idempotency_records", ["created_at"], unique=False
    )
    op.create_table(
        "member_links",
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("customer_ref", sa.Text(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column(
            "linked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "length(customer_ref) BETWEEN 1 AND 100",
            name=op.f("member_links_customer_ref_length_check"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("member_links_member_id_fkey")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("member_links_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("partner_id", "customer_ref", name=op.f("member_links_pkey")),
        sa.UniqueConstraint(
            "partner_id", "member_id", name=op.f("member_links_partner_id_member_id_key")
        ),
    )
    op.create_index("ix_member_links_member_id", "member_links", ["member_id"], unique=False)
    op.create_table(
        "partner_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("algorithm", sa.Text(), server_default=sa.text("'ed25519'"), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("retire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'retiring') = (retire_at IS NOT NULL)",
            name=op.f("partner_keys_retire_at_present_check"),
        ),
        sa.CheckConstraint(
            "algorithm = 'ed25519'", name=op.f("partner_keys_algorithm_known_check")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'retiring', 'revoked')",
            name=op.f("partner_keys_status_known_check"),
        ),
        sa.CheckConstraint(
            "octet_length(public_key) = 32", name=op.f("partner_keys_public_key_length_check")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("partner_keys_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("partner_keys_pkey")),
        sa.UniqueConstraint("public_key", name=op.f("partner_keys_public_key_key")),
    )
    op.create_index("ix_partner_keys_partner_id", "partner_keys", ["partner_id"], unique=False)
    op.create_table(
        "partner_rates",
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("earn_rate", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("issue_price", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("redemption_value", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("exchange_rate", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("earn_rate >= 0", name=op.f("partner_rates_earn_rate_range_check")),
        sa.CheckConstraint(
            "exchange_rate IS NULL OR exchange_rate > 0",
            name=op.f("partner_rates_exchange_rate_range_check"),
        ),
        sa.CheckConstraint("issue_price >= 0", name=op.f("partner_rates_issue_price_range_check")),
        sa.CheckConstraint(
            "redemption_value >= 0", name=op.f("partner_rates_redemption_value_range_check")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("partner_rates_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("partner_id", "version", name=op.f("partner_rates_pkey")),
        sa.UniqueConstraint(
            "partner_id", "effective_from", name=op.f("partner_rates_partner_id_effective_from_key")
        ),
    )
    op.create_table(
        "stores",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("latitude", sa.Double(), nullable=True),
        sa.Column("longitude", sa.Double(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "channel IN ('online', 'offline', 'terminal')", name=op.f("stores_channel_known_check")
        ),
        sa.CheckConstraint(
            "id ~ '^[a-z0-9][a-z0-9_-]{1,39}$'", name=op.f("stores_id_format_check")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("stores_status_known_check")
        ),
        sa.CheckConstraint("latitude BETWEEN -90 AND 90", name=op.f("stores_latitude_range_check")),
        sa.CheckConstraint(
            "longitude BETWEEN -180 AND 180", name=op.f("stores_longitude_range_check")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("stores_partner_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("stores_pkey")),
    )
    op.create_index("ix_stores_partner_id", "stores", ["partner_id"], unique=False)
    op.execute(
        """
        CREATE TRIGGER partner_rates_append_only BEFORE UPDATE OR DELETE ON partner_rates
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER partner_rates_no_truncate BEFORE TRUNCATE ON partner_rates
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
        """
    )


def downgrade() -> None:
    op.drop_index("ix_stores_partner_id", table_name="stores")
    op.drop_table("stores")
    op.drop_table("partner_rates")
    op.drop_index("ix_partner_keys_partner_id", table_name="partner_keys")
    op.drop_table("partner_keys")
    op.drop_index("ix_member_links_member_id", table_name="member_links")
    op.drop_table("member_links")
    op.drop_index("ix_idempotency_records_created_at", table_name="idempotency_records")
    op.drop_table("idempotency_records")
    op.drop_index("ix_request_nonces_seen_at", table_name="request_nonces")
    op.drop_table("request_nonces")
    op.drop_table("partners")
    op.drop_table("members")
