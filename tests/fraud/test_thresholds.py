"""Thresholds are data: a partner's published version changes the outcome for that partner only,
every case records the versions in force, and a version is validated, numbered and kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.errors import InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.rules import Thresholds
from clearinghouse.fraud.tables import fraud_thresholds
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.fraud import cases_of, publish, rule_names
from tests.builders.http import refused
from tests.builders.partners import ApiPartner
from tests.builders.points import wallet_of


def _versions(sessions: sessionmaker[Session], case_id: str) -> dict[str, int]:
    """The threshold versions the case recorded."""
    with sessions() as session:
        versions: dict[str, int] = fraud.get_case(session, case_id).verdicts["versions"]
    return versions


def test_a_partners_version_changes_its_outcome_and_no_one_elses(
    sessions: sessionmaker[Session],
    partner: ApiPartner,
    client: PartnerClient,
    other_partner: ApiPartner,
    other_client: PartnerClient,
) -> None:
    mine, theirs = enrol(client), enrol(other_client)
    for c, member_id, store_id in (
        (client, mine, partner.store_id),
        (other_client, theirs, other_partner.store_id),
    ):
        assert buy(c, member_id, 20_000, store_id=store_id)["review_case_id"] is None

    first = publish(sessions, partner.id, max_accrual_fen_offline=15_000)

    blocked = refused(403, "fraud_blocked", buy, client, mine, 20_000, store_id=partner.store_id)
    assert (
        buy(other_client, theirs, 20_000, store_id=other_partner.store_id)["review_case_id"] is None
    )
    assert cases_of(sessions, theirs) == []
    assert _versions(sessions, blocked["case_id"]) == {"coalition": 1, partner.id: first}

    # A new version replaces the partner's overrides as a whole; past cases keep theirs.
    second = publish(
        sessions, partner.id, max_accrual_fen_offline=15_000, amount_cap_action="review"
    )
    assert second == first + 1
    reviewed = buy(client, mine, 20_000, store_id=partner.store_id)
    assert reviewed["review_case_id"] is not None
    assert _versions(sessions, reviewed["review_case_id"]) == {"coalition": 1, partner.id: second}
    assert _versions(sessions, blocked["case_id"]) == {"coalition": 1, partner.id: first}

    third = publish(sessions, partner.id)  # no overrides: the coalition's defaults again
    assert buy(client, mine, 20_000, store_id=partner.store_id)["review_case_id"] is None
    assert [rule_names(c) for c in cases_of(sessions, mine)] == [["amount_cap"], ["amount_cap"]]
    with sessions() as session:
        assert fraud.thresholds_for(session, partner.id, datetime.now(UTC)) == (
            Thresholds(),
            {"coalition": 1, partner.id: third},
        )


def test_a_partners_version_overrides_only_what_it_names(
    sessions: sessionmaker[Session], partner: ApiPartner, other_partner: ApiPartner
) -> None:
    version = publish(sessions, partner.id, points_per_day=10, velocity_action="block")
    now = datetime.now(UTC)
    with sessions() as session:
        mine, my_versions = fraud.thresholds_for(session, partner.id, now)
        theirs, their_versions = fraud.thresholds_for(session, other_partner.id, now)
    assert mine == Thresholds(points_per_day=10, velocity_action="block")
    assert my_versions == {"coalition": 1, partner.id: version}
    assert (theirs, their_versions) == (Thresholds(), {"coalition": 1})


def test_the_coalitions_first_version_is_the_documented_defaults(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        row = session.execute(
            select(fraud_thresholds).where(
                fraud_thresholds.c.partner_id.is_(None), fraud_thresholds.c.version == 1
            )
        ).one()
    assert Thresholds.model_validate(row.settings) == Thresholds()
    # A threshold added since takes its documented default until a version sets it.
    assert set(row.settings) | {"offline_debt_points"} == set(Thresholds.model_fields)


def test_an_action_of_allow_turns_a_rule_off_for_the_partner(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    publish(sessions, partner.id, amount_cap_action="allow")
    member_id = enrol(client)
    accrual = buy(client, member_id, 1_000_001, store_id=partner.store_id)
    assert accrual["review_case_id"] is None
    assert cases_of(sessions, member_id) == []
    assert wallet_of(sessions, member_id)[0] == accrual["points"]


@pytest.mark.parametrize(
    "settings",
    [
        {"velocity_action": "ban"},
        {"redemption_per_hour": 3},  # a typo is refused, not ignored
        {"store_outlier_mads": 0},
        {"store_outlier_history": 2},
        {"points_per_day": -1},
        {"exchange_round_trips_per_day": 0},
    ],
)
def test_invalid_thresholds_are_refused_and_take_no_version(
    sessions: sessionmaker[Session], partner: ApiPartner, settings: dict[str, object]
) -> None:
    with sessions() as session, session.begin(), pytest.raises(InvalidRequest):
        fraud.publish_thresholds(session, partner.id, settings)
    assert publish(sessions, partner.id, points_per_day=1) == 1


def test_a_published_version_cannot_be_changed(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    publish(sessions, partner.id, points_per_day=1)
    with sessions() as session, session.begin(), pytest.raises(DBAPIError):
        session.execute(
            update(fraud_thresholds)
            .where(fraud_thresholds.c.partner_id == partner.id)
            .values(settings={"points_per_day": 1_000_000})
        )


def test_a_new_version_applies_to_purchases_reported_after_it_even_back_dated(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id = enrol(client)
    publish(sessions, partner.id, max_accrual_fen_offline=15_000)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    refused(
        403,
        "fraud_blocked",
        buy,
        client,
        member_id,
        20_000,
        store_id=partner.store_id,
        occurred_at=an_hour_ago,
    )
