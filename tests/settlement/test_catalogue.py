"""Catalogue orders settle as their own categories: a confirmed order (`reward_order`) is owed to
its supplier at the order's value, a returned one (`reward_order_return`) owed back, each in
columns of its own beside the supplier's ordinary redemptions, and the day stays zero-sum."""

from __future__ import annotations

from sqlalchemy import select

from clearinghouse import clock, ledger
from clearinghouse.members.service import available_account, held_account
from clearinghouse.points import holds, lots
from clearinghouse.points.tables import holds as holds_table
from clearinghouse.settleable import Settleable
from settlement.tables import settlement_lines
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.ids import unique_id
from tests.builders.settlement import a_day_of_traffic, settle_after_cutoff

UNIT_POINTS = 500
UNIT_VALUE_FEN = 450
QUANTITY = 2


def test_catalogue_orders_and_returns_settle_in_their_own_columns_zero_sum(world: World) -> None:
    traffic = a_day_of_traffic(world)
    supplier = traffic.receiver.id
    redeemed = str(ledger.Address.partner(supplier, "redeemed"))
    ordered = QUANTITY * UNIT_POINTS
    # The member orders two units at the payer's front end: the points are held, then the
    # confirmed order moves them to the supplier, owed the units' value.
    with world.sessions() as session, session.begin():
        hold = holds.place_hold(
            session, traffic.payer.id, traffic.member_id, ordered, key=unique_id("k")
        )
        ledger.post(
            session,
            ledger.Entry(
                kind="reward_order",
                origin=f"partner:{traffic.payer.id}",
                idempotency_key=unique_id("order"),
                postings=[
                    ledger.Posting(held_account(traffic.member_id), -ordered),
                    ledger.Posting(redeemed, ordered),
                ],
                occurred_at=clock.now(),
                metadata={
                    **Settleable(supplier, QUANTITY * UNIT_VALUE_FEN).to_metadata(),
                    "member_id": traffic.member_id,
                },
            ),
        )
    # One unit comes back: its points return to the member's lots, its value is owed back.
    with world.sessions() as session, session.begin():
        hold_entry_id = session.execute(
            select(holds_table.c.hold_entry_id).where(holds_table.c.id == hold.id)
        ).scalar_one()
        returned = ledger.post(
            session,
            ledger.Entry(
                kind="reward_order_return",
                origin=f"partner:{traffic.payer.id}",
                idempotency_key=unique_id("return"),
                postings=[
                    ledger.Posting(redeemed, -UNIT_POINTS),
                    ledger.Posting(available_account(traffic.member_id), UNIT_POINTS),
                ],
                occurred_at=clock.now(),
                metadata={
                    **Settleable(supplier, UNIT_VALUE_FEN).to_metadata(),
                    "member_id": traffic.member_id,
                },
            ),
        )
        lots.restore(session, lots.movements_of(session, hold_entry_id), UNIT_POINTS, returned.id)

    [run] = settle_after_cutoff(world.sessions, business_today())

    assert run.entries == 4
    lines = {line.partner_id: line for line in run.lines}
    line = lines[supplier]
    # The supplier's redemption at its own till stays in `redeemed`, apart from the catalogue.
    assert (line.redeemed_points, line.redeemed_fen) == (300, traffic.redeemed_fen)
    assert (line.catalogue_points, line.catalogue_fen) == (ordered, QUANTITY * UNIT_VALUE_FEN)
    assert (line.catalogue_returned_points, line.catalogue_returned_fen) == (
        UNIT_POINTS,
        UNIT_VALUE_FEN,
    )
    # The supplier receives what the orders owe it, less what the return owes back.
    assert line.net_fen == -traffic.redeemed_fen - QUANTITY * UNIT_VALUE_FEN + UNIT_VALUE_FEN
    payer = lines[traffic.payer.id]
    assert (payer.catalogue_fen, payer.catalogue_returned_fen) == (0, 0)
    assert payer.net_fen == traffic.issued_fen

    # The partners' nets and the coalition's revenue, as posted, cancel to the fen.
    assert run.coalition_fen == (
        traffic.issued_fen - traffic.redeemed_fen - QUANTITY * UNIT_VALUE_FEN + UNIT_VALUE_FEN
    )
    assert run.zero_sum
    with world.sessions() as session:
        stored = session.execute(
            select(settlement_lines).where(
                settlement_lines.c.run_id == run.id, settlement_lines.c.partner_id == supplier
            )
        ).one()
        assert ledger.balance(session, f"partner:{supplier}:payable") == line.net_fen
    assert (
        stored.catalogue_points,
        stored.catalogue_fen,
        stored.catalogue_returned_points,
        stored.catalogue_returned_fen,
        stored.net_fen,
    ) == (ordered, QUANTITY * UNIT_VALUE_FEN, UNIT_POINTS, UNIT_VALUE_FEN, line.net_fen)
