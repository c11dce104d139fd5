"""Which tier a member holds, given the qualifying points they earned coalition-wide over the
rolling 12 months (the caller sums those), and how far they are from the next one."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from clearinghouse.numbers import tier_progress
from clearinghouse.rules.earning import EarningRules, EarningRulesError, TierName


class TierStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: TierName
    multiplier: Decimal
    qualifying_points: int
    tier_min_points: int
    next_tier: TierName | None
    """None at the top tier."""
    next_tier_min_points: int | None
    points_to_next_tier: Annotated[StrictInt, Field(gt=0)] | None
    """How many more qualifying points reach the next tier; None at the top tier."""
    progress: Decimal
    """Share of the way from this tier's threshold to the next one, in [0, 1), rounded down to
    4 places so it never reads 1 before the member gets there; exactly 1 at the top tier."""


def tier_for(qualifying_points_12m: int, rules: EarningRules) -> TierStatus:
    if isinstance(qualifying_points_12m, bool) or not isinstance(qualifying_points_12m, int):
        raise TypeError("qualifying_points_12m must be an int")
    if qualifying_points_12m < 0:
        raise EarningRulesError("qualifying points over 12 months cannot be negative")
    # Tiers start at 0 and ascend (the rules validate it), so the last one reached is held.
    index = max(
        i
        for i, tier in enumerate(rules.tiers)
        if qualifying_points_12m >= tier.min_qualifying_points
    )
    current = rules.tiers[index]
    if index + 1 == len(rules.tiers):
        return TierStatus(
            tier=current.name,
            multiplier=current.multiplier,
            qualifying_points=qualifying_points_12m,
            tier_min_points=current.min_qualifying_points,
            next_tier=None,
            next_tier_min_points=None,
            points_to_next_tier=None,
            progress=Decimal(1),
        )
    upcoming = rules.tiers[index + 1]
    span = upcoming.min_qualifying_points - current.min_qualifying_points
    done = qualifying_points_12m - current.min_qualifying_points
    return TierStatus(
        tier=current.name,
        multiplier=current.multiplier,
        qualifying_points=qualifying_points_12m,
        tier_min_points=current.min_qualifying_points,
        next_tier=upcoming.name,
        next_tier_min_points=upcoming.min_qualifying_points,
        points_to_next_tier=upcoming.min_qualifying_points - qualifying_points_12m,
        progress=tier_progress(done, span),
    )
