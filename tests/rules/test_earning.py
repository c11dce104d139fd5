"""The earning rules: the seeds' worked examples, each rule on its own, and properties over random
rules documents and purchases. Pure functions: no database."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clearinghouse.rules import (
    Accrual,
    BreakdownLine,
    EarningRules,
    EarningRulesError,
    MemberContext,
    Purchase,
    TierName,
    compute_accrual,
)
from clearinghouse.rules.earning import TIER_ORDER

EFFECTIVE = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 3, 15, 10, 0, tzinfo=UTC)
PARTNERS = ("shop-a", "shop-b")


# --- builders ---------------------------------------------------------------------------------


def make_rules(**changes: Any) -> EarningRules:
    """The default rules document (version 1), with `changes` on top."""
    return EarningRules.model_validate({"version": 1, "effective_from": EFFECTIVE, **changes})


def promotion(
    code: str = "double",
    *,
    partner_id: str | None = None,
    starts_at: datetime = NOW - timedelta(hours=1),
    ends_at: datetime = NOW + timedelta(hours=1),
    multiplier: str = "2",
) -> dict[str, Any]:
    return {
        "code": code,
        "partner_id": partner_id,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "multiplier": multiplier,
    }


def accrue(
    amount_fen: int,
    *,
    rules: EarningRules | None = None,
    base: str = "1",
    prior_month_fen: int = 0,
    tier: TierName = "normal",
    birthday_month: int | None = None,
    occurred_month: int = 3,
    first_purchase: bool = False,
    earned_today: int = 0,
    at: datetime = NOW,
    partner: str = "shop-a",
) -> Accrual:
    return compute_accrual(
        Purchase(amount_fen=amount_fen, occurred_at=at, partner_id=partner, store_id="store-1"),
        MemberContext(
            tier=tier,
            month_spend_fen_including_this=prior_month_fen + amount_fen,
            birthday_month=birthday_month,
            occurred_month=occurred_month,
            first_purchase_at_partner=first_purchase,
            points_earned_today_at_partner=earned_today,
        ),
        Decimal(base),
        rules or make_rules(),
    )


def lines(accrual: Accrual) -> dict[str, Decimal]:
    return {line.rule: line.points for line in accrual.breakdown}


def exact_sum(values: list[Decimal]) -> Decimal:
    with localcontext(prec=400):
        return sum(values, Decimal(0))


# --- the seeds' worked examples (seed 002: 满100元返1%, 满300元返1.5%, 满500元返2%) ---


def test_a_purchase_taking_the_month_to_520_yuan_earns_at_the_2_percent_bracket() -> None:
    accrual = accrue(52_000)

    assert accrual.points == 1_040
    assert accrual.points_per_yuan == 2
    assert accrual.multiplier == 1
    assert lines(accrual) == {"base": 520, "bracket": 520, "tier": 0}
    bracket = accrual.breakdown[1]
    assert "500.00-yuan bracket" in bracket.description
    assert "2 % back" in bracket.description


def test_only_the_purchase_that_reaches_a_bracket_earns_its_rate() -> None:
    # 470 yuan spent earlier this month; this 50-yuan purchase takes the month to 520 yuan.
    accrual = accrue(5_000, prior_month_fen=47_000)

    assert accrual.points == 100
    assert "month-to-date spend 520.00 yuan" in accrual.breakdown[1].description


@pytest.mark.parametrize(
    ("amount_fen", "prior_month_fen", "points_per_yuan", "points"),
    [
        pytest.param(10_000, 0, 1, 100, id="100-yuan month: 1 point a yuan"),
        pytest.param(10_000, 20_000, Decimal("1.5"), 150, id="300-yuan month: 1.5 a yuan"),
        pytest.param(30_000, 0, Decimal("1.5"), 450, id="one 300-yuan purchase"),
        pytest.param(9_999, 20_000, 1, 99, id="299.99-yuan month: still 1 a yuan"),
        pytest.param(10_000, 40_000, 2, 200, id="500-yuan month exactly: 2 a yuan"),
    ],
)
def test_the_month_to_date_spend_picks_the_bracket(
    amount_fen: int, prior_month_fen: int, points_per_yuan: Decimal, points: int
) -> None:
    accrual = accrue(amount_fen, prior_month_fen=prior_month_fen)

    assert accrual.points_per_yuan == points_per_yuan
    assert accrual.points == points


def test_99_99_yuan_in_a_fresh_month_rounds_down_to_99_points() -> None:
    accrual = accrue(9_999)

    assert accrual.points == 99
    assert lines(accrual) == {"base": Decimal("99.99"), "tier": 0, "rounding": Decimal("-0.99")}
    assert "bracket" not in lines(accrual)


def test_a_partner_base_above_the_bracket_rate_wins() -> None:
    accrual = accrue(30_000, base="1.8")

    assert accrual.points == 540
    assert accrual.points_per_yuan == Decimal("1.8")
    assert lines(accrual)["bracket"] == 0
    assert "no uplift" in accrual.breakdown[1].description


def test_below_every_bracket_the_partner_base_applies() -> None:
    assert accrue(5_000, base="0.5").points == 25
    assert accrue(5_000, base="0").points == 0


def test_without_brackets_only_the_base_applies() -> None:
    assert accrue(52_000, rules=make_rules(monthly_brackets=[])).points == 520


# --- multipliers ------------------------------------------------------------------------------


def test_a_partner_double_points_promotion_doubles_points_at_that_partner_only() -> None:
    rules = make_rules(promotions=[promotion("shop-a-double", partner_id="shop-a")])

    at_a = accrue(10_000, rules=rules, partner="shop-a")
    at_b = accrue(10_000, rules=rules, partner="shop-b")

    assert at_a.points == 200
    assert lines(at_a)["promotion:shop-a-double"] == 100
    assert at_b.points == 100
    assert "promotion:shop-a-double" not in lines(at_b)


def test_a_coalition_wide_promotion_applies_at_every_partner() -> None:
    rules = make_rules(promotions=[promotion("coalition-double", partner_id=None)])

    for partner in PARTNERS:
        accrual = accrue(10_000, rules=rules, partner=partner)
        assert accrual.points == 200
        assert "coalition-wide" in accrual.breakdown[-1].description


@pytest.mark.parametrize(
    ("at", "doubled"),
    [
        pytest.param(NOW - timedelta(microseconds=1), False, id="just before start"),
        pytest.param(NOW, True, id="at start"),
        pytest.param(NOW + timedelta(hours=24) - timedelta(microseconds=1), True, id="last µs"),
        pytest.param(NOW + timedelta(hours=24), False, id="at end"),
    ],
)
def test_promotions_run_on_a_half_open_interval(at: datetime, doubled: bool) -> None:
    rules = make_rules(
        promotions=[promotion(starts_at=NOW, ends_at=NOW + timedelta(hours=24), multiplier="2")]
    )

    assert accrue(10_000, rules=rules, at=at).points == (200 if doubled else 100)


def test_promotion_bounds_compare_as_instants_across_time_zones() -> None:
    shanghai = timezone(timedelta(hours=8))
    rules = make_rules(
        promotions=[
            promotion(
                starts_at=datetime(2025, 3, 15, 0, 0, tzinfo=shanghai),
                ends_at=datetime(2025, 3, 16, 0, 0, tzinfo=shanghai),
            )
        ]
    )

    # 2025-03-14 16:00 UTC is midnight in Shanghai: inside.
    assert accrue(10_000, rules=rules, at=datetime(2025, 3, 14, 16, 0, tzinfo=UTC)).points == 200
    assert accrue(10_000, rules=rules, at=datetime(2025, 3, 14, 15, 59, tzinfo=UTC)).points == 100


def test_birthday_month_doubles_points() -> None:
    on_birthday = accrue(10_000, birthday_month=3, occurred_month=3)
    other_month = accrue(10_000, birthday_month=4, occurred_month=3)
    unknown = accrue(10_000, birthday_month=None, occurred_month=3)

    assert on_birthday.points == 200
    assert lines(on_birthday)["birthday"] == 100
    assert other_month.points == unknown.points == 100
    assert "birthday" not in lines(other_month)


@pytest.mark.parametrize(
    ("tier", "points"),
    [("normal", 200), ("silver", 250), ("gold", 300), ("diamond", 400)],
)
def test_tier_multipliers(tier: TierName, points: int) -> None:
    accrual = accrue(20_000, tier=tier)

    assert accrual.points == points
    assert lines(accrual)["tier"] == points - 200


def test_multiply_stacking_multiplies_tier_promotion_and_birthday() -> None:
    rules = make_rules(promotions=[promotion()], multiplier_stacking="multiply")

    accrual = accrue(10_000, rules=rules, tier="gold", birthday_month=3)

    # 100 x1.5 (gold) x2 (promotion) x2 (birthday): each line adds its factor on what came before.
    assert accrual.points == 600
    assert accrual.multiplier == 6
    assert lines(accrual) == {
        "base": 100,
        "bracket": 0,
        "tier": 50,
        "promotion:double": 150,
        "birthday": 300,
    }


def test_best_stacking_keeps_only_the_largest_multiplier() -> None:
    rules = make_rules(promotions=[promotion()], multiplier_stacking="best")

    accrual = accrue(10_000, rules=rules, tier="gold", birthday_month=3)

    # Promotion and birthday tie at x2: the first (the promotion) is applied, the others show 0.
    assert accrual.points == 200
    assert accrual.multiplier == 2
    assert lines(accrual) == {
        "base": 100,
        "bracket": 0,
        "tier": 0,
        "promotion:double": 100,
        "birthday": 0,
    }
    assert "not applied" in accrual.breakdown[2].description
    assert "largest: applied" in accrual.breakdown[3].description


def test_best_stacking_can_pick_the_tier() -> None:
    rules = make_rules(multiplier_stacking="best", birthday_multiplier="1.5")

    accrual = accrue(10_000, rules=rules, tier="diamond", birthday_month=3)

    assert accrual.points == 200
    assert lines(accrual) == {"base": 100, "bracket": 0, "tier": 100, "birthday": 0}


def test_two_promotions_at_once_stack_like_any_multiplier() -> None:
    rules = make_rules(
        promotions=[promotion("a", partner_id="shop-a"), promotion("b", multiplier="1.5")]
    )

    assert accrue(10_000, rules=rules).points == 300
    assert accrue(
        10_000, rules=rules.model_copy(update={"multiplier_stacking": "best"})
    ).points == (200)


# --- first purchase bonus ---------------------------------------------------------------------


def test_first_purchase_at_a_partner_earns_the_default_bonus() -> None:
    accrual = accrue(10_000, first_purchase=True)

    assert accrual.points == 600
    assert lines(accrual)["first_purchase_bonus"] == 500
    assert accrue(10_000, first_purchase=False).points == 100


def test_a_partner_override_replaces_the_first_purchase_bonus() -> None:
    rules = make_rules(first_purchase_bonus_by_partner={"shop-a": 1_000, "shop-b": 0})

    assert accrue(10_000, rules=rules, first_purchase=True, partner="shop-a").points == 1_100
    at_b = accrue(10_000, rules=rules, first_purchase=True, partner="shop-b")
    assert at_b.points == 100
    assert "first_purchase_bonus" not in lines(at_b)


def test_the_first_purchase_bonus_is_not_multiplied() -> None:
    rules = make_rules(promotions=[promotion()])

    accrual = accrue(10_000, rules=rules, first_purchase=True, birthday_month=3)

    assert accrual.points == 100 * 2 * 2 + 500


# --- caps -------------------------------------------------------------------------------------


def test_the_per_transaction_cap_cuts_points_and_says_so() -> None:
    accrual = accrue(52_000, rules=make_rules(per_transaction_cap=300))

    assert accrual.points == 300
    assert lines(accrual)["per_transaction_cap"] == -740


def test_caps_apply_after_the_first_purchase_bonus() -> None:
    accrual = accrue(10_000, rules=make_rules(per_transaction_cap=300), first_purchase=True)

    assert accrual.points == 300
    assert lines(accrual)["per_transaction_cap"] == -300


def test_a_capped_fraction_leaves_nothing_to_round() -> None:
    accrual = accrue(20_050, rules=make_rules(per_transaction_cap=200))

    assert accrual.points == 200
    assert lines(accrual)["per_transaction_cap"] == Decimal("-0.50")
    assert "rounding" not in lines(accrual)


@pytest.mark.parametrize(
    ("earned_today", "points", "cut"),
    [
        pytest.param(0, 200, None, id="room for all"),
        pytest.param(800, 200, None, id="exactly reaches the cap"),
        pytest.param(900, 100, -100, id="partly cut"),
        pytest.param(1_000, 0, -200, id="cap already reached"),
        pytest.param(1_500, 0, -200, id="over the cap already: zero, never negative"),
    ],
)
def test_the_per_day_cap_counts_points_already_earned_today(
    earned_today: int, points: int, cut: int | None
) -> None:
    accrual = accrue(20_000, rules=make_rules(per_day_cap=1_000), earned_today=earned_today)

    assert accrual.points == points
    assert lines(accrual).get("per_day_cap") == cut


def test_per_transaction_cap_applies_before_the_per_day_cap() -> None:
    rules = make_rules(per_transaction_cap=500, per_day_cap=1_000)

    accrual = accrue(52_000, rules=rules, earned_today=700)

    assert accrual.points == 300
    assert [line.rule for line in accrual.breakdown][-2:] == ["per_transaction_cap", "per_day_cap"]
    assert lines(accrual)["per_transaction_cap"] == -540
    assert lines(accrual)["per_day_cap"] == -200


def test_a_partner_cap_override_replaces_the_coalition_caps() -> None:
    rules = make_rules(
        per_transaction_cap=300,
        per_day_cap=1_000,
        caps_by_partner={"shop-a": {"per_transaction_cap": None, "per_day_cap": None}},
    )

    assert accrue(52_000, rules=rules, partner="shop-a", earned_today=5_000).points == 1_040
    assert accrue(52_000, rules=rules, partner="shop-b").points == 300


# --- the result and its inputs ----------------------------------------------------------------


def test_the_accrual_serialises_to_json_with_decimals_as_strings() -> None:
    accrual = accrue(9_999, rules=make_rules(promotions=[promotion(multiplier="1.25")]))

    document = accrual.model_dump(mode="json")

    assert document["points"] == 124
    assert document["rules_version"] == 1
    assert document["breakdown"][0] == {
        "rule": "base",
        "description": "99.99 yuan at partner shop-a's base rate 1 points/yuan",
        "points": "99.99",
    }
    assert all(isinstance(line["points"], str) for line in document["breakdown"])
    assert Accrual.model_validate_json(json.dumps(document)) == accrual


def test_an_accrual_whose_breakdown_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValidationError, match="breakdown sums to 100"):
        Accrual(
            points=101,
            rules_version=1,
            points_per_yuan=Decimal(1),
            multiplier=Decimal(1),
            breakdown=(BreakdownLine(rule="base", description="", points=Decimal(100)),),
        )


def test_month_spend_must_include_the_purchase() -> None:
    with pytest.raises(EarningRulesError, match="include the purchase"):
        compute_accrual(
            Purchase(amount_fen=10_000, occurred_at=NOW, partner_id="shop-a"),
            MemberContext(
                tier="normal",
                month_spend_fen_including_this=9_999,
                birthday_month=None,
                occurred_month=3,
                first_purchase_at_partner=False,
                points_earned_today_at_partner=0,
            ),
            Decimal(1),
            make_rules(),
        )


def test_rules_not_yet_effective_are_refused() -> None:
    with pytest.raises(EarningRulesError, match="effective from"):
        accrue(10_000, at=EFFECTIVE - timedelta(microseconds=1))


def test_a_tier_missing_from_the_rules_is_refused() -> None:
    three_tiers = make_rules(
        tiers=[
            {"name": "normal", "min_qualifying_points": 0, "multiplier": "1"},
            {"name": "silver", "min_qualifying_points": 1_000, "multiplier": "1.2"},
            {"name": "gold", "min_qualifying_points": 5_000, "multiplier": "1.5"},
        ]
    )

    with pytest.raises(EarningRulesError, match="tier diamond is not defined"):
        accrue(10_000, rules=three_tiers, tier="diamond")


def test_the_base_rate_must_be_an_exact_non_negative_decimal() -> None:
    with pytest.raises(EarningRulesError, match="base earn rate"):
        accrue(10_000, base="-1")
    with pytest.raises(EarningRulesError, match="base earn rate"):
        accrue(10_000, base="NaN")
    with pytest.raises(TypeError, match="must be a Decimal"):
        compute_accrual(
            Purchase(amount_fen=100, occurred_at=NOW, partner_id="shop-a"),
            MemberContext(
                tier="normal",
                month_spend_fen_including_this=100,
                birthday_month=None,
                occurred_month=3,
                first_purchase_at_partner=False,
                points_earned_today_at_partner=0,
            ),
            1.0,  # type: ignore[arg-type]
            make_rules(),
        )


@pytest.mark.parametrize(
    "purchase",
    [
        {"amount_fen": 0, "occurred_at": NOW, "partner_id": "shop-a"},
        {"amount_fen": 100.0, "occurred_at": NOW, "partner_id": "shop-a"},
        {"amount_fen": 100, "occurred_at": datetime(2025, 3, 1), "partner_id": "shop-a"},
        {"amount_fen": 100, "occurred_at": NOW, "partner_id": ""},
    ],
    ids=["zero amount", "float amount", "naive time", "empty partner"],
)
def test_malformed_purchases_are_refused(purchase: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Purchase.model_validate(purchase)


# --- the rules document -----------------------------------------------------------------------


def test_the_defaults_follow_the_seeds() -> None:
    rules = make_rules()

    assert [(b.min_month_spend_fen, b.points_per_yuan) for b in rules.monthly_brackets] == [
        (10_000, 1),
        (30_000, Decimal("1.5")),
        (50_000, 2),
    ]
    assert [t.name for t in rules.tiers] == list(TIER_ORDER)
    assert rules.birthday_multiplier == 2
    assert rules.first_purchase_bonus == 500
    assert rules.multiplier_stacking == "multiply"
    assert rules.per_transaction_cap is None
    assert rules.per_day_cap is None


def test_the_rules_document_round_trips_through_json_exactly() -> None:
    rules = make_rules(
        promotions=[promotion(partner_id="shop-a", multiplier="1.125")],
        first_purchase_bonus_by_partner={"shop-a": 1_000},
        caps_by_partner={"shop-b": {"per_transaction_cap": 5_000, "per_day_cap": None}},
    )

    stored = json.loads(rules.model_dump_json())  # as read back from a JSONB column

    assert stored["monthly_brackets"][1] == {
        "min_month_spend_fen": 30_000,
        "points_per_yuan": "1.5",
    }
    assert stored["promotions"][0]["multiplier"] == "1.125"
    assert EarningRules.model_validate(stored) == rules
    assert EarningRules.model_validate_json(rules.model_dump_json()) == rules


Mutation = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        document[key] = value

    return mutate


def _bracket(fen: int, rate: Any) -> dict[str, Any]:
    return {"min_month_spend_fen": fen, "points_per_yuan": rate}


def _tier(name: str, minimum: int, multiplier: Any = "1") -> dict[str, Any]:
    return {"name": name, "min_qualifying_points": minimum, "multiplier": multiplier}


_T = NOW.isoformat()
INVALID: dict[str, Mutation] = {
    "brackets out of order": _set(
        "monthly_brackets", [_bracket(30_000, "1"), _bracket(10_000, "1")]
    ),
    "repeated bracket": _set("monthly_brackets", [_bracket(10_000, "1"), _bracket(10_000, "2")]),
    "falling bracket rate": _set(
        "monthly_brackets", [_bracket(10_000, "2"), _bracket(20_000, "1")]
    ),
    "float bracket rate": _set("monthly_brackets", [_bracket(10_000, 1.5)]),
    "zero bracket rate": _set("monthly_brackets", [_bracket(10_000, "0")]),
    "negative threshold": _set("monthly_brackets", [_bracket(-1, "1")]),
    "too many decimal places": _set("monthly_brackets", [_bracket(10_000, "1.0000001")]),
    "no tiers": _set("tiers", []),
    "tiers not from 0": _set("tiers", [_tier("normal", 100)]),
    "tiers not ascending": _set("tiers", [_tier("normal", 0), _tier("silver", 0)]),
    "tiers out of name order": _set(
        "tiers", [_tier("normal", 0), _tier("gold", 10), _tier("silver", 20)]
    ),
    "repeated tier": _set("tiers", [_tier("normal", 0), _tier("normal", 10)]),
    "unknown tier": _set("tiers", [_tier("platinum", 0)]),
    "zero tier multiplier": _set("tiers", [_tier("normal", 0, "0")]),
    "negative tier multiplier": _set("tiers", [_tier("normal", 0, "-1.5")]),
    "float birthday multiplier": _set("birthday_multiplier", 2.0),
    "NaN birthday multiplier": _set("birthday_multiplier", "NaN"),
    "infinite birthday multiplier": _set("birthday_multiplier", "Infinity"),
    "promotion ends at start": _set(
        "promotions", [{"code": "x", "starts_at": _T, "ends_at": _T, "multiplier": "2"}]
    ),
    "promotion ends before start": _set(
        "promotions",
        [
            {
                "code": "x",
                "starts_at": _T,
                "ends_at": (NOW - timedelta(seconds=1)).isoformat(),
                "multiplier": "2",
            }
        ],
    ),
    "naive promotion": _set(
        "promotions",
        [
            {
                "code": "x",
                "starts_at": "2025-03-01T00:00:00",
                "ends_at": "2025-03-02T00:00:00",
                "multiplier": "2",
            }
        ],
    ),
    "repeated promotion code": _set(
        "promotions",
        [promotion("x", starts_at=NOW, ends_at=NOW + timedelta(days=1))] * 2,
    ),
    "promotion code with spaces": _set("promotions", [promotion("double points")]),
    "negative bonus": _set("first_purchase_bonus", -1),
    "negative partner bonus": _set("first_purchase_bonus_by_partner", {"shop-a": -5}),
    "float bonus": _set("first_purchase_bonus", 200.0),
    "unknown stacking": _set("multiplier_stacking", "sum"),
    "negative cap": _set("per_day_cap", -1),
    "partner caps incomplete": _set("caps_by_partner", {"shop-a": {"per_day_cap": 10}}),
    "naive effective_from": _set("effective_from", "2025-01-01T00:00:00"),
    "version 0": _set("version", 0),
    "unknown field": _set("referral_bonus", 100),
}


def default_document() -> dict[str, Any]:
    document: dict[str, Any] = make_rules().model_dump(mode="json")
    return document


@pytest.mark.parametrize("mutate", INVALID.values(), ids=INVALID.keys())
def test_invalid_rules_documents_are_refused(mutate: Mutation) -> None:
    document = default_document()
    mutate(document)

    with pytest.raises(ValidationError):
        EarningRules.model_validate(document)


def test_json_numbers_with_a_fraction_are_refused_as_floats() -> None:
    text = (
        make_rules().model_dump_json().replace('"points_per_yuan":"1.5"', '"points_per_yuan":1.5')
    )

    with pytest.raises(ValidationError, match="never as floats"):
        EarningRules.model_validate_json(text)


# --- properties -------------------------------------------------------------------------------


def _decimals(low: str, high: str, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=Decimal(low),
        max_value=Decimal(high),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )


_caps = st.one_of(st.none(), st.integers(0, 5_000))


@st.composite
def rules_documents(draw: st.DrawFn) -> EarningRules:
    thresholds = sorted(draw(st.lists(st.integers(0, 200_000), unique=True, max_size=4)))
    rates = sorted(draw(st.lists(_decimals("0.01", "5"), min_size=len(thresholds))))
    tier_names = [name for name in TIER_ORDER if draw(st.booleans())] or ["normal"]
    tier_minimums = [0, *sorted(draw(st.sets(st.integers(1, 100_000), min_size=3, max_size=3)))]
    tiers = [
        _tier(name, minimum, draw(_decimals("0.1", "3")))
        for name, minimum in zip(tier_names, tier_minimums, strict=False)
    ]
    promotions = [
        promotion(
            f"p{index}",
            partner_id=draw(st.sampled_from([None, *PARTNERS])),
            starts_at=NOW + timedelta(minutes=draw(st.integers(-120, 120))),
            ends_at=NOW + timedelta(minutes=draw(st.integers(121, 240))),
            multiplier=str(draw(_decimals("0.5", "3"))),
        )
        for index in range(draw(st.integers(0, 3)))
    ]
    partner_caps = st.fixed_dictionaries({"per_transaction_cap": _caps, "per_day_cap": _caps})
    return make_rules(
        monthly_brackets=[_bracket(t, r) for t, r in zip(thresholds, rates, strict=False)],
        tiers=tiers,
        promotions=promotions,
        birthday_multiplier=draw(_decimals("0.5", "3")),
        first_purchase_bonus=draw(st.integers(0, 1_000)),
        first_purchase_bonus_by_partner=draw(
            st.dictionaries(st.sampled_from(PARTNERS), st.integers(0, 1_000))
        ),
        multiplier_stacking=draw(st.sampled_from(["multiply", "best"])),
        per_transaction_cap=draw(_caps),
        per_day_cap=draw(_caps),
        caps_by_partner=draw(st.dictionaries(st.sampled_from(PARTNERS), partner_caps)),
    )


@dataclass(frozen=True)
class Case:
    rules: EarningRules
    amount_fen: int
    prior_month_fen: int
    base: Decimal
    tier: TierName
    birthday_month: int | None
    occurred_month: int
    first_purchase: bool
    earned_today: int
    at: datetime
    partner: str

    def accrue(
        self, *, amount_fen: int | None = None, prior_month_fen: int | None = None
    ) -> Accrual:
        return accrue(
            self.amount_fen if amount_fen is None else amount_fen,
            rules=self.rules,
            base=str(self.base),
            prior_month_fen=self.prior_month_fen if prior_month_fen is None else prior_month_fen,
            tier=self.tier,
            birthday_month=self.birthday_month,
            occurred_month=self.occurred_month,
            first_purchase=self.first_purchase,
            earned_today=self.earned_today,
            at=self.at,
            partner=self.partner,
        )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rules = draw(rules_documents())
    return Case(
        rules=rules,
        amount_fen=draw(st.integers(1, 10_000_000)),
        prior_month_fen=draw(st.integers(0, 10_000_000)),
        base=draw(_decimals("0", "5", places=3)),
        tier=draw(st.sampled_from([tier.name for tier in rules.tiers])),
        birthday_month=draw(st.one_of(st.none(), st.integers(1, 12))),
        occurred_month=draw(st.integers(1, 12)),
        first_purchase=draw(st.booleans()),
        earned_today=draw(st.integers(0, 6_000)),
        at=NOW + timedelta(minutes=draw(st.integers(-300, 300))),
        partner=draw(st.sampled_from(PARTNERS)),
    )


@given(cases())
def test_the_breakdown_sums_exactly_to_the_points(case: Case) -> None:
    accrual = case.accrue()

    assert accrual.points >= 0
    assert exact_sum([line.points for line in accrual.breakdown]) == accrual.points
    assert Accrual.model_validate_json(accrual.model_dump_json()) == accrual


@given(cases())
def test_points_never_exceed_the_caps(case: Case) -> None:
    accrual = case.accrue()
    caps = case.rules.caps_for(case.partner)

    if caps.per_transaction_cap is not None:
        assert accrual.points <= caps.per_transaction_cap
    if caps.per_day_cap is not None:
        assert accrual.points <= max(0, caps.per_day_cap - case.earned_today)


@given(cases())
def test_uncapped_points_are_the_formula_rounded_down(case: Case) -> None:
    """An independent statement of the rules, checked where no cap binds."""
    rules = case.rules
    accrual = case.accrue()
    bracket = rules.bracket_for(case.prior_month_fen + case.amount_fen)
    rate = max(case.base, bracket.points_per_yuan if bracket else Decimal(0))
    tier = rules.tier_rule(case.tier)
    assert tier is not None
    factors = [tier.multiplier] + [p.multiplier for p in rules.promotions_at(case.partner, case.at)]
    if case.birthday_month == case.occurred_month:
        factors.append(rules.birthday_multiplier)
    with localcontext(prec=400):
        combined = Decimal(1)
        for factor in factors:
            combined *= factor
        if rules.multiplier_stacking == "best":
            combined = max(factors)
        bonus = rules.first_purchase_bonus_for(case.partner) if case.first_purchase else 0
        expected = Decimal(case.amount_fen) / 100 * rate * combined + bonus

    if not any(line.rule.endswith("_cap") for line in accrual.breakdown):
        assert accrual.points == int(expected.to_integral_value(rounding=ROUND_FLOOR))
    else:
        assert accrual.points <= expected
    assert accrual.multiplier == combined
    assert accrual.points_per_yuan == rate


@given(cases(), st.integers(0, 10_000_000))
def test_more_spend_never_earns_fewer_points(case: Case, extra_fen: int) -> None:
    """Same rules, member, partner, time and spend earlier in the month: a larger purchase never
    earns fewer points. This holds even when a cap binds (a cap only clips the total), because
    bracket rates never fall as spend rises (the rules refuse that) and multipliers are > 0."""
    smaller = case.accrue()
    larger = case.accrue(amount_fen=case.amount_fen + extra_fen)

    assert larger.points >= smaller.points


@given(cases(), st.integers(0, 10_000_000))
def test_more_spend_earlier_in_the_month_never_earns_fewer_points(
    case: Case, extra_fen: int
) -> None:
    """The same purchase after more spend earlier in the month reaches the same or a higher
    bracket, so it never earns fewer points."""
    assert (
        case.accrue(prior_month_fen=case.prior_month_fen + extra_fen).points >= case.accrue().points
    )


@given(rules_documents())
def test_valid_rules_documents_round_trip_through_json(rules: EarningRules) -> None:
    assert EarningRules.model_validate(json.loads(rules.model_dump_json())) == rules


@given(rules_documents(), st.sampled_from(sorted(INVALID)))
def test_invalid_changes_to_any_valid_document_are_refused(
    rules: EarningRules, breakage: str
) -> None:
    document: dict[str, Any] = rules.model_dump(mode="json")
    INVALID[breakage](document)

    with pytest.raises(ValidationError):
        EarningRules.model_validate(document)


@given(
    rules_documents(),
    st.sampled_from(["birthday_multiplier", "tier", "bracket", "promotion"]),
    st.one_of(_decimals("-5", "0"), st.floats(0.1, 5, allow_nan=False)),
)
def test_non_positive_or_float_multipliers_are_refused_anywhere(
    rules: EarningRules, where: str, bad: Decimal | float
) -> None:
    document: dict[str, Any] = rules.model_dump(mode="json")
    value = bad if isinstance(bad, float) else str(bad)
    if where == "birthday_multiplier":
        document["birthday_multiplier"] = value
    elif where == "tier":
        document["tiers"][-1]["multiplier"] = value
    elif where == "bracket":
        document["monthly_brackets"] = [_bracket(10_000, value)]
    else:
        document["promotions"] = [{**promotion(), "multiplier": value}]

    with pytest.raises(ValidationError):
        EarningRules.model_validate(document)
