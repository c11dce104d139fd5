"""Catalogue orders settle as their own categories: a confirmed order (`reward_order`) owes its
supplier the order's value, a returned one (`reward_order_return`) takes it back.

- `settlement_lines` gets the two categories' points and fen (`catalogue_*`,
  `catalogue_returned_*`): 0 in the lines already stored, and no default after, as the other
  categories' columns have none. The net check counts them with their signs.
- The trigger that queues settleable entries is recreated with the two kinds in its test, and
  any entry of theirs already written is queued, as 0011_settlement_in_sql queued the entries of
  its day.

Revision ID: 0024_catalogue_settlement
Revises: 0023_reward_orders
Create Date: 2026-12-01 17:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024_catalogue_settlement"
down_revision: str | None = "0023_reward_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "catalogue_points",
    "catalogue_fen",
    "catalogue_returned_points",
    "catalogue_returned_fen",
)

# The net check and the settleable kinds, as they were before this revision and as they are
# after it (settlement.categories); a test checks that the trigger and the code agree.
NET_BEFORE = (
    "net_fen = issued_fen - reversed_fen - redeemed_fen + redemption_refunded_fen"
    " + exchange_in_fen - exchange_out_fen"
)
NET = f"{NET_BEFORE} - catalogue_fen + catalogue_returned_fen"

KINDS_BEFORE = (
    "'accrual', 'referral_bonus', 'refund', 'fraud_reversal', 'capture',"
    " 'redemption_refund', 'exchange_in', 'exchange_out'"
)
NEW_KINDS = "'reward_order', 'reward_order_return'"


def _settleable(kinds: str) -> str:
    return f"NEW.kind IN ({kinds}) AND NEW.metadata ? 'partner_id' AND NEW.metadata ? 'value_fen'"


def _trigger(kinds: str) -> str:
    return f"""
        DROP TRIGGER journal_entries_settleable ON journal_entries;
        CREATE TRIGGER journal_entries_settleable AFTER INSERT ON journal_entries
            FOR EACH ROW WHEN ({_settleable(kinds)})
            EXECUTE FUNCTION settlement_enqueue();
        """


def _lines(changes: list[str], net: str) -> str:
    """The statement that makes `changes` to the lines' columns and checks `net` after them."""
    return (
        "ALTER TABLE settlement_lines DROP CONSTRAINT settlement_lines_net_adds_up_check, "
        + ", ".join(changes)
        + f", ADD CONSTRAINT settlement_lines_net_adds_up_check CHECK ({net})"
    )


def upgrade() -> None:
    op.execute(
        _lines([f"ADD COLUMN {column} bigint NOT NULL DEFAULT 0" for column in COLUMNS], NET)
    )
    op.execute(
        "ALTER TABLE settlement_lines "
        + ", ".join(f"ALTER COLUMN {column} DROP DEFAULT" for column in COLUMNS)
    )
    op.execute(_trigger(f"{KINDS_BEFORE}, {NEW_KINDS}"))
    op.execute(
        f"""
        INSERT INTO unsettled_entries (entry_id, recorded_at)
        SELECT e.id, e.recorded_at
          FROM journal_entries AS e
         WHERE {_settleable(NEW_KINDS).replace("NEW.", "e.")}
        """
    )


def downgrade() -> None:
    # Entries of the two kinds left unsettled would be taken by a run that no longer values them.
    op.execute(
        f"""
        DELETE FROM unsettled_entries AS u
         USING journal_entries AS e
         WHERE e.id = u.entry_id AND e.kind IN ({NEW_KINDS})
        """
    )
    op.execute(_trigger(KINDS_BEFORE))
    op.execute(_lines([f"DROP COLUMN {column}" for column in COLUMNS], NET_BEFORE))
