"""Engagement points through signed requests: a partner runs campaigns and any front end awards
from its own and the coalition's, with the reason on every entry; the caps and the sign-in rule
hold; a budget of N points is never overspent by parallel awards; and a partner-funded
campaign's awards settle as the partner's issuance, zero-sum."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.database import unit_of_work
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import wallet
from clearinghouse.rewards import campaigns
from partners.client import PartnerClient
from tests.builders.calls import enrol, link
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.http import refused
from tests.builders.ids import unique_id
from tests.builders.partners import set_limit
from tests.builders.points import available, new_member
from tests.builders.settlement import settle_after_cutoff
from tests.cli_fixtures import Cli

CAMPAIGNS = "/v1/campaigns"


def _running(**fields: Any) -> dict[str, Any]:
    now = clock.now()
    body = {
        "name": "Spring check-in",
        "budget_points": 10_000,
        "per_member_cap": 1_000,
        "daily_cap": 300,
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(days=30)).isoformat(),
    }
    return {**body, **fields}


def _start(client: PartnerClient, **fields: Any) -> str:
    campaign_id: str = client.post(CAMPAIGNS, _running(**fields))["campaign_id"]
    return campaign_id


def _coalition(sessions: sessionmaker[Session]) -> str:
    """A coalition campaign (operators start them), as _running's."""
    now = clock.now()
    spec = campaigns.CampaignSpec(
        "Coalition survey", 10_000, 1_000, 300, now - timedelta(minutes=1), now + timedelta(days=30)
    )
    with unit_of_work(sessions) as session:
        return campaigns.create_campaign(session, None, spec).id


def _award(
    client: PartnerClient, campaign_id: str, member: str, points: int, reason: str, **fields: Any
) -> dict[str, Any]:
    body = {"member_id": member, "points": points, "reason": reason, "reference": unique_id("a")}
    awarded: dict[str, Any] = client.post(f"{CAMPAIGNS}/{campaign_id}/awards", {**body, **fields})
    return awarded


def _entry(sessions: sessionmaker[Session], entry_id: int) -> Any:
    with sessions() as session:
        return session.execute(
            journal_entries.select().where(journal_entries.c.id == entry_id)
        ).one()


def test_a_front_end_awards_from_its_own_and_the_coalitions_campaigns(
    client: PartnerClient,
    other_client: PartnerClient,
    partner: Any,
    sessions: sessionmaker[Session],
) -> None:
    member = enrol(client)
    own = _start(client)
    coalition = _coalition(sessions)

    survey = _award(client, own, member, 200, "survey", reference="S-1")
    assert (survey["points"], survey["reason"], survey["funder_partner_id"]) == (
        200,
        "survey",
        partner.id,
    )
    bonus = _award(client, coalition, member, 50, "campaign_bonus")
    assert bonus["funder_partner_id"] is None
    assert available(sessions, member) == 250
    # The reason is on every entry; the partner's issues its points at its issue price.
    entry = _entry(sessions, survey["entry_id"])
    assert (entry.kind, entry.metadata["reason"], entry.metadata["partner_id"]) == (
        "engagement",
        "survey",
        partner.id,
    )
    coalition_entry = _entry(sessions, bonus["entry_id"])
    assert coalition_entry.metadata["reason"] == "campaign_bonus"
    assert "partner_id" not in coalition_entry.metadata
    with sessions() as session:
        legs = {p.address: p.amount for p in ledger.entry_postings(session, bonus["entry_id"])}
    assert legs == {"coalition:bonus": -50, wallet.available_account(member): 50}

    # The same reference answers the first award; with other details it is refused.
    assert _award(client, own, member, 200, "survey", reference="S-1") == survey
    refused(409, "conflict", _award, client, own, member, 100, "survey", reference="S-1")
    assert available(sessions, member) == 250

    # Another partner awards from the coalition's campaign, never from this partner's.
    link(other_client, member)
    _award(other_client, coalition, member, 50, "review")
    refused(404, "campaign_not_found", _award, other_client, own, member, 10, "review")
    listed = {c["campaign_id"] for c in other_client.get(CAMPAIGNS)}
    assert coalition in listed
    assert own not in listed
    mine = {c["campaign_id"]: c for c in client.get(CAMPAIGNS)}
    assert mine[own]["remaining_points"] == 10_000 - 200
    # A member not linked to the front end is unknown to it.
    stranger = enrol(other_client)
    refused(404, "member_not_found", _award, client, own, stranger, 10, "review")


