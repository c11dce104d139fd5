"""The partner's issuance limit (积分预算): CNY headroom in the ledger that accruals draw down."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.points.tables import purchases
from partners import limits
from partners.client import PartnerClient
from partners.directory import exposure_account, headroom_account
from tests.builders.calls import buy, enrol, purchase_body, view
from tests.builders.http import assert_problem, client_for
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.partners import make_partner, set_limit
from tests.builders.points import wallet_of


def _purchases_of(sessions: sessionmaker[Session], partner_id: str) -> int:
    with sessions() as session:
        return int(
            session.execute(
                select(func.count()).where(purchases.c.partner_id == partner_id)
            ).scalar_one()
        )


def test_an_accrual_beyond_the_limit_is_refused_and_raising_the_limit_lets_it_through(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    partner = make_partner(sessions, limit_fen=1_000)  # issue price 1 fen a point
    client = client_for(partner, http)
    member_id = enrol(client)
    body = purchase_body(member_id, 52_000)  # 1,540 points: 1,540 fen

    refused = http.send(client.build("POST", "/v1/purchases", body=body))
    problem = assert_problem(refused, 422, "issuance_limit_exceeded")
    assert partner.id in problem["detail"]
    assert wallet_of(sessions, member_id) == (0, 0, 0)
    assert view(client, member_id)["available_points"] == 0
    assert _purchases_of(sessions, partner.id) == 0
    assert balance(sessions, headroom_account(partner.id)) == 1_000
    assert balance(sessions, exposure_account(partner.id)) == 0

    set_limit(sessions, partner.id, 2_000)
    accepted = http.send(
        client.build("POST", "/v1/purchases", body=body, idempotency_key=unique_id("k"))
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["points"] == 1_540  # still the first purchase: the bonus is due
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)
    with sessions() as session:
        assert limits.issuance_limit(session, partner.id) == (2_000, 1_540)


def test_an_accrual_up_to_the_limit_exactly_is_accepted(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    partner = make_partner(sessions, limit_fen=1_540)
    client: PartnerClient = client_for(partner, http)
    member_id = enrol(client)
    assert buy(client, member_id, 52_000)["issue_value_fen"] == 1_540
    assert balance(sessions, headroom_account(partner.id)) == 0
    # Nothing is left: even a point more is refused.
    response = http.send(client.build("POST", "/v1/purchases", body=purchase_body(member_id, 100)))
    assert_problem(response, 422, "issuance_limit_exceeded")
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_a_partner_without_a_limit_cannot_issue(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    partner = make_partner(sessions, limit_fen=0)
    client = client_for(partner, http)
    response = http.send(
        client.build("POST", "/v1/purchases", body=purchase_body(enrol(client), 10_000))
    )
    assert_problem(response, 422, "issuance_limit_exceeded")
