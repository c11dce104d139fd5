"""Each of the eight rules, through signed requests: the pattern planted and caught (the decision,
and the case with the rule's name, its inputs and the threshold versions in force), and normal
traffic of the same shape let through without a case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from tests.builders.calls import (
    buy,
    capture,
    enrol,
    exchange,
    hold,
    member_with_points,
    redeem,
    refund,
    view,
)
from tests.builders.fraud import (
    BEIJING,
    SHANGHAI,
    SHANGHAI_EAST,
    SHANGHAI_WEST,
    cases_of,
    link_aged,
    open_case_ids,
    operator_case,
    partner_case,
    publish,
    rule_names,
    the_rule,
)
from tests.builders.http import client_for, refused
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, add_store, make_programme
from tests.builders.points import partner_trail, pending, wallet_of
from tests.builders.users import Staff

COALITION = {"coalition": 1}


def _only_case(
    sessions: sessionmaker[Session], http: TestClient, operator: Staff, member_id: str
) -> dict[str, Any]:
    """The one case on the member, as the operator sees it."""
    [row] = cases_of(sessions, member_id)
    return operator_case(http, operator, row.id)


# --- velocity ---------------------------------------------------------------------------------


def test_the_sixth_redemption_within_an_hour_waits_for_review(
    sessions: sessionmaker[Session], http: TestClient, client: PartnerClient, operator: Staff
) -> None:
    member_id, _ = member_with_points(client)  # 1,540 points
    for _ in range(5):
        assert redeem(client, member_id, 100)["state"] == "captured"
    assert cases_of(sessions, member_id) == []

    sixth = redeem(client, member_id, 100)

    assert (sixth["state"], sixth["captured"]) == ("held", 0)
    case = _only_case(sessions, http, operator, member_id)
    assert (case["operation"], case["decision"], case["state"]) == ("hold", "review", "open")
    assert case["hold_id"] == sixth["hold_id"]
    assert rule_names(case) == ["velocity"]
    assert the_rule(case, "velocity")["inputs"] == {
        "redemptions_last_hour": 5,
        "points_last_day": 600,
    }
    assert "6 redemptions in an hour" in the_rule(case, "velocity")["reason"]
    assert case["verdicts"]["versions"] == COALITION
    assert case["attempt"]["member_id"] == member_id
    assert case["attempt"]["points"] == 100


def test_points_redeemed_in_a_day_above_the_partners_threshold_wait_for_review(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    version = publish(sessions, partner.id, points_per_day=1_000)
    member_id, _ = member_with_points(client)
    assert redeem(client, member_id, 600)["state"] == "captured"

    second = redeem(client, member_id, 500)

    assert second["state"] == "held"
    case = _only_case(sessions, http, operator, member_id)
    assert rule_names(case) == ["velocity"]
    assert the_rule(case, "velocity")["inputs"] == {
        "redemptions_last_hour": 1,
        "points_last_day": 1_100,
    }
    assert case["verdicts"]["versions"] == {"coalition": 1, partner.id: version}


def test_a_few_redemptions_through_the_day_raise_nothing(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id, _ = member_with_points(client)
    placed = hold(client, member_id, 300)
    assert capture(client, placed["hold_id"])["state"] == "captured"
    for points in (100, 250, 400, 120):
        assert redeem(client, member_id, points)["state"] == "captured"
    assert cases_of(sessions, member_id) == []
    assert wallet_of(sessions, member_id) == (1_540 - 1_170, 0, 0)


# --- amount caps ------------------------------------------------------------------------------


def test_one_accrual_above_the_offline_cap_is_refused_and_nothing_is_posted(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 20_000, store_id=partner.store_id)  # an ordinary visit first
    before = (view(client, member_id), wallet_of(sessions, member_id), pending(sessions, member_id))
    trail = partner_trail(sessions, partner.id)
    txn = unique_id("txn")

    problem = refused(
        403,
        "fraud_blocked",
        buy,
        client,
        member_id,
        1_000_001,  # 10,000.01 yuan at a till: one fen above the offline cap
        store_id=partner.store_id,
        txn=txn,
    )

    case_id = problem["case_id"]
    assert "purchase above the cap" in problem["detail"]
    assert before == (
        view(client, member_id),
        wallet_of(sessions, member_id),
        pending(sessions, member_id),
    )
    assert partner_trail(sessions, partner.id) == trail
    refused(404, "purchase_not_found", client.get, f"/v1/purchases/{txn}")

    case = operator_case(http, operator, case_id)
    assert (case["operation"], case["decision"], case["state"]) == ("accrual", "block", "blocked")
    assert (case["partner_id"], case["member_id"]) == (partner.id, member_id)
    assert (case["entry_id"], case["hold_id"]) == (None, None)
    assert rule_names(case) == ["amount_cap"]
    assert the_rule(case, "amount_cap")["action"] == "block"
    assert the_rule(case, "amount_cap")["inputs"] == {
        "amount_fen": 1_000_001,
        "cap_fen": 1_000_000,
        "offline": True,
    }
    assert case["verdicts"]["versions"] == COALITION
    assert case["attempt"]["store_id"] == partner.store_id
    # A block is no work for the queue, and the partner sees the outcome.
    assert case_id not in open_case_ids(http, operator)
    assert case_id in open_case_ids(http, operator, "blocked")
    seen = partner_case(client, case_id)
    assert (seen["state"], seen["decision"], seen["operation"]) == ("blocked", "block", "accrual")
    assert seen["reasons"] == ["purchase above the cap"]


def test_accruals_up_to_the_caps_go_through(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id = enrol(client)
    at_the_till = buy(client, member_id, 1_000_000, store_id=partner.store_id)
    online = buy(client, member_id, 5_000_000)  # no store: the online cap of 50,000 yuan
    assert at_the_till["review_case_id"] is None
    assert online["review_case_id"] is None
    assert cases_of(sessions, member_id) == []
    assert view(client, member_id)["available_points"] == at_the_till["points"] + online["points"]


def test_a_stores_daily_cap_refuses_the_accrual_that_would_pass_it(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    version = publish(sessions, partner.id, store_daily_accrual_fen_offline=50_000)
    store_id = add_store(sessions, partner.id)
    first, second, third = enrol(client), enrol(client), enrol(client)
    buy(client, first, 20_000, store_id=store_id)
    buy(client, second, 20_000, store_id=store_id)

    problem = refused(403, "fraud_blocked", buy, client, third, 20_000, store_id=store_id)

    assert "daily cap" in problem["detail"]
    case = operator_case(http, operator, problem["case_id"])
    assert rule_names(case) == ["amount_cap"]
    assert the_rule(case, "amount_cap")["inputs"] == {
        "amount_fen": 20_000,
        "cap_fen": 1_000_000,
        "offline": True,
        "store_last_day_fen": 40_000,
        "store_daily_cap_fen": 50_000,
    }
    assert case["verdicts"]["versions"] == {"coalition": 1, partner.id: version}
    assert wallet_of(sessions, third) == (0, 0, 0)
    # What is left of the day's cap is still there, at this store, and other stores are apart.
    assert buy(client, third, 10_000, store_id=store_id)["review_case_id"] is None
    assert buy(client, third, 40_000, store_id=partner.store_id)["review_case_id"] is None


# --- burn after earn --------------------------------------------------------------------------


def test_redeeming_at_the_store_minutes_after_earning_1000_points_there_waits(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    store_id = add_store(sessions, partner.id)
    member_id = enrol(client)
    assert buy(client, member_id, 52_000, store_id=store_id)["points"] == 1_540

    placed = hold(client, member_id, 1_500, store_id=store_id)

    assert placed["state"] == "held"
    problem = refused(409, "under_review", capture, client, placed["hold_id"])
    case = _only_case(sessions, http, operator, member_id)
    assert problem["case_id"] == case["id"]
    assert (case["operation"], case["decision"], case["hold_id"]) == (
        "hold",
        "review",
        placed["hold_id"],
    )
    assert rule_names(case) == ["burn_after_earn"]
    assert the_rule(case, "burn_after_earn")["inputs"] == {
        "recent_accrual_points": 1_540,
        "minutes": 10,
    }
    assert case["verdicts"]["versions"] == COALITION


def test_redeeming_small_earnings_or_at_another_store_raises_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    store_id, other_store = add_store(sessions, partner.id), add_store(sessions, partner.id)
    small = enrol(client)
    assert buy(client, small, 10_000, store_id=store_id)["points"] == 600  # bonus included
    big = enrol(client)
    buy(client, big, 52_000, store_id=store_id)

    assert redeem(client, small, 500, store_id=store_id)["state"] == "captured"
    assert redeem(client, big, 1_500, store_id=other_store)["state"] == "captured"
    assert cases_of(sessions, small) == cases_of(sessions, big) == []


# --- refund after redeem ----------------------------------------------------------------------


def test_a_refund_of_a_purchase_whose_points_were_spent_opens_a_case_and_goes_ahead(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]  # 1,540 points
    assert redeem(client, member_id, 1_500)["state"] == "captured"

    refunded = refund(client, txn, 52_000)

    assert (refunded["points"], refunded["from_available"], refunded["to_debt"]) == (
        1_540,
        40,
        1_500,
    )
    assert wallet_of(sessions, member_id) == (0, 0, 1_500)
    assert view(client, member_id)["debt_points"] == 1_500
    case = _only_case(sessions, http, operator, member_id)
    assert (case["operation"], case["decision"], case["state"]) == ("refund", "review", "open")
    assert case["entry_id"] is not None
    assert rule_names(case) == ["refund_after_redeem"]
    assert the_rule(case, "refund_after_redeem")["inputs"] == {"points": 1_540}
    assert case["attempt"]["points_already_spent"] is True
    assert case["verdicts"]["versions"] == COALITION
    assert partner_case(client, case["id"])["state"] == "open"


def test_partial_refunds_of_unspent_points_raise_nothing(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]
    redeem(client, member_id, 500)
    assert refund(client, txn, 13_000)["to_debt"] == 0
    assert refund(client, txn, 13_000)["to_debt"] == 0
    assert cases_of(sessions, member_id) == []


# --- store outlier ----------------------------------------------------------------------------

# 100 to 290 yuan: median 195 yuan, median absolute deviation 50 yuan, so the limit at ten
# deviations above the median is 695 yuan.
USUAL_FEN = [10_000 + 1_000 * i for i in range(20)]
OUTLIER_LIMIT_FEN = 19_500 + 10 * 5_000


def _usual_day_at(client: PartnerClient, store_id: str) -> list[str]:
    regulars = [enrol(client) for _ in range(4)]
    for i, amount in enumerate(USUAL_FEN):
        buy(client, regulars[i % 4], amount, store_id=store_id)
    return regulars


def test_an_accrual_far_above_a_stores_usual_amounts_waits_for_review(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    store_id = add_store(sessions, partner.id)
    _usual_day_at(client, store_id)
    member_id = enrol(client)

    accrual = buy(client, member_id, OUTLIER_LIMIT_FEN + 1, store_id=store_id)

    assert accrual["review_case_id"] is not None
    assert accrual["lot_expires_at"] is None
    assert view(client, member_id)["available_points"] == 0
    assert pending(sessions, member_id) == accrual["points"]
    case = operator_case(http, operator, accrual["review_case_id"])
    assert (case["operation"], case["decision"], case["state"]) == ("accrual", "review", "open")
    assert rule_names(case) == ["store_outlier"]
    assert the_rule(case, "store_outlier")["inputs"] == {
        "amount_fen": OUTLIER_LIMIT_FEN + 1,
        "median_fen": 19_500,
        "mad_fen": 5_000,
        "limit": OUTLIER_LIMIT_FEN,
    }
    assert case["verdicts"]["versions"] == COALITION


def test_an_accrual_within_a_stores_usual_spread_raises_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    store_id = add_store(sessions, partner.id)
    regulars = _usual_day_at(client, store_id)
    member_id = enrol(client)
    assert buy(client, member_id, OUTLIER_LIMIT_FEN, store_id=store_id)["review_case_id"] is None
    assert [cases_of(sessions, m) for m in [*regulars, member_id]] == [[]] * 5


def test_a_new_stores_first_purchases_are_not_judged_as_outliers(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    store_id = add_store(sessions, partner.id)
    member_id = enrol(client)
    for amount in (1_000, 1_000, 900_000):
        assert buy(client, member_id, amount, store_id=store_id)["review_case_id"] is None
    assert cases_of(sessions, member_id) == []


# --- new member, high value -------------------------------------------------------------------


def test_a_member_linked_minutes_ago_redeeming_5000_points_waits_for_review(
    sessions: sessionmaker[Session], http: TestClient, client: PartnerClient, operator: Staff
) -> None:
    member_id, points = member_with_points(client, 300_000)
    assert points >= 5_000

    placed = redeem(client, member_id, 5_000)

    assert placed["state"] == "held"
    case = _only_case(sessions, http, operator, member_id)
    assert (case["operation"], case["hold_id"]) == ("hold", placed["hold_id"])
    assert rule_names(case) == ["new_member_high_value"]
    inputs = the_rule(case, "new_member_high_value")["inputs"]
    assert inputs["points"] == 5_000
    linked = datetime.fromisoformat(inputs["linked_at"])
    assert timedelta(0) <= datetime.now(UTC) - linked < timedelta(minutes=5)
    assert case["verdicts"]["versions"] == COALITION


def test_new_members_redeeming_less_and_old_members_redeeming_as_much_raise_nothing(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    newcomer, _ = member_with_points(client, 300_000)
    regular, _ = member_with_points(client, 300_000)
    link_aged(sessions, regular, timedelta(days=2))

    assert redeem(client, newcomer, 4_999)["state"] == "captured"
    assert redeem(client, regular, 5_000)["state"] == "captured"
    assert cases_of(sessions, newcomer) == cases_of(sessions, regular) == []


# --- impossible travel ------------------------------------------------------------------------


def test_purchases_1000_km_apart_minutes_apart_wait_for_review(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    shanghai = add_store(sessions, partner.id, at=SHANGHAI)
    beijing = add_store(sessions, partner.id, city="Beijing", at=BEIJING)
    member_id = enrol(client)
    now = datetime.now(UTC)
    first = buy(
        client, member_id, 30_000, store_id=shanghai, occurred_at=now - timedelta(minutes=10)
    )
    assert first["review_case_id"] is None

    second = buy(client, member_id, 30_000, store_id=beijing, occurred_at=now)

    assert second["review_case_id"] is not None
    assert pending(sessions, member_id) == second["points"]
    case = _only_case(sessions, http, operator, member_id)
    assert rule_names(case) == ["impossible_travel"]
    inputs = the_rule(case, "impossible_travel")["inputs"]
    assert 1_060 < inputs["km"] < 1_075
    assert inputs["hours"] == round(10 / 60, 3)
    assert inputs["kmh"] > 6_000
    assert case["verdicts"]["versions"] == COALITION


def test_a_redemption_in_beijing_minutes_after_a_purchase_in_shanghai_waits(
    sessions: sessionmaker[Session],
    http: TestClient,
    partner: ApiPartner,
    client: PartnerClient,
    operator: Staff,
) -> None:
    shanghai = add_store(sessions, partner.id, at=SHANGHAI)
    beijing = add_store(sessions, partner.id, city="Beijing", at=BEIJING)
    member_id = enrol(client)
    buy(client, member_id, 30_000, store_id=shanghai)

    placed = redeem(client, member_id, 300, store_id=beijing)

    assert placed["state"] == "held"
    assert rule_names(_only_case(sessions, http, operator, member_id)) == ["impossible_travel"]


def test_a_flight_of_three_hours_and_errands_across_town_raise_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    shanghai = add_store(sessions, partner.id, at=SHANGHAI)
    beijing = add_store(sessions, partner.id, city="Beijing", at=BEIJING)
    east = add_store(sessions, partner.id, at=SHANGHAI_EAST)
    west = add_store(sessions, partner.id, at=SHANGHAI_WEST)
    now = datetime.now(UTC)
    traveller, local = enrol(client), enrol(client)

    buy(client, traveller, 30_000, store_id=shanghai, occurred_at=now - timedelta(hours=3))
    buy(client, traveller, 30_000, store_id=beijing, occurred_at=now)
    buy(client, local, 30_000, store_id=east, occurred_at=now - timedelta(minutes=8))
    buy(client, local, 30_000, store_id=west, occurred_at=now - timedelta(minutes=2))
    assert redeem(client, local, 300, store_id=shanghai)["state"] == "captured"
    assert cases_of(sessions, traveller) == cases_of(sessions, local) == []


# --- exchange laundering ----------------------------------------------------------------------


def test_three_exchanges_in_and_three_out_within_a_day_open_a_case(
    sessions: sessionmaker[Session], http: TestClient, operator: Staff
) -> None:
    programme = make_programme(sessions, exchange_rate="1")
    client = client_for(programme, http)
    member_id = enrol(client)
    for _ in range(2):
        exchange(client, member_id, "in", 1_000)
        exchange(client, member_id, "out", 300)
    exchange(client, member_id, "in", 1_000)
    assert cases_of(sessions, member_id) == []

    sixth = exchange(client, member_id, "out", 300)

    # Under review an exchange still goes ahead.
    assert (sixth["coalition_points"], sixth["programme_points"]) == (300, 300)
    assert view(client, member_id)["available_points"] == 3 * 1_000 - 3 * 300
    case = _only_case(sessions, http, operator, member_id)
    assert (case["operation"], case["decision"], case["state"]) == ("exchange", "review", "open")
    assert case["entry_id"] is not None
    assert rule_names(case) == ["exchange_laundering"]
    assert the_rule(case, "exchange_laundering")["inputs"] == {
        "in_last_day": 3,
        "out_last_day": 3,
    }
    assert case["attempt"]["direction"] == "out"
    assert case["verdicts"]["versions"] == COALITION


def test_exchanges_that_do_not_go_round_and_round_raise_nothing(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    programme = make_programme(sessions, exchange_rate="2")
    client = client_for(programme, http)
    member_id = enrol(client)
    for _ in range(4):
        exchange(client, member_id, "in", 500)  # 1,000 coalition points each
    exchange(client, member_id, "out", 1_000)
    exchange(client, member_id, "out", 1_000)
    assert cases_of(sessions, member_id) == []
    assert view(client, member_id)["available_points"] == 2_000


# --- no false alarms, no leaks ------------------------------------------------------------------


def test_at_a_fixed_price_store_a_usual_amount_is_no_outlier(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    cinema = add_store(sessions, partner.id)
    regulars = [enrol(client) for _ in range(4)]
    for i in range(20):  # one ticket at 45 yuan, or two
        buy(client, regulars[i % 4], 9_000 if i % 5 < 2 else 4_500, store_id=cinema)
    member_id = enrol(client)

    assert buy(client, member_id, 9_000, store_id=cinema)["review_case_id"] is None


def test_a_refund_at_the_morning_store_after_a_flight_raises_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    shanghai = add_store(sessions, partner.id, at=SHANGHAI)
    beijing = add_store(sessions, partner.id, city="Beijing", at=BEIJING)
    member_id = enrol(client)
    now = datetime.now(UTC)
    morning = buy(
        client, member_id, 30_000, store_id=shanghai, occurred_at=now - timedelta(hours=3)
    )
    buy(client, member_id, 30_000, store_id=beijing, occurred_at=now - timedelta(minutes=5))
    assert cases_of(sessions, member_id) == []  # a three-hour flight is no impossible travel

    refund(client, morning["partner_txn_id"], 10_000)  # Shanghai refunds part of the morning

    assert cases_of(sessions, member_id) == []


def test_points_earned_this_morning_and_reported_tonight_are_not_just_earned(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    store_id = add_store(sessions, partner.id)
    member_id = enrol(client)
    this_morning = datetime.now(UTC) - timedelta(hours=8)
    buy(client, member_id, 52_000, store_id=store_id, occurred_at=this_morning)  # till roll

    assert redeem(client, member_id, 1_000, store_id=store_id)["state"] == "captured"