def test_caps_the_sign_in_rule_and_the_period_hold(
    client: PartnerClient, partner: Any, sessions: sessionmaker[Session]
) -> None:
    member = enrol(client)
    check_in = _start(client, daily_cap=100, per_member_cap=150, budget_points=1_000)
    _award(client, check_in, member, 10, "sign_in")
    refused(409, "already_signed_in", _award, client, check_in, member, 10, "sign_in")
    _award(client, check_in, member, 80, "review")
    refused(409, "campaign_cap_reached", _award, client, check_in, member, 20, "survey")
    _award(client, check_in, member, 10, "survey")
    later = _start(client, starts_at=(clock.now() + timedelta(days=1)).isoformat())
    refused(409, "campaign_not_running", _award, client, later, member, 10, "sign_in")
    small = _start(client, budget_points=40)
    refused(409, "campaign_budget_spent", _award, client, small, member, 50, "survey")
    refused(422, "validation_error", _award, client, small, member, 10, "streak")
    # A partner's awards issue its points: beyond its issuance limit, nothing is awarded.
    set_limit(sessions, partner.id, 100)
    refused(422, "issuance_limit_exceeded", _award, client, small, member, 30, "survey")
    left = {c["campaign_id"]: c["remaining_points"] for c in client.get(CAMPAIGNS)}
    assert left[small] == 40
    assert available(sessions, member) == 100


def test_a_member_signs_in_again_the_next_day_within_the_cap(
    client: PartnerClient, partner: Any, sessions: sessionmaker[Session], manual_clock: clock.Manual
) -> None:
    member = enrol(client)
    check_in = _start(client, daily_cap=100, per_member_cap=150)

    def sign_in(points: int) -> campaigns.Award:
        request = campaigns.AwardRequest(check_in, member, points, "sign_in", unique_id("a"))
        with unit_of_work(sessions) as session:
            return campaigns.award(session, partner.id, request)

    first = sign_in(100)
    # Signed requests keep to the wall clock: the next days are asked of the service directly.
    manual_clock.advance(timedelta(days=1))
    second = sign_in(40)
    assert second.business_date == first.business_date + timedelta(days=1)
    manual_clock.advance(timedelta(days=1))
    with pytest.raises(campaigns.CapReached):
        sign_in(20)
    assert available(sessions, member) == 140


def test_parallel_awards_never_spend_more_than_the_budget(world: World) -> None:
    shop = world.merchant()
    budget, each, racers = 1_000, 50, 30
    check_in = _start(world.client(shop), budget_points=budget, per_member_cap=each)
    members = [new_member(world.sessions, [shop.id]) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    results: list[campaigns.Award | Exception] = []

    def race(member: str) -> None:
        barrier.wait(timeout=60)
        request = campaigns.AwardRequest(check_in, member, each, "campaign_bonus", unique_id("a"))
        try:
            with unit_of_work(world.sessions) as session:
                results.append(campaigns.award(session, shop.id, request))
        except Exception as exc:  # the refusal is the result
            results.append(exc)

    threads = [threading.Thread(target=race, args=(m,), daemon=True) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an award hung"
    won = [r for r in results if isinstance(r, campaigns.Award)]
    lost = [r for r in results if not isinstance(r, campaigns.Award)]
    assert len(won) == budget // each
    assert {type(r).__name__ for r in lost} == {"BudgetSpent"}, lost[:3]
    winners = {award.member_id for award in won}
    for member in members:
        assert available(world.sessions, member) == (each if member in winners else 0)
    with world.sessions() as session:
        assert campaigns.get_campaign(session, check_in).remaining_points == 0


def test_a_partners_campaign_settles_as_its_issuance_zero_sum(world: World) -> None:
    shop = world.merchant(issue_price="1.2")
    as_shop = world.client(shop)
    member = enrol(as_shop)
    own = _start(as_shop)
    coalition = _coalition(world.sessions)
    _award(as_shop, own, member, 250, "review")
    _award(as_shop, own, member, 5, "sign_in")
    _award(as_shop, coalition, member, 300, "campaign_bonus")

    [run] = settle_after_cutoff(world.sessions, business_today())

    # The partner's two awards are its issuance at its issue price; the coalition's is no
    # partner's and is not settled.
    assert run.entries == 2
    [line] = run.lines
    assert (line.partner_id, line.issued_points, line.issued_fen) == (shop.id, 255, 306)
    assert line.net_fen == 306
    assert run.zero_sum
    with world.sessions() as session:
        assert ledger.balance(session, f"partner:{shop.id}:payable") == 306
        assert ledger.balance(session, f"partner:{shop.id}:exposure") == 0


def test_an_operator_starts_and_lists_campaigns(cli: Cli, partner: Any) -> None:
    ends = (clock.now() + timedelta(days=7)).isoformat()
    caps = ["--per-member-cap", "500", "--daily-cap", "100", "--ends", ends]
    added = cli.ok("campaign", "add", "Reviews week", "--budget", "20000", *caps)
    campaign_id = added.split()[0]
    assert "'Reviews week' of the coalition: 20,000 of 20,000 points left" in added
    funded = cli.ok(
        "campaign", "add", "Shop survey", "--budget", "5000", "--funder", partner.id, *caps
    )
    assert f"of {partner.id}: 5,000 of 5,000 points left, at most 500 a member (100 a day)" in (
        funded
    )
    listed = cli.ok("campaign", "list", "--funder", partner.id)
    assert campaign_id in listed
    assert funded.split()[0] in listed
    assert "ends_at must be after" in cli.refused(
        "campaign",
        "add",
        "Past",
        "--budget",
        "10",
        *caps[:4],
        "--ends",
        "2020-01-01T00:00:00+08:00",
    )
