"""Offline redemptions: approved at a till while it was offline, reported later (in a batch, or
alone: POST /v1/offline-redemptions). Within the store's offline allowance (points per member
per business day) they overdraw the member, the shortfall becoming points debt; beyond it they
are one-step redemptions like any other."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import InvalidRequest
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import lots
from clearinghouse.points.offline import OfflineRedemption
from clearinghouse.points.tables import holds, lot_movements, offline_redemptions
from clearinghouse.settleable import Settleable
from partners.auth import KeyScope
from partners.client import PartnerClient
from tests.builders.calls import enrol
from tests.builders.fraud import assert_books_balanced, cases_of, decided, publish, rule_names
from tests.builders.http import client_for, refused
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.partners import ApiPartner, add_key, add_store, set_offline_allowance
from tests.builders.points import (
    accrue,
    new_member,
    redeem_offline,
    redeemed_account,
    refund_redemption,
    wallet_of,
)
from tests.builders.users import staff

ALLOWANCE = 5_000


@pytest.fixture
def store(sessions: sessionmaker[Session], partner: ApiPartner) -> str:
    """The partner's store, with an offline allowance of ALLOWANCE points."""
    set_offline_allowance(sessions, partner.store_id, ALLOWANCE)
    return partner.store_id


def member_with(
    sessions: sessionmaker[Session], partner: ApiPartner, amount_fen: int
) -> tuple[str, int]:
    """A member of the partner with the points of one purchase; (member id, points)."""
    member_id = new_member(sessions, [partner.id])
    return member_id, accrue(sessions, partner.id, member_id, amount_fen).points


def offline_rows(sessions: sessionmaker[Session], member_id: str) -> int:
    with sessions() as session:
        return int(
            session.execute(
                select(func.count()).where(offline_redemptions.c.member_id == member_id)
            ).scalar_one()
        )


def lots_given(sessions: sessionmaker[Session], hold_id: str) -> int:
    """The points the hold's entry took from the member's lots."""
    with sessions() as session:
        taken = session.execute(
            select(func.coalesce(func.sum(lot_movements.c.amount), 0))
            .select_from(
                lot_movements.join(holds, holds.c.hold_entry_id == lot_movements.c.entry_id)
            )
            .where(holds.c.id == hold_id)
        ).scalar_one()
    return -int(taken)


def test_within_the_allowance_the_shortfall_becomes_debt(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str, manual_clock: clock.Manual
) -> None:
    member_id, points = member_with(sessions, partner, 20_000)
    spent = points + 300
    redeemed_before = balance(sessions, redeemed_account(partner.id))

    redemption = redeem_offline(
        sessions,
        partner.id,
        member_id,
        spent,
        store_id=store,
        occurred_at=manual_clock() - timedelta(hours=2),
    )

    assert (redemption.state, redemption.captured) == ("captured", spent)
    assert (redemption.debt_incurred, redemption.allowance_left) == (300, ALLOWANCE - spent)
    assert redemption.review_case_id is None
    assert wallet_of(sessions, member_id) == (0, 0, 300)
    assert balance(sessions, redeemed_account(partner.id)) == redeemed_before + spent
    assert lots_given(sessions, redemption.id) == points
    # Settled at the full points' redemption value (1 fen a point), as any capture.
    assert redemption.value_fen == spent
    with sessions() as session:
        close = session.execute(
            select(holds.c.close_entry_id).where(holds.c.id == redemption.id)
        ).scalar_one()
        metadata = session.execute(
            select(journal_entries.c.metadata).where(journal_entries.c.id == close)
        ).scalar_one()
        assert lots.open_lots(session, member_id) == []
    assert Settleable.from_metadata(metadata) == Settleable(partner.id, spent)
    assert_books_balanced(sessions)


