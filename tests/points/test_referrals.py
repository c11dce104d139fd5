"""Referrals (seed 001): the inviter earns a bonus once, when the invitee completes a first
purchase; the bonus is funded by coalition:bonus."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.points import wallet
from clearinghouse.points.tables import referrals
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.http import assert_problem
from tests.builders.points import wallet_of


def _refer(client: PartnerClient, inviter: str, invitee: str) -> dict[str, object]:
    referral: dict[str, object] = client.post(
        "/v1/referrals", {"inviter_member_id": inviter, "invitee_member_id": invitee}
    )
    return referral


def test_the_inviter_earns_the_bonus_once_at_the_invitees_first_purchase(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    inviter, invitee = enrol(client), enrol(client)
    registered = _refer(client, inviter, invitee)
    assert registered["bonus_paid"] is False
    assert wallet_of(sessions, inviter) == (0, 0, 0)

    buy(client, invitee, 10_000)
    assert wallet_of(sessions, inviter) == (500, 0, 0)
    inviter_lots = client.get(f"/v1/members/{inviter}/lots")
    assert [(lot["points"], lot["source"]) for lot in inviter_lots] == [(500, "referral")]
    with sessions() as session:
        entry_id = session.execute(
            select(referrals.c.bonus_entry_id).where(referrals.c.invitee_member_id == invitee)
        ).scalar_one()
        assert entry_id is not None
        legs = {(p.address, p.amount) for p in ledger.entry_postings(session, entry_id)}
    assert legs == {("coalition:bonus", -500), (wallet.available_account(inviter), 500)}

    buy(client, invitee, 10_000)
    assert wallet_of(sessions, inviter) == (500, 0, 0)
    with sessions() as session:
        assert (
            session.execute(
                select(referrals.c.bonus_entry_id).where(referrals.c.invitee_member_id == invitee)
            ).scalar_one()
            == entry_id
        )


def test_a_member_cannot_refer_themself(client: PartnerClient, http: TestClient) -> None:
    member = enrol(client)
    body = {"inviter_member_id": member, "invitee_member_id": member}
    assert_problem(
        http.send(client.build("POST", "/v1/referrals", body=body)), 422, "validation_error"
    )


def test_a_member_who_already_purchased_cannot_be_referred(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    inviter, invitee = enrol(client), enrol(client)
    buy(client, invitee, 10_000)
    body = {"inviter_member_id": inviter, "invitee_member_id": invitee}
    assert_problem(http.send(client.build("POST", "/v1/referrals", body=body)), 409, "conflict")
    buy(client, invitee, 10_000)
    assert wallet_of(sessions, inviter) == (0, 0, 0)


def test_an_invitee_has_one_inviter_and_referrals_do_not_go_both_ways(
    client: PartnerClient, http: TestClient
) -> None:
    first, second, invitee = enrol(client), enrol(client), enrol(client)
    _refer(client, first, invitee)
    body = {"inviter_member_id": second, "invitee_member_id": invitee}
    assert_problem(http.send(client.build("POST", "/v1/referrals", body=body)), 409, "conflict")
    body = {"inviter_member_id": invitee, "invitee_member_id": first}
    assert_problem(http.send(client.build("POST", "/v1/referrals", body=body)), 409, "conflict")


def test_a_referral_needs_both_members_linked_to_the_partner(
    client: PartnerClient, other_client: PartnerClient, http: TestClient
) -> None:
    inviter, invitee = enrol(client), enrol(other_client)
    body = {"inviter_member_id": inviter, "invitee_member_id": invitee}
    assert_problem(
        http.send(client.build("POST", "/v1/referrals", body=body)), 404, "member_not_found"
    )
