"""The review flow: what waits while a case is open (accrued points in the member's pending
account, a hold that cannot be captured), what the partner and the operator see, and exactly
what an approval or a rejection moves — checked against the books each time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from partners.directory import exposure_account, headroom_account
from tests.builders.calls import buy, capture, enrol, hold, member_with_points, redeem, refund, view
from tests.builders.databases import Isolated
from tests.builders.dates import SHANGHAI
from tests.builders.fraud import (
    assert_books_balanced,
    cases_of,
    decide,
    decided,
    entries_reversing,
    open_case_ids,
    operator_case,
    partner_case,
    publish,
)
from tests.builders.http import assert_problem, refused
from tests.builders.ledger import balance
from tests.builders.partners import DEFAULT_LIMIT_FEN, ApiPartner
from tests.builders.points import pending, redeemed_account, wallet_of
from tests.builders.users import Staff, staff


def _reviews_every_till_accrual(sessions: sessionmaker[Session], partner_id: str) -> int:
    """Above 100 yuan at a till, an accrual waits for a person rather than being refused."""
    return publish(sessions, partner_id, max_accrual_fen_offline=10_000, amount_cap_action="review")


def _reviews_every_redemption(sessions: sessionmaker[Session], partner_id: str) -> int:
    """Every redemption by a member linked today waits for a person."""
    return publish(sessions, partner_id, new_member_redeem_points=100)


def _accrual_under_review(partner: ApiPartner, client: PartnerClient) -> tuple[str, dict[str, Any]]:
    """A new member's 52,000-fen purchase at the partner's till (1,540 points), under review."""
    member_id = enrol(client)
    accrual = buy(client, member_id, 52_000, store_id=partner.store_id)
    assert accrual["review_case_id"] is not None
    return member_id, accrual


def _seconds_ago(stamp: str) -> float:
    return (datetime.now().astimezone() - datetime.fromisoformat(stamp)).total_seconds()


# --- accruals ---------------------------------------------------------------------------------


def test_an_accrual_under_review_waits_pending_and_an_approval_makes_it_spendable(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    version = _reviews_every_till_accrual(sessions, partner.id)
    member_id, accrual = _accrual_under_review(partner, client)
    case_id = accrual["review_case_id"]

    # Waiting: earned, reported, but not spendable and without a lot.
    assert (accrual["points"], accrual["lot_expires_at"]) == (1_540, None)
    assert view(client, member_id)["available_points"] == 0
    assert pending(sessions, member_id) == 1_540
    assert client.get(f"/v1/members/{member_id}/lots") == []
    refused(422, "insufficient_balance", redeem, client, member_id, 100)
    assert partner_case(client, case_id) == {
        "case_id": case_id,
        "operation": "accrual",
        "decision": "review",
        "state": "open",
        "reasons": ["purchase above the cap"],
    }

    # The operator finds it in the queue and sees why.
    assert case_id in open_case_ids(http, operator)
    case = operator_case(http, operator, case_id)
    assert (case["state"], case["decided_by"], case["decided_at"], case["actions"]) == (
        "open",
        None,
        None,
        [],
    )
    assert case["entry_id"] is not None
    assert case["verdicts"]["versions"] == {"coalition": 1, partner.id: version}
    assert case["attempt"]["amount_fen"] == 52_000

    approved = decided(http, operator, case_id, "approve", "receipt checked")

    assert (approved["state"], approved["decided_by"]) == ("approved", operator.id)
    assert _seconds_ago(approved["decided_at"]) < 60
    [action] = approved["actions"]
    assert (action["action"], action["user"], action["note"]) == (
        "approved",
        operator.id,
        "receipt checked",
    )
    assert _seconds_ago(action["at"]) < 60
    assert operator_case(http, operator, case_id)["actions"] == approved["actions"]
    assert case_id not in open_case_ids(http, operator)
    assert partner_case(client, case_id)["state"] == "approved"

    # Exactly its points, now available and in a lot of their own.
    assert view(client, member_id)["available_points"] == 1_540
    assert pending(sessions, member_id) == 0
    [lot] = client.get(f"/v1/members/{member_id}/lots")
    assert (lot["points"], lot["source"]) == (1_540, "purchase")
    purchase = client.get(f"/v1/purchases/{accrual['partner_txn_id']}")
    assert datetime.fromisoformat(lot["earned_at"]) == datetime.fromisoformat(
        purchase["occurred_at"]
    )
    assert redeem(client, member_id, 1_540)["state"] == "captured"
    assert_books_balanced(sessions)


def test_a_rejected_accrual_is_reversed_and_its_points_are_gone(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    _reviews_every_till_accrual(sessions, partner.id)
    bystander = enrol(client)
    buy(client, bystander, 5_000, store_id=partner.store_id)  # 550 points, no review
    member_id, accrual = _accrual_under_review(partner, client)
    case_id = accrual["review_case_id"]
    entry_id = operator_case(http, operator, case_id)["entry_id"]

    rejected = decided(http, operator, case_id, "reject", "staff card used for strangers")

    assert (rejected["state"], rejected["decided_by"]) == ("rejected", operator.id)
    assert [a["action"] for a in rejected["actions"]] == ["rejected"]
    [reversal] = entries_reversing(sessions, entry_id)
    assert (reversal.kind, reversal.metadata["case_id"]) == ("fraud_reversal", case_id)
    assert pending(sessions, member_id) == 0
    assert wallet_of(sessions, member_id) == (0, 0, 0)
    assert client.get(f"/v1/purchases/{accrual['partner_txn_id']}")["refunded_points"] == 1_540
    assert partner_case(client, case_id)["state"] == "rejected"
    # The other member's accrual and the partner's issuance limit are as before the rejected one.
    assert wallet_of(sessions, bystander) == (550, 0, 0)
    assert balance(sessions, exposure_account(partner.id)) == 550
    assert balance(sessions, headroom_account(partner.id)) == DEFAULT_LIMIT_FEN - 550
    assert_books_balanced(sessions)


def test_a_decided_case_cannot_be_decided_again(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    _reviews_every_till_accrual(sessions, partner.id)
    member_a, first = _accrual_under_review(partner, client)
    member_b, second = _accrual_under_review(partner, client)
    decided(http, operator, first["review_case_id"], "approve")
    decided(http, operator, second["review_case_id"], "reject")
    another = staff(sessions, "operator")

    for case_id in (first["review_case_id"], second["review_case_id"]):
        for verdict in ("approve", "reject"):
            assert_problem(decide(http, another, case_id, verdict), 409, "conflict")

    # Nothing moved twice: one release, one reversal.
    assert wallet_of(sessions, member_a) == (1_540, 0, 0)
    assert wallet_of(sessions, member_b) == (0, 0, 0)
    assert pending(sessions, member_a) == pending(sessions, member_b) == 0
    assert [
        len(operator_case(http, operator, c)["actions"])
        for c in (
            first["review_case_id"],
            second["review_case_id"],
        )
    ] == [1, 1]
    assert_books_balanced(sessions)


def test_a_retried_accrual_under_review_answers_with_the_same_case(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    _reviews_every_till_accrual(sessions, partner.id)
    member_id, accrual = _accrual_under_review(partner, client)
    again = buy(
        client,
        member_id,
        52_000,
        store_id=partner.store_id,
        txn=accrual["partner_txn_id"],
        occurred_at=datetime.fromisoformat(
            client.get(f"/v1/purchases/{accrual['partner_txn_id']}")["occurred_at"]
        ),
    )
    assert again["review_case_id"] == accrual["review_case_id"]
    assert len(cases_of(sessions, member_id)) == 1
    assert pending(sessions, member_id) == 1_540


# --- holds ------------------------------------------------------------------------------------


def test_a_hold_under_review_cannot_be_captured_until_approved(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id, points = member_with_points(client)
    _reviews_every_redemption(sessions, partner.id)
    placed = hold(client, member_id, 500)
    assert placed["state"] == "held"
    assert wallet_of(sessions, member_id) == (points - 500, 500, 0)

    problem = refused(409, "under_review", capture, client, placed["hold_id"])
    case_id = problem["case_id"]
    assert placed["review_case_id"] == case_id
    assert case_id in open_case_ids(http, operator)
    assert operator_case(http, operator, case_id)["hold_id"] == placed["hold_id"]
    assert partner_case(client, case_id)["state"] == "open"
    assert client.get(f"/v1/holds/{placed['hold_id']}")["state"] == "held"

    decided(http, operator, case_id, "approve")
    assert client.get(f"/v1/holds/{placed['hold_id']}")["review_case_id"] is None
    captured = capture(client, placed["hold_id"])

    assert (captured["state"], captured["captured"]) == ("captured", 500)
    assert wallet_of(sessions, member_id) == (points - 500, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 500
    assert partner_case(client, case_id)["state"] == "approved"
    assert_books_balanced(sessions)


def test_a_rejected_hold_is_voided_and_the_points_go_back(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id, points = member_with_points(client)
    lots_before = client.get(f"/v1/members/{member_id}/lots")
    _reviews_every_redemption(sessions, partner.id)
    placed = hold(client, member_id, 500)
    case_id = refused(409, "under_review", capture, client, placed["hold_id"])["case_id"]

    rejected = decided(http, operator, case_id, "reject", "card reported stolen")

    assert rejected["state"] == "rejected"
    voided = client.get(f"/v1/holds/{placed['hold_id']}")
    assert (voided["state"], voided["captured"]) == ("voided", 0)
    assert wallet_of(sessions, member_id) == (points, 0, 0)
    assert client.get(f"/v1/members/{member_id}/lots") == lots_before
    assert balance(sessions, redeemed_account(partner.id)) == 0
    refused(409, "hold_closed", capture, client, placed["hold_id"])
    assert partner_case(client, case_id)["state"] == "rejected"
    assert_books_balanced(sessions)


def test_a_one_step_redemption_under_review_returns_the_open_hold(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id, points = member_with_points(client)
    _reviews_every_redemption(sessions, partner.id)

    redemption = redeem(client, member_id, 700)

    assert (redemption["state"], redemption["captured"], redemption["closed_at"]) == (
        "held",
        0,
        None,
    )
    [case] = cases_of(sessions, member_id)
    assert (case.hold_id, case.state) == (redemption["hold_id"], "open")
    decided(http, operator, case.id, "approve")
    assert capture(client, redemption["hold_id"])["captured"] == 700
    assert wallet_of(sessions, member_id) == (points - 700, 0, 0)
    assert_books_balanced(sessions)


def test_the_books_balance_after_a_mix_of_approvals_and_rejections(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    # A partner's version is the whole of its overrides: one version that reviews both.
    publish(
        sessions,
        partner.id,
        max_accrual_fen_offline=10_000,
        amount_cap_action="review",
        new_member_redeem_points=100,
    )
    members = []
    for verdict in ("approve", "reject", "approve", "reject"):
        member_id, accrual = _accrual_under_review(partner, client)
        decided(http, operator, accrual["review_case_id"], verdict)
        members.append(member_id)
    for member_id in members[::2]:
        placed = hold(client, member_id, 1_000)
        case_id = refused(409, "under_review", capture, client, placed["hold_id"])["case_id"]
        decided(http, operator, case_id, "approve" if member_id == members[0] else "reject")
    assert [wallet_of(sessions, m) for m in members] == [
        (540, 1_000, 0),
        (0, 0, 0),
        (1_540, 0, 0),
        (0, 0, 0),
    ]
    assert [pending(sessions, m) for m in members] == [0, 0, 0, 0]
    assert_books_balanced(sessions)
    # The hold approved in the queue is captured by the partner; the books still balance.
    [approved_hold] = [c for c in cases_of(sessions, members[0]) if c.hold_id]
    capture(client, approved_hold.hold_id)
    assert wallet_of(sessions, members[0]) == (540, 0, 0)
    assert_books_balanced(sessions)


# --- what a review must not get wrong ---------------------------------------------------------


def test_a_purchase_refunded_while_under_review_takes_nothing_else_from_the_member(
    isolated: Isolated,
) -> None:
    sessions, client, partner = isolated.sessions, isolated.client, isolated.partner
    _reviews_every_till_accrual(sessions, partner.id)
    member_id, points = member_with_points(client)  # 1,540 points, online, no review
    accrual = buy(client, member_id, 20_000, store_id=partner.store_id)
    assert (accrual["points"], pending(sessions, member_id)) == (400, 400)

    refund(client, accrual["partner_txn_id"], 20_000)  # the customer brings it all back
    decided(isolated.http, isolated.operator, accrual["review_case_id"], "reject")

    assert (wallet_of(sessions, member_id), pending(sessions, member_id)) == ((points, 0, 0), 0)
    assert balance(sessions, exposure_account(partner.id)) == points  # the first purchase's
    assert balance(sessions, headroom_account(partner.id)) == DEFAULT_LIMIT_FEN - points
    assert_books_balanced(sessions)


def test_an_approved_accrual_repays_the_members_debt_first(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]
    redeem(client, member_id, 1_500)
    refund(client, txn, 52_000)
    assert wallet_of(sessions, member_id) == (0, 0, 1_500)
    _reviews_every_till_accrual(sessions, partner.id)
    accrual = buy(client, member_id, 20_000, store_id=partner.store_id)
    assert accrual["points"] == 200

    decided(http, operator, accrual["review_case_id"], "approve")

    assert wallet_of(sessions, member_id) == (0, 0, 1_300)


def test_a_rejected_first_purchase_earns_the_inviter_no_referral_bonus(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    _reviews_every_till_accrual(sessions, partner.id)
    inviter, invitee = enrol(client), enrol(client)
    client.post("/v1/referrals", {"inviter_member_id": inviter, "invitee_member_id": invitee})
    accrual = buy(client, invitee, 52_000, store_id=partner.store_id)  # a made-up purchase

    decided(http, operator, accrual["review_case_id"], "reject")

    assert wallet_of(sessions, invitee) == (0, 0, 0)
    assert wallet_of(sessions, inviter) == (0, 0, 0)


def test_a_refund_after_approval_takes_the_purchases_own_lot(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id = enrol(client)
    # Noon and one o'clock two days ago, in the coalition's zone: one month, whatever the time.
    two_days_ago = datetime.now(SHANGHAI) - timedelta(days=2)
    earlier = two_days_ago.replace(hour=12, minute=0, second=0, microsecond=0)
    buy(client, member_id, 52_000, occurred_at=earlier)  # 1,540 points, online, no review
    _reviews_every_till_accrual(sessions, partner.id)
    # The month's spend reaches 720 yuan: 2 points a yuan.
    later = earlier + timedelta(hours=1)
    accrual = buy(client, member_id, 20_000, store_id=partner.store_id, occurred_at=later)
    decided(http, operator, accrual["review_case_id"], "approve")
    assert sorted(lot["points"] for lot in client.get(f"/v1/members/{member_id}/lots")) == [
        400,
        1_540,
    ]

    refund(client, accrual["partner_txn_id"], 20_000)

    left = client.get(f"/v1/members/{member_id}/lots")
    assert [(lot["points"], datetime.fromisoformat(lot["earned_at"])) for lot in left] == [
        (1_540, earlier)
    ]
