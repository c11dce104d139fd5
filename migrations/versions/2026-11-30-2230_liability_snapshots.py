"""Daily liability snapshots.

- `liability_snapshots`: one row per closed business day whose liability has been taken, with
  the instant it stands for (the day's cut-off) and when it was taken;
- `liability_snapshot_issuers`: that day's outstanding points by issuing partner (NULL for the
  coalition's own bonuses), one row per issuer with points left, at most one per day and issuer.

The snapshot job fills them, the first run backfilling every day since the first lot; the
liability history reads them instead of the lots for every day but today.

Revision ID: 0012_liability_snapshots
Revises: 0010_rate_limits
Create Date: 2026-11-30 22:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_liability_snapshots"
down_revision: str | None = "0010_rate_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE liability_snapshots (
            business_date date NOT NULL,
            as_of timestamptz NOT NULL,
            taken_at timestamptz NOT NULL,
            CONSTRAINT liability_snapshots_pkey PRIMARY KEY (business_date)
        );
        CREATE TABLE liability_snapshot_issuers (
            business_date date NOT NULL,
            issuer_partner_id text,
            points bigint NOT NULL,
            CONSTRAINT liability_snapshot_issuers_business_date_fkey FOREIGN KEY (business_date)
                REFERENCES liability_snapshots (business_date),
            CONSTRAINT liability_snapshot_issuers_issuer_partner_id_fkey
                FOREIGN KEY (issuer_partner_id) REFERENCES partners (id),
            CONSTRAINT liability_snapshot_issuers_business_date_issuer_partner_id_key
                UNIQUE NULLS NOT DISTINCT (business_date, issuer_partner_id),
            CONSTRAINT liability_snapshot_issuers_points_positive_check CHECK (points > 0)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE liability_snapshot_issuers; DROP TABLE liability_snapshots;")
