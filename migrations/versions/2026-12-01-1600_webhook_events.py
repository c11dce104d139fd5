"""Webhook events for members' points, keys and reconciliation: what a receiver needs to order
them, reminders sent once, redeliveries on record, and each partner's reminder horizon.

`webhook_events.sequence` comes from one sequence, taken in the transaction of the change: the
changes to one member are serialised by the member's lock, so their events' sequence numbers
follow the order of the changes. `dedupe_key` makes an event that must be sent once (a reminder
of points expiring on a date, a key's retirement) a no-op when emitted again.
`partners.expiring_notice_days` is how many days ahead a partner hears of its members' points
expiring (`points.expiring`).

`webhook_endpoints` becomes reference data (clearinghouse.reference): who subscribes to what is
kept in each process, so a change that no endpoint hears of writes no event and costs no
statement.

Revision ID: 0021_webhook_events
Revises: 0020_webhooks
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_webhook_events"
down_revision: str | None = "0020_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SUBSCRIPTIONS = "partner_id, event_types, status"
"""The columns of webhook_endpoints whose change moves its reference version (not the worker's
notes of failure)."""


def upgrade() -> None:
    op.execute(
        "INSERT INTO reference_versions (name, version)"
        " VALUES ('webhook_endpoints', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    )
    op.execute(
        "CREATE TRIGGER webhook_endpoints_reference_touch"
        f" AFTER INSERT OR UPDATE OF {SUBSCRIPTIONS} OR DELETE OR TRUNCATE ON webhook_endpoints"
        " FOR EACH STATEMENT EXECUTE FUNCTION reference_touch()"
    )
    op.execute("CREATE SEQUENCE webhook_event_sequence")
    op.add_column(
        "webhook_events",
        sa.Column(
            "sequence",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("nextval('webhook_event_sequence')"),
        ),
    )
    op.add_column("webhook_events", sa.Column("dedupe_key", sa.Text()))
    op.create_unique_constraint(
        op.f("webhook_events_partner_id_dedupe_key_key"),
        "webhook_events",
        ["partner_id", "dedupe_key"],
    )
    op.add_column("webhook_deliveries", sa.Column("redelivered_at", sa.DateTime(timezone=True)))
    op.add_column(
        "partners",
        sa.Column(
            "expiring_notice_days",
            sa.SmallInteger(),
            nullable=False,
            server_default=sa.text("14"),
        ),
    )
    op.create_check_constraint(
        op.f("partners_expiring_notice_days_range_check"),
        "partners",
        "expiring_notice_days BETWEEN 1 AND 90",
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER webhook_endpoints_reference_touch ON webhook_endpoints")
    op.execute("DELETE FROM reference_versions WHERE name = 'webhook_endpoints'")
    op.drop_column("partners", "expiring_notice_days")
    op.drop_column("webhook_deliveries", "redelivered_at")
    op.drop_column("webhook_events", "dedupe_key")
    op.drop_column("webhook_events", "sequence")
    op.execute("DROP SEQUENCE webhook_event_sequence")
