"""POST /v1/purchases: the earning rules, idempotency, refusals, rule sets and rate versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, migrate
from clearinghouse.database import make_engine, session_factory
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.members.tables import member_links
from clearinghouse.points.tables import purchases
from clearinghouse.rules import policy
from partners import rates
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol, lines, purchase_body, view
from tests.builders.dates import SHANGHAI, instant
from tests.builders.http import assert_problem
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.points import (
    accrue,
    hold_and_capture,
    new_member,
    partner_trail,
    refund_purchase,
    wallet_of,
)
from tests.conftest import Databases


def test_worked_example_520_yuan_earns_2_points_a_yuan_and_the_first_purchase_bonus(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    accrual = buy(client, member_id, 52_000)

    assert accrual["points"] == 1_040 + 500
    assert lines(accrual) == [
        ("base", Decimal("520")),
        ("bracket", Decimal("520")),
        ("tier", Decimal("0")),
        ("first_purchase_bonus", Decimal("500")),
    ]
    assert "500.00-yuan bracket" in accrual["breakdown"][1]["description"]
    assert accrual["debt_repaid"] == 0
    assert accrual["issue_value_fen"] == 1_540  # issue price 1 fen a point
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)
    assert view(client, member_id)["available_points"] == 1_540


def test_99_99_yuan_rounds_down_to_a_whole_point(client: PartnerClient) -> None:
    accrual = buy(client, enrol(client), 9_999)

    # Below the 100-yuan bracket only the base rate applies: 99.99 + 500 = 599.99 -> 599.
    assert accrual["points"] == 599
    assert lines(accrual) == [
        ("base", Decimal("99.99")),
        ("tier", Decimal("0")),
        ("first_purchase_bonus", Decimal("500")),
        ("rounding", Decimal("-0.99")),
    ]


def test_breakdown_decimals_are_written_in_the_documented_format(
    partner: ApiPartner, client: PartnerClient
) -> None:
    # The partner's rate is stored with six places; the answer still says "99.99", not
    # "99.99000000", and a zero line "0", not "0E-8".
    accrual = buy(client, enrol(client), 9_999)
    written = [(line["rule"], line["points"]) for line in accrual["breakdown"]]
    assert written == [
        ("base", "99.99"),
        ("tier", "0"),
        ("first_purchase_bonus", "500"),
        ("rounding", "-0.99"),
    ]
    base, *_, rounding = accrual["breakdown"]
    assert base["description"] == f"99.99 yuan at partner {partner.id}'s base rate 1 points/yuan"
    assert rounding["description"] == "rounded down to a whole point: 0.99 dropped"
    read = client.get(f"/v1/purchases/{accrual['partner_txn_id']}")
    assert read["breakdown"] == accrual["breakdown"]


def test_a_second_purchase_at_the_partner_earns_no_bonus(client: PartnerClient) -> None:
    member_id = enrol(client)
    buy(client, member_id, 1_000)
    second = buy(client, member_id, 1_000)
    assert second["points"] == 10
    assert "first_purchase_bonus" not in dict(lines(second))


def test_reporting_the_same_transaction_again_returns_the_first_result_and_posts_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    body = purchase_body(member_id, 52_000)
    first = http.send(client.build("POST", "/v1/purchases", body=body))
    assert first.status_code == 201, first.text
    posted = partner_trail(sessions, partner.id)

    # A new Idempotency-Key: the HTTP layer does not know it, the purchase does.
    again = http.send(
        client.build("POST", "/v1/purchases", body=body, idempotency_key=unique_id("k"))
    )
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    replayed, answered = again.json(), first.json()
    assert instant(replayed.pop("lot_expires_at")) == instant(answered.pop("lot_expires_at"))
    assert replayed == answered
    assert partner_trail(sessions, partner.id) == posted
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_a_replayed_accrual_answers_with_the_same_body(
    client: PartnerClient, http: TestClient
) -> None:
    # The first answer once gave lot_expires_at in +08:00 and the replay in UTC.
    body = purchase_body(enrol(client), 52_000)
    first = http.send(client.build("POST", "/v1/purchases", body=body))
    again = http.send(
        client.build("POST", "/v1/purchases", body=body, idempotency_key=unique_id("k"))
    )
    assert again.json()["lot_expires_at"] == first.json()["lot_expires_at"]


def test_the_same_transaction_with_another_amount_is_409(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    body = purchase_body(member_id, 52_000)
    buy(
        client,
        member_id,
        52_000,
        occurred_at=datetime.fromisoformat(body["occurred_at"]),
        txn=body["partner_txn_id"],
    )
    posted = partner_trail(sessions, partner.id)

    response = http.send(client.build("POST", "/v1/purchases", body={**body, "amount_fen": 52_001}))
    assert_problem(response, 409, "duplicate_transaction")
    assert partner_trail(sessions, partner.id) == posted
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_an_unknown_member_is_404(client: PartnerClient, http: TestClient) -> None:
    body = purchase_body("M0000000000ZZ", 10_000)
    assert_problem(
        http.send(client.build("POST", "/v1/purchases", body=body)), 404, "member_not_found"
    )


def test_a_member_not_linked_to_the_partner_is_404(
    sessions: sessionmaker[Session],
    client: PartnerClient,
    other_client: PartnerClient,
    http: TestClient,
) -> None:
    theirs = enrol(other_client)
    response = http.send(client.build("POST", "/v1/purchases", body=purchase_body(theirs, 10_000)))
    assert_problem(response, 404, "member_not_found")
    assert wallet_of(sessions, theirs) == (0, 0, 0)


def test_another_partners_store_is_404(
    other_partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    body = purchase_body(enrol(client), 10_000, store_id=other_partner.store_id)
    assert_problem(
        http.send(client.build("POST", "/v1/purchases", body=body)), 404, "store_not_found"
    )


def test_a_purchase_at_the_partners_own_store_is_recorded_with_it(
    partner: ApiPartner, client: PartnerClient
) -> None:
    body = purchase_body(enrol(client), 10_000, store_id=partner.store_id)
    client.post("/v1/purchases", body)
    assert client.get(f"/v1/purchases/{body['partner_txn_id']}")["store_id"] == partner.store_id


def test_a_purchase_in_the_future_is_422(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    body = purchase_body(member_id, 10_000, occurred_at=datetime.now(UTC) + timedelta(hours=1))
    problem = assert_problem(
        http.send(client.build("POST", "/v1/purchases", body=body)), 422, "validation_error"
    )
    assert "future" in problem["detail"]
    assert wallet_of(sessions, member_id) == (0, 0, 0)


def test_a_double_points_promotion_in_a_published_rule_set_doubles(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    with sessions() as session, session.begin():
        current = policy.rule_set_at(session, datetime.now(UTC))
        start = session.execute(select(func.now())).scalar_one()
        promotion = {
            "code": unique_id("double"),
            "partner_id": partner.id,  # only this partner: other tests keep the plain rules
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
            "multiplier": "2",
        }
        earning = current.earning.model_dump(mode="json")
        earning["promotions"] = [*earning["promotions"], promotion]
        published = policy.publish(
            session, earning, current.policy.model_dump(mode="json"), effective_from=start
        )
    assert published.version > current.version

    before = buy(client, enrol(client), 52_000, occurred_at=start - timedelta(minutes=1))
    assert before["points"] == 1_540
    assert before["rules_version"] == current.version

    inside = buy(client, enrol(client), 52_000)
    assert inside["rules_version"] == published.version
    assert inside["points"] == 2 * 1_040 + 500
    assert (f"promotion:{promotion['code']}", Decimal("1040")) in lines(inside)


def test_a_promotion_at_one_partner_does_not_reach_another(
    sessions: sessionmaker[Session], other_partner: ApiPartner, client: PartnerClient
) -> None:
    with sessions() as session, session.begin():
        current = policy.rule_set_at(session, datetime.now(UTC))
        start = session.execute(select(func.now())).scalar_one()
        earning = current.earning.model_dump(mode="json")
        earning["promotions"] = [
            {
                "code": unique_id("double"),
                "partner_id": other_partner.id,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
                "multiplier": "2",
            }
        ]
        policy.publish(session, earning, current.policy.model_dump(mode="json"), start)
    assert buy(client, enrol(client), 52_000)["points"] == 1_540


def test_the_birthday_month_doubles(client: PartnerClient) -> None:
    # POST /v1/members stores birth_month, and the birthday month doubles.
    now = datetime.now(UTC)
    member_id = enrol(client, birth_month=now.astimezone(SHANGHAI).month)

    accrual = buy(client, member_id, 52_000, occurred_at=now)
    assert ("birthday", Decimal("1040")) in lines(accrual)
    assert accrual["points"] == 2 * 1_040 + 500


def test_another_birth_month_does_not_double(client: PartnerClient) -> None:
    now = datetime.now(UTC)
    member_id = enrol(client, birth_month=now.astimezone(SHANGHAI).month % 12 + 1)
    accrual = buy(client, member_id, 52_000, occurred_at=now)
    assert accrual["points"] == 1_540
    assert "birthday" not in dict(lines(accrual))


def test_the_entry_records_rule_and_rate_versions_and_a_rate_change_leaves_the_past(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id = enrol(client)
    first = buy(client, member_id, 52_000)
    with sessions() as session:
        rules_now = policy.rule_set_at(session, datetime.now(UTC)).version
        row = session.execute(
            select(purchases).where(
                purchases.c.partner_id == partner.id,
                purchases.c.partner_txn_id == first["partner_txn_id"],
            )
        ).one()
        metadata = session.execute(
            select(journal_entries.c.metadata).where(journal_entries.c.id == row.entry_id)
        ).scalar_one()
    assert (first["rules_version"], first["rates_version"]) == (rules_now, 1)
    assert (row.rules_version, row.rates_version, row.points) == (rules_now, 1, 1_540)
    assert metadata["rules_version"] == rules_now
    assert metadata["rates_version"] == 1
    assert Decimal(metadata["earn_rate"]) == 1
    assert Decimal(metadata["issue_price"]) == 1
    assert metadata["partner_txn_id"] == first["partner_txn_id"]

    with sessions() as session, session.begin():
        new_rates = rates.set_rates(
            session, partner.id, earn_rate="3", issue_price="2", redemption_value="1.0"
        )
    assert new_rates.version == 2

    past = client.get(f"/v1/purchases/{first['partner_txn_id']}")
    assert past["points"] == 1_540
    assert past["rates_version"] == 1
    assert past["breakdown"] == first["breakdown"]

    later = buy(client, member_id, 10_000)
    assert later["rates_version"] == 2
    assert lines(later)[0] == ("base", Decimal("300"))  # 100 yuan at 3 points a yuan
    assert later["points"] == 300
    assert later["issue_value_fen"] == 600


def test_years_later_the_bonus_is_not_given_again_and_old_purchases_leave_the_windows(
    sessions: sessionmaker[Session], partner: ApiPartner, manual_clock: clock.Manual
) -> None:
    """An accrual reads the member's purchases over its windows only: whether the member bought
    here before comes from the link, kept since the first purchase."""
    member_id = new_member(sessions, [partner.id])
    first = accrue(sessions, partner.id, member_id, 100_000, manual_clock())
    assert "first_purchase_bonus" in {line["rule"] for line in first.breakdown}
    with sessions() as session:
        linked = session.execute(
            select(member_links.c.first_purchase_at).where(member_links.c.member_id == member_id)
        ).scalar_one()
    assert linked == manual_clock()

    manual_clock.set(manual_clock() + timedelta(days=3 * 366))
    later = accrue(sessions, partner.id, member_id, 1_000, manual_clock())
    assert "first_purchase_bonus" not in {line["rule"] for line in later.breakdown}
    assert later.points == 10
    # The first purchase's points left the tier window: the member is normal again.
    assert later.tier == "normal"


def test_the_migrations_fill_links_and_repayments_from_the_purchases_made(
    databases: Databases,
) -> None:
    """0033 fills each link's earliest purchase, 0034 each purchase's debt repaid, from what was
    recorded before them (each column dropped by the downgrade and made again)."""
    url = databases.create()
    engine = make_engine(url, pool_size=2)
    sessions = session_factory(engine)
    try:
        shop, other = make_partner(sessions), make_partner(sessions)
        member_id = new_member(sessions, [shop.id, other.id])
        earlier = datetime.now(UTC) - timedelta(days=2)
        first = accrue(sessions, shop.id, member_id, 52_000)  # 1,540 points with the bonus
        hold_and_capture(sessions, shop.id, member_id, 1_500, 1_500)
        refund_purchase(sessions, shop.id, first.partner_txn_id, 52_000)  # 1,500 owed
        repaying = accrue(sessions, shop.id, member_id, 10_000, earlier)
        assert repaying.debt_repaid == repaying.points > 0

        def recorded() -> tuple[dict[str, datetime | None], dict[str, int]]:
            with sessions() as session:
                links = session.execute(
                    select(member_links.c.partner_id, member_links.c.first_purchase_at).where(
                        member_links.c.member_id == member_id
                    )
                )
                repaid = session.execute(
                    select(purchases.c.partner_txn_id, purchases.c.debt_repaid).where(
                        purchases.c.member_id == member_id
                    )
                )
                return {p: at for p, at in links}, {txn: amount for txn, amount in repaid}

        # A purchase reported later that occurred earlier moves the link's back.
        expected = (
            {shop.id: earlier, other.id: None},
            {first.partner_txn_id: 0, repaying.partner_txn_id: repaying.points},
        )
        assert recorded() == expected
        engine.dispose()
        command.downgrade(migrate.alembic_config(url), "0032_ledger_post_checks")
        migrate.upgrade(url)
        assert recorded() == expected
    finally:
        engine.dispose()
