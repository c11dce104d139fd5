"""Refunds: purchase refunds claw points back in proportion (spent points become a debt that
later accruals repay first); refunded redemptions give points back to the lots they came from."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import lots
from clearinghouse.points.tables import purchases, refunds
from partners.client import PartnerClient
from tests.builders import calls
from tests.builders.calls import buy, enrol, view
from tests.builders.dates import earlier_month, end_of_month_after, instant
from tests.builders.http import assert_problem, client_for
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.points import redeemed_account, wallet_of


def test_a_partial_refund_claws_back_points_in_proportion(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]  # 1,540 points
    half = calls.refund(client, txn, 26_000)
    assert (half["points"], half["from_available"], half["to_debt"]) == (770, 770, 0)
    assert half["value_fen"] == 770
    assert wallet_of(sessions, member_id) == (770, 0, 0)


def test_partial_refunds_adding_up_to_the_whole_claw_back_exactly_all_points(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]
    first = calls.refund(client, txn, 17_333)
    assert first["points"] == 513  # 1,540 x 17,333 / 52,000 = 513.3, rounded down
    second = calls.refund(client, txn, 52_000 - 17_333)
    assert second["points"] == 1_540 - 513
    assert first["value_fen"] + second["value_fen"] == 1_540

    assert wallet_of(sessions, member_id) == (0, 0, 0)
    assert client.get(f"/v1/members/{member_id}/lots") == []
    purchase = client.get(f"/v1/purchases/{txn}")
    assert (purchase["refunded_fen"], purchase["refunded_points"]) == (52_000, 1_540)
    with sessions() as session:
        row = session.execute(
            select(purchases.c.refunded_value_fen, purchases.c.issue_value_fen).where(
                purchases.c.partner_id == partner.id, purchases.c.partner_txn_id == txn
            )
        ).one()
    assert row.refunded_value_fen == row.issue_value_fen


def test_a_refund_reported_again_returns_the_first_answer(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]
    first = calls.refund(client, txn, 26_000, refund_id="r-1")
    assert calls.refund(client, txn, 26_000, refund_id="r-1") == first
    assert wallet_of(sessions, member_id) == (770, 0, 0)


def test_a_refund_beyond_the_purchase_is_409(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]
    body = {"refund_id": unique_id("r"), "amount_fen": 52_001}
    response = http.send(client.build("POST", f"/v1/purchases/{txn}/refunds", body=body))
    assert_problem(response, 409, "refund_exceeds_original")

    calls.refund(client, txn, 30_000)
    body = {"refund_id": unique_id("r"), "amount_fen": 22_001}
    response = http.send(client.build("POST", f"/v1/purchases/{txn}/refunds", body=body))
    assert_problem(response, 409, "refund_exceeds_original")
    assert client.get(f"/v1/purchases/{txn}")["refunded_fen"] == 30_000


def test_a_refund_of_an_unknown_purchase_is_404(client: PartnerClient, http: TestClient) -> None:
    body = {"refund_id": unique_id("r"), "amount_fen": 100}
    response = http.send(client.build("POST", "/v1/purchases/no-such-txn/refunds", body=body))
    assert_problem(response, 404, "purchase_not_found")


def test_the_refund_entry_reverses_the_purchase_entry(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    txn = buy(client, enrol(client), 52_000)["partner_txn_id"]
    refund_id = unique_id("r")
    calls.refund(client, txn, 10_000, refund_id)
    with sessions() as session:
        purchase = session.execute(
            select(purchases.c.id, purchases.c.entry_id).where(
                purchases.c.partner_id == partner.id, purchases.c.partner_txn_id == txn
            )
        ).one()
        refund_entry = session.execute(
            select(refunds.c.entry_id).where(
                refunds.c.purchase_id == purchase.id, refunds.c.partner_refund_id == refund_id
            )
        ).scalar_one()
        entry = session.execute(
            select(journal_entries.c.kind, journal_entries.c.reverses_id).where(
                journal_entries.c.id == refund_entry
            )
        ).one()
    assert (entry.kind, entry.reverses_id) == ("refund", purchase.entry_id)


def test_a_refund_after_the_points_were_spent_leaves_a_debt_that_accruals_repay_first(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]  # 1,540
    client.post("/v1/redemptions", {"member_id": member_id, "points": 1_500})

    refund = calls.refund(client, txn, 52_000)
    assert (refund["points"], refund["from_available"], refund["to_debt"]) == (1_540, 40, 1_500)
    member = view(client, member_id)
    assert (member["available_points"], member["debt_points"]) == (0, 1_500)

    # Month-to-date spend net of the refund is 520 yuan again: 2 a yuan, no second bonus.
    repaying = buy(client, member_id, 52_000)
    assert (repaying["points"], repaying["debt_repaid"]) == (1_040, 1_040)
    assert repaying["lot_expires_at"] is None  # nothing reached the member's lots
    member = view(client, member_id)
    assert (member["available_points"], member["debt_points"]) == (0, 460)

    when = datetime.now(UTC)
    settling = buy(client, member_id, 30_000, occurred_at=when)  # 300 yuan at 2 a yuan
    assert (settling["points"], settling["debt_repaid"]) == (600, 460)
    assert wallet_of(sessions, member_id) == (140, 0, 0)
    # Reported again (another Idempotency-Key): the first answer, its repayment read from the
    # purchase, which keeps it once the entry's month has been archived.
    again = buy(client, member_id, 30_000, occurred_at=when, txn=settling["partner_txn_id"])
    assert (again["points"], again["debt_repaid"]) == (600, 460)
    with sessions() as session:
        kept = session.execute(
            select(purchases.c.partner_txn_id, purchases.c.debt_repaid).where(
                purchases.c.member_id == member_id
            )
        ).all()
    assert sorted(repaid for _, repaid in kept) == [0, 460, 1_040]
    assert [lot["points"] for lot in client.get(f"/v1/members/{member_id}/lots")] == [140]
    with sessions() as session:
        assert lots.check_lots(session) == []


def test_a_refunded_redemption_returns_points_to_their_lots_with_their_expiry(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    now = datetime.now(UTC)
    older = earlier_month(now)
    buy(client, member_id, 10_000, occurred_at=older)  # lot of 600
    buy(client, member_id, 10_000, occurred_at=now)  # lot of 100
    old_expiry, new_expiry = end_of_month_after(older, 24), end_of_month_after(now, 24)

    redemption = client.post("/v1/redemptions", {"member_id": member_id, "points": 650})
    hold_id = redemption["hold_id"]
    assert balance(sessions, redeemed_account(partner.id)) == 650

    def lots_now() -> list[tuple[int, datetime]]:
        found = client.get(f"/v1/members/{member_id}/lots")
        return [(lot["points"], instant(lot["expires_at"])) for lot in found]

    assert lots_now() == [(50, new_expiry)]
    back = client.post(f"/v1/holds/{hold_id}/refunds", {"points": 100})
    assert (back["points"], back["refunded_total"]) == (100, 100)
    # The last taken comes back first: 50 to the newer lot, then 50 to the older one.
    assert lots_now() == [(50, old_expiry), (100, new_expiry)]
    assert wallet_of(sessions, member_id) == (150, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 550

    too_much = client.build("POST", f"/v1/holds/{hold_id}/refunds", body={"points": 551})
    assert_problem(http.send(too_much), 409, "refund_exceeds_original")

    rest = client.post(f"/v1/holds/{hold_id}/refunds", {"points": 550})
    assert rest["refunded_total"] == 650
    assert lots_now() == [(600, old_expiry), (100, new_expiry)]
    assert client.get(f"/v1/holds/{hold_id}")["refunded"] == 650
    one_more = client.build("POST", f"/v1/holds/{hold_id}/refunds", body={"points": 1})
    assert_problem(http.send(one_more), 409, "refund_exceeds_original")
    with sessions() as session:
        assert lots.check_lots(session) == []


def test_a_refunded_partial_capture_returns_at_most_what_was_captured(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    hold = client.post("/v1/holds", {"member_id": member_id, "points": 500})
    client.post(f"/v1/holds/{hold['hold_id']}/capture", {"points": 200})
    too_much = client.build("POST", f"/v1/holds/{hold['hold_id']}/refunds", body={"points": 201})
    assert_problem(http.send(too_much), 409, "refund_exceeds_original")
    client.post(f"/v1/holds/{hold['hold_id']}/refunds", {"points": 200})
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_a_redemption_refunded_in_pieces_gives_back_exactly_the_value_it_paid(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    # Each piece's value_fen (the figure settlement nets) is computed on the running total,
    # so 33 + 33 + 34 points at 0.9 fen give back exactly the 90 fen paid.
    client = client_for(make_partner(sessions, redemption_value="0.9"), http)
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    redemption = client.post("/v1/redemptions", {"member_id": member_id, "points": 100})
    assert redemption["value_fen"] == 90
    for points in (33, 33, 34):
        client.post(f"/v1/holds/{redemption['hold_id']}/refunds", {"points": points})
    with sessions() as session:
        values = session.execute(
            select(journal_entries.c.metadata["value_fen"].as_integer()).where(
                journal_entries.c.kind == "redemption_refund",
                journal_entries.c.metadata["hold_id"].as_string() == redemption["hold_id"],
            )
        ).scalars()
        assert sum(values) == 90


def test_an_open_or_voided_hold_cannot_be_refunded(client: PartnerClient, http: TestClient) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    hold = client.post("/v1/holds", {"member_id": member_id, "points": 500})
    refund = client.build("POST", f"/v1/holds/{hold['hold_id']}/refunds", body={"points": 100})
    assert_problem(http.send(refund), 409, "conflict")
    client.post(f"/v1/holds/{hold['hold_id']}/void", {})
    refund = client.build("POST", f"/v1/holds/{hold['hold_id']}/refunds", body={"points": 100})
    assert_problem(http.send(refund), 409, "conflict")
