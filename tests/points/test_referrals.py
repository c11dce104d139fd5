"""Referrals (seed 001): the inviter earns a bonus once, when the invitee completes a first
purchase; the bonus is funded by coalition:bonus, or by a partner within its issuance limit."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.points import wallet
from clearinghouse.points.tables import referrals
from clearinghouse.rules.policy import publish, rule_set_at
from partners.client import PartnerClient
from partners.directory import exposure_account, headroom_account
from partners.limits import issuance_limit
from tests.builders.calls import buy, enrol
from tests.builders.databases import Isolated
from tests.builders.http import assert_problem
from tests.builders.partners import make_partner
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


def _fund_referrals(sessions: sessionmaker[Session], funder: str, bonus: int) -> None:
    with sessions() as session, session.begin():
        current = rule_set_at(session, session.execute(select(func.now())).scalar_one())
        policy = current.policy.model_dump(mode="json")
        policy |= {"referral_funder": funder, "referral_bonus_points": bonus}
        publish(session, current.earning.model_dump(mode="json"), policy)


def _bonus_entry(sessions: sessionmaker[Session], invitee: str) -> int | None:
    with sessions() as session:
        entry_id: int | None = session.execute(
            select(referrals.c.bonus_entry_id).where(referrals.c.invitee_member_id == invitee)
        ).scalar_one()
    return entry_id


def test_a_partner_funded_bonus_takes_its_issue_value_from_the_funders_limit(
    isolated: Isolated,
) -> None:
    """The funder issues the bonus as it issues an accrual: its headroom gives the issue value
    to its exposure, and a bonus beyond what is left of its limit is refused, alone: the
    invitee's purchase at another partner stands and the referral stays unpaid."""
    sessions, client = isolated.sessions, isolated.client
    funder = make_partner(sessions, issue_price="1.5", limit_fen=1_000)
    _fund_referrals(sessions, funder.id, 500)
    inviter, invitee, second_invitee = enrol(client), enrol(client), enrol(client)
    _refer(client, inviter, invitee)
    _refer(client, inviter, second_invitee)

    buy(client, invitee, 10_000)
    entry_id = _bonus_entry(sessions, invitee)
    assert entry_id is not None
    with sessions() as session:
        legs = {(p.address, p.amount) for p in ledger.entry_postings(session, entry_id)}
        assert issuance_limit(session, funder.id) == (1_000, 750)
    assert legs == {
        (str(ledger.Address.partner(funder.id, "issued")), -500),
        (wallet.available_account(inviter), 500),
        (headroom_account(funder.id), -750),
        (exposure_account(funder.id), 750),
    }
    assert wallet_of(sessions, inviter) == (500, 0, 0)

    # 250 fen of headroom left: a second bonus of 750 fen is refused.
    accrual = buy(client, second_invitee, 10_000)
    assert accrual["points"] > 0
    assert wallet_of(sessions, second_invitee)[0] == accrual["points"]
    assert _bonus_entry(sessions, second_invitee) is None
    assert wallet_of(sessions, inviter) == (500, 0, 0)
    with sessions() as session:
        assert issuance_limit(session, funder.id) == (1_000, 750)
