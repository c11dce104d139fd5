"""Tier status from qualifying points over the rolling 12 months."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearinghouse.rules import EarningRules, EarningRulesError, TierName, tier_for

RULES = EarningRules(version=1, effective_from=datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("points", "tier", "multiplier"),
    [
        (0, "normal", Decimal(1)),
        (4_999, "normal", Decimal(1)),
        (5_000, "silver", Decimal("1.25")),
        (19_999, "silver", Decimal("1.25")),
        (20_000, "gold", Decimal("1.5")),
        (49_999, "gold", Decimal("1.5")),
        (50_000, "diamond", Decimal(2)),
        (10**12, "diamond", Decimal(2)),
    ],
)
def test_thresholds_are_reached_exactly_at_the_boundary(
    points: int, tier: TierName, multiplier: Decimal
) -> None:
    status = tier_for(points, RULES)

    assert status.tier == tier
    assert status.multiplier == multiplier


def test_progress_towards_the_next_tier() -> None:
    status = tier_for(2_500, RULES)

    assert status.next_tier == "silver"
    assert status.next_tier_min_points == 5_000
    assert status.points_to_next_tier == 2_500
    assert status.progress == Decimal("0.5")


def test_progress_is_measured_from_the_current_tier_and_rounds_down() -> None:
    status = tier_for(19_999, RULES)

    assert status.tier == "silver"
    assert status.tier_min_points == 5_000
    assert status.next_tier == "gold"
    assert status.points_to_next_tier == 1
    # 14,999 / 15,000 = 0.99993...: shown as 0.9999, never as 1 before the member gets there.
    assert status.progress == Decimal("0.9999")
    assert tier_for(5_000, RULES).progress == 0


def test_the_top_tier_has_no_next_tier() -> None:
    status = tier_for(50_000, RULES)

    assert status.tier == "diamond"
    assert status.next_tier is None
    assert status.next_tier_min_points is None
    assert status.points_to_next_tier is None
    assert status.progress == 1


def test_a_single_tier_programme_is_always_at_the_top() -> None:
    rules = RULES.model_copy(
        update={"tiers": (RULES.tiers[0],)},
    )

    assert tier_for(123, rules).next_tier is None


def test_negative_or_non_integer_points_are_refused() -> None:
    with pytest.raises(EarningRulesError, match="cannot be negative"):
        tier_for(-1, RULES)
    with pytest.raises(TypeError, match="must be an int"):
        tier_for(True, RULES)


def test_the_status_serialises_to_json() -> None:
    assert tier_for(2_500, RULES).model_dump(mode="json") == {
        "tier": "normal",
        "multiplier": "1",
        "qualifying_points": 2_500,
        "tier_min_points": 0,
        "next_tier": "silver",
        "next_tier_min_points": 5_000,
        "points_to_next_tier": 2_500,
        "progress": "0.5000",
    }


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_more_qualifying_points_never_lower_the_tier(low: int, extra: int) -> None:
    order = [tier.name for tier in RULES.tiers]

    assert order.index(tier_for(low + extra, RULES).tier) >= order.index(tier_for(low, RULES).tier)


@given(st.integers(0, 10**9))
def test_status_is_consistent(points: int) -> None:
    status = tier_for(points, RULES)

    assert status.tier_min_points <= points
    if status.next_tier is None:
        assert status.progress == 1
    else:
        assert status.next_tier_min_points is not None
        assert status.points_to_next_tier == status.next_tier_min_points - points > 0
        assert 0 <= status.progress < 1
