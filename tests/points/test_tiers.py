"""Tiers: qualifying points move a member up; the member view explains where they stand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.points.tables import tier_changes
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol, lines, view


def test_a_new_member_is_normal_on_the_way_to_silver(client: PartnerClient) -> None:
    tier = view(client, enrol(client))["tier"]
    assert tier["tier"] == "normal"
    assert tier["qualifying_points"] == 0
    assert tier["next_tier"] == "silver"
    assert tier["points_to_next_tier"] == 5_000
    assert Decimal(tier["progress"]) == 0


def test_enough_qualifying_points_move_a_member_to_silver(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    first = buy(client, member_id, 100_000)  # 1,000 yuan at 2 a yuan, + 500
    assert first["points"] == 2_500
    assert first["tier"] == "normal"
    tier = view(client, member_id)["tier"]
    assert (tier["tier"], tier["points_to_next_tier"]) == ("normal", 2_500)
    assert Decimal(tier["progress"]) == Decimal("0.5")

    before = datetime.now(UTC)
    second = buy(client, member_id, 135_000)  # 1,350 yuan at 2 a yuan
    after = datetime.now(UTC)
    assert second["points"] == 2_700
    assert second["tier"] == "silver"

    tier = view(client, member_id)["tier"]
    assert tier["tier"] == "silver"
    assert tier["qualifying_points"] == 5_200
    assert tier["next_tier"] == "gold"
    assert tier["points_to_next_tier"] == 20_000 - 5_200
    assert Decimal(tier["progress"]) == Decimal("0.0133")  # 200 / 15,000, rounded down

    with sessions() as session:
        changes = session.execute(
            select(tier_changes).where(tier_changes.c.member_id == member_id)
        ).all()
    assert len(changes) == 1
    change = changes[0]
    assert (change.from_tier, change.to_tier, change.qualifying_points) == (
        "normal",
        "silver",
        5_200,
    )
    assert before <= change.changed_at <= after

    # The next purchase earns the silver multiplier.
    third = buy(client, member_id, 10_000)  # 100 yuan at 2 a yuan = 200, x1.25
    assert ("tier", Decimal("50")) in lines(third)
    assert third["points"] == 250


def test_a_back_dated_purchase_does_not_record_a_downgrade(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    # A till roll from before the member reached silver earns at the tier of its time but
    # records no change: the member stays silver.
    member_id = enrol(client)
    assert buy(client, member_id, 235_000)["tier"] == "silver"  # 4,700 + 500 = 5,200
    late = buy(client, member_id, 10_000, occurred_at=datetime.now(UTC) - timedelta(days=20))
    assert view(client, member_id)["tier"]["tier"] == "silver"
    with sessions() as session:
        changes = session.execute(
            select(tier_changes.c.from_tier, tier_changes.c.to_tier)
            .where(tier_changes.c.member_id == member_id)
            .order_by(tier_changes.c.id)
        ).all()
    assert [tuple(change) for change in changes] == [("normal", "silver")]
    assert late["tier"] == "silver"