def test_covered_points_come_from_the_lots_and_no_debt_is_left(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id, points = member_with(sessions, partner, 52_000)
    redemption = redeem_offline(sessions, partner.id, member_id, 500, store_id=store)
    assert (redemption.state, redemption.debt_incurred) == ("captured", 0)
    assert wallet_of(sessions, member_id) == (points - 500, 0, 0)
    assert_books_balanced(sessions)


def test_beyond_the_allowance_an_overdraft_is_refused_and_nothing_is_written(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id, points = member_with(sessions, partner, 20_000)
    with pytest.raises(ledger.InsufficientFunds):
        redeem_offline(sessions, partner.id, member_id, ALLOWANCE + 100, store_id=store)
    assert wallet_of(sessions, member_id) == (points, 0, 0)
    assert offline_rows(sessions, member_id) == 0


def test_without_an_allowance_it_is_a_plain_one_step_redemption(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    member_id, points = member_with(sessions, partner, 20_000)
    with pytest.raises(ledger.InsufficientFunds):
        redeem_offline(sessions, partner.id, member_id, points + 1, store_id=partner.store_id)
    redemption = redeem_offline(sessions, partner.id, member_id, points, store_id=partner.store_id)
    assert (redemption.state, redemption.debt_incurred, redemption.allowance_left) == (
        "captured",
        0,
        0,
    )
    assert wallet_of(sessions, member_id) == (0, 0, 0)


def test_the_day_counts_every_offline_redemption_at_the_store(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id = new_member(sessions, [partner.id])
    first = redeem_offline(sessions, partner.id, member_id, 3_000, store_id=store)
    assert (first.debt_incurred, first.allowance_left) == (3_000, 2_000)
    # 3,000 + 2,500 passes the day's allowance: the member's (no) points must cover it.
    with pytest.raises(ledger.InsufficientFunds):
        redeem_offline(sessions, partner.id, member_id, 2_500, store_id=store)
    second = redeem_offline(sessions, partner.id, member_id, 2_000, store_id=store)
    assert (second.debt_incurred, second.allowance_left) == (2_000, 0)
    assert wallet_of(sessions, member_id) == (0, 0, 5_000)

    # Another store of the partner has an allowance of its own.
    elsewhere = add_store(sessions, partner.id)
    set_offline_allowance(sessions, elsewhere, 300)
    third = redeem_offline(sessions, partner.id, member_id, 300, store_id=elsewhere)
    assert (third.debt_incurred, third.allowance_left) == (300, 0)


def test_the_business_day_is_the_coalitions_of_the_approval(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str, manual_clock: clock.Manual
) -> None:
    zone = get_settings().zone
    local = manual_clock().astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    manual_clock.set(midnight + timedelta(hours=9))
    member_id = new_member(sessions, [partner.id])

    def at(instant: datetime, points: int) -> OfflineRedemption:
        return redeem_offline(
            sessions, partner.id, member_id, points, store_id=store, occurred_at=instant
        )

    # 23:30 yesterday and 00:30 today, local time: two days, two allowances.
    yesterday = at(midnight - timedelta(minutes=30), 4_000)
    today = at(midnight + timedelta(minutes=30), 4_000)
    assert (yesterday.allowance_left, today.allowance_left) == (1_000, 1_000)
    with pytest.raises(ledger.InsufficientFunds):
        at(midnight + timedelta(hours=8), 1_500)
    assert wallet_of(sessions, member_id) == (0, 0, 8_000)


def test_a_replay_returns_the_first_answer_and_writes_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id, points = member_with(sessions, partner, 20_000)
    key = unique_id("offline")
    first = redeem_offline(sessions, partner.id, member_id, points + 900, store_id=store, key=key)
    again = redeem_offline(sessions, partner.id, member_id, points + 900, store_id=store, key=key)
    assert again == first
    assert wallet_of(sessions, member_id) == (0, 0, 900)
    assert offline_rows(sessions, member_id) == 1


def test_the_next_accrual_repays_the_debt_first(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id = new_member(sessions, [partner.id])
    redemption = redeem_offline(sessions, partner.id, member_id, 800, store_id=store)
    assert redemption.debt_incurred == 800

    accrual = accrue(sessions, partner.id, member_id, 52_000)
    assert accrual.debt_repaid == 800
    assert wallet_of(sessions, member_id) == (accrual.points - 800, 0, 0)
    assert_books_balanced(sessions)


def test_an_approval_too_old_or_in_the_future_is_refused(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str, manual_clock: clock.Manual
) -> None:
    member_id = new_member(sessions, [partner.id])
    for when, detail in (
        (manual_clock() + timedelta(hours=1), "future"),
        (manual_clock() - timedelta(days=31), "older than 30 days"),
    ):
        with pytest.raises(InvalidRequest, match=detail):
            redeem_offline(sessions, partner.id, member_id, 200, store_id=store, occurred_at=when)
    naive = manual_clock().replace(tzinfo=None)
    with pytest.raises(InvalidRequest, match="time zone"):
        redeem_offline(sessions, partner.id, member_id, 200, store_id=store, occurred_at=naive)
    assert offline_rows(sessions, member_id) == 0


def test_debt_above_the_threshold_opens_a_case_that_holds_nothing_back(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str, http: TestClient
) -> None:
    publish(sessions, partner.id, offline_debt_points=500)
    member_id = new_member(sessions, [partner.id])
    small = redeem_offline(sessions, partner.id, member_id, 400, store_id=store)
    assert small.review_case_id is None

    large = redeem_offline(sessions, partner.id, member_id, 200, store_id=store)
    assert (large.state, large.captured, large.debt_incurred) == ("captured", 200, 200)
    assert large.review_case_id is not None
    [case] = cases_of(sessions, member_id)
    assert (case.id, case.state, case.operation, case.hold_id) == (
        large.review_case_id,
        "open",
        "redemption",
        large.id,
    )
    assert rule_names(case) == ["offline_debt"]
    assert case.attempt["debt_after"] == 600

    # Deciding it changes nothing of the redemption, either way.
    operator = staff(sessions, "operator")
    assert decided(http, operator, case.id, "reject", "called the store")["state"] == "rejected"
    assert wallet_of(sessions, member_id) == (0, 0, 600)
    with sessions() as session:
        state = session.execute(select(holds.c.state).where(holds.c.id == large.id)).scalar_one()
    assert state == "captured"
    assert_books_balanced(sessions)


def test_a_block_within_the_allowance_is_kept_as_a_review(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    publish(sessions, partner.id, redemptions_per_hour=0, velocity_action="block")
    member_id = new_member(sessions, [partner.id])
    redemption = redeem_offline(sessions, partner.id, member_id, 300, store_id=store)
    assert (redemption.state, redemption.debt_incurred) == ("captured", 300)
    [case] = cases_of(sessions, member_id)
    assert (case.id, case.decision, rule_names(case)) == (
        redemption.review_case_id,
        "review",
        ["velocity"],
    )


def test_a_refund_after_the_debt_was_repaid_gives_the_points_back_in_a_lot(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id = new_member(sessions, [partner.id])
    redemption = redeem_offline(sessions, partner.id, member_id, 300, store_id=store)
    earned = accrue(sessions, partner.id, member_id, 52_000).points
    assert wallet_of(sessions, member_id) == (earned - 300, 0, 0)

    refund_redemption(sessions, partner.id, redemption.id, 300)
    assert wallet_of(sessions, member_id) == (earned, 0, 0)
    with sessions() as session:
        assert [lot.amount for lot in lots.open_lots(session, member_id)] == [earned - 300, 300]
    assert_books_balanced(sessions)


def redeemed_together(
    sessions: sessionmaker[Session], partner: ApiPartner, member_id: str, points: list[int]
) -> list[OfflineRedemption | Exception]:
    """Offline redemptions of `points` at the partner's store, each on a connection of its own,
    released together; what each returned or raised."""
    barrier = threading.Barrier(len(points))
    results: list[OfflineRedemption | Exception] = []

    def redeem(amount: int) -> None:
        barrier.wait(timeout=30)
        try:
            results.append(
                redeem_offline(sessions, partner.id, member_id, amount, store_id=partner.store_id)
            )
        except Exception as exc:  # the refusal is the result
            results.append(exc)

    threads = [threading.Thread(target=redeem, args=(p,), daemon=True) for p in points]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a redemption hung"
    return results


def test_concurrent_offline_redemptions_never_pass_the_allowance(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    """Each alone is within the allowance; together they are not. On parallel connections the
    member's lock orders them: one overdraws, the other finds the day's allowance used."""
    for _ in range(5):
        member_id = new_member(sessions, [partner.id])
        results = redeemed_together(sessions, partner, member_id, [3_000, 3_000])
        assert sorted(type(r).__name__ for r in results) == [
            "InsufficientFunds",
            "OfflineRedemption",
        ], results
        assert wallet_of(sessions, member_id) == (0, 0, 3_000)
        assert offline_rows(sessions, member_id) == 1
    assert_books_balanced(sessions)


def test_a_refund_gives_back_what_was_owed_first(
    sessions: sessionmaker[Session], partner: ApiPartner, store: str
) -> None:
    member_id, points = member_with(sessions, partner, 20_000)
    redemption = redeem_offline(sessions, partner.id, member_id, points + 300, store_id=store)

    refund_redemption(sessions, partner.id, redemption.id, 200)
    assert wallet_of(sessions, member_id) == (0, 0, 100)
    refund_redemption(sessions, partner.id, redemption.id, points + 100)
    assert wallet_of(sessions, member_id) == (points, 0, 0)
    with sessions() as session:
        assert sum(lot.remaining for lot in lots.open_lots(session, member_id)) == points
    assert_books_balanced(sessions)


def test_a_till_back_online_reports_one_offline_redemption_signed(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    store: str,
    client: PartnerClient,
    http: TestClient,
    manual_clock: clock.Manual,
) -> None:
    member_id = enrol(client)
    till = client_for(add_key(sessions, partner.id, scope=KeyScope(store, "till-1")), http)
    body = {
        "member_id": member_id,
        "points": 700,
        "partner_ref": "R-7",
        "occurred_at": (manual_clock() - timedelta(minutes=40)).isoformat(),
    }
    request = till.build("POST", "/v1/offline-redemptions", body=body)
    response = http.send(request)
    assert response.status_code == 201, response.text
    redemption = response.json()
    assert {
        key: redemption[key]
        for key in ("store_id", "points", "captured", "state", "debt_incurred", "allowance_left")
    } == {
        "store_id": store,
        "points": 700,
        "captured": 700,
        "state": "captured",
        "debt_incurred": 700,
        "allowance_left": ALLOWANCE - 700,
    }
    assert client.get(f"/v1/holds/{redemption['hold_id']}")["state"] == "captured"

    # The same Idempotency-Key again: the first answer, nothing redeemed twice.
    key = request.headers["idempotency-key"]
    again = till.build("POST", "/v1/offline-redemptions", body=body, idempotency_key=key)
    assert http.send(again).json() == redemption
    assert wallet_of(sessions, member_id) == (0, 0, 700)

    # A store's key names no other store; a partner-wide key must name one.
    elsewhere = add_store(sessions, partner.id)
    refused(403, "key_scope", till.post, "/v1/offline-redemptions", {**body, "store_id": elsewhere})
    refused(422, "validation_error", client.post, "/v1/offline-redemptions", body)
    assert wallet_of(sessions, member_id) == (0, 0, 700)


def test_the_partner_sets_a_stores_allowance_with_a_signed_put(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    client: PartnerClient,
    other_client: PartnerClient,
    http: TestClient,
) -> None:
    other_store = add_store(sessions, partner.id)
    path = f"/v1/stores/{partner.store_id}/offline-allowance"
    assert client.get(f"/v1/stores/{partner.store_id}")["offline_allowance"] == 0

    store = client.put(path, {"points_per_member_per_day": 1_500})
    assert (store["id"], store["offline_allowance"]) == (partner.store_id, 1_500)
    assert client.get(f"/v1/stores/{partner.store_id}")["offline_allowance"] == 1_500
    member_id = enrol(client)
    redemption = redeem_offline(sessions, partner.id, member_id, 1_500, store_id=partner.store_id)
    assert (redemption.debt_incurred, redemption.allowance_left) == (1_500, 0)

    # A store's key sets its own store's allowance, and no other's.
    till = client_for(add_key(sessions, partner.id, scope=KeyScope(partner.store_id)), http)
    assert till.put(path, {"points_per_member_per_day": 0})["offline_allowance"] == 0
    other_path = f"/v1/stores/{other_store}/offline-allowance"
    refused(403, "key_scope", till.put, other_path, {"points_per_member_per_day": 10})
    # Another partner's store is unknown; the body is strict.
    refused(404, "store_not_found", other_client.put, path, {"points_per_member_per_day": 10})
    for body in ({"points_per_member_per_day": -1}, {"points_per_member_per_day": "10"}, {}):
        refused(422, "validation_error", client.put, path, body)
    assert client.get(f"/v1/stores/{other_store}")["offline_allowance"] == 0
    assert client.get(f"/v1/stores/{partner.store_id}")["offline_allowance"] == 0
