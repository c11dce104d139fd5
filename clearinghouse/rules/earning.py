"""Earning rules: one versioned, effective-dated document says how a purchase turns into points.

`compute_accrual()` applies a document to one purchase and explains every point it gives in a
breakdown. Everything here is a pure function of its arguments: the caller looks up the member's
month-to-date spend, tier, birthday and today's points, picks the rules version in force, and
posts the result to the ledger. The rules are described in docs/earning-rules.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import (
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from clearinghouse.errors import InvalidRequest
from clearinghouse.numbers import PlainDecimal, plain_decimal, points_earned, yuan_text

BIGINT_MAX = 2**63 - 1

TierName = Literal["normal", "silver", "gold", "diamond"]
TIER_ORDER: tuple[TierName, ...] = ("normal", "silver", "gold", "diamond")
Stacking = Literal["multiply", "best"]


class EarningRulesError(InvalidRequest):
    """The rules cannot be applied to these inputs (the inputs contradict each other or the
    rules version)."""

    code = "earning_rules_error"
    title = "Earning rules cannot be applied"


def _refuse_float(value: object) -> object:
    # A float has already lost the exact value the operator typed; make them say it as a string.
    if isinstance(value, float | bool):
        raise ValueError("exact decimals are given as strings or integers, never as floats")
    return value


ExactDecimal = Annotated[PlainDecimal, BeforeValidator(_refuse_float), Field(allow_inf_nan=False)]
"""Any exact, finite decimal; floats are refused. Written as every answer writes a decimal."""

RuleDecimal = Annotated[ExactDecimal, Field(gt=0, max_digits=18, decimal_places=6)]
"""A rate or multiplier in a rules document: positive, at most 6 decimal places."""

Points = Annotated[StrictInt, Field(ge=0, le=BIGINT_MAX)]
Fen = Annotated[StrictInt, Field(ge=0, le=BIGINT_MAX)]
Month = Annotated[StrictInt, Field(ge=1, le=12)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]
PromotionCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- the rules document -----------------------------------------------------------------------


class MonthlyBracket(_Frozen):
    """Seed 002's tiered earning: once the member's month-to-date spend reaches the threshold,
    a purchase earns at least `points_per_yuan` (1 point a yuan is 1 % back at 100 points = 1
    yuan)."""

    min_month_spend_fen: Fen
    points_per_yuan: RuleDecimal


class TierRule(_Frozen):
    name: TierName
    min_qualifying_points: Points
    multiplier: RuleDecimal


class Promotion(_Frozen):
    """A limited-time multiplier (seed 004 case 1, double points), live on [starts_at, ends_at)."""

    code: PromotionCode
    partner_id: Identifier | None = None
    """None: coalition-wide; otherwise only purchases at this partner."""
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    multiplier: RuleDecimal

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError(f"promotion {self.code} must end after it starts")
        return self

    def applies(self, partner_id: str, at: datetime) -> bool:
        partner_matches = self.partner_id is None or self.partner_id == partner_id
        return partner_matches and self.starts_at <= at < self.ends_at


class PartnerCaps(_Frozen):
    """A partner's caps. Both fields are required: an override replaces the coalition-wide caps
    as a whole, and null there means "no cap" for this partner."""

    per_transaction_cap: Points | None
    per_day_cap: Points | None


def _default_brackets() -> tuple[MonthlyBracket, ...]:
    return (
        MonthlyBracket(min_month_spend_fen=10_000, points_per_yuan=Decimal("1")),
        MonthlyBracket(min_month_spend_fen=30_000, points_per_yuan=Decimal("1.5")),
        MonthlyBracket(min_month_spend_fen=50_000, points_per_yuan=Decimal("2")),
    )


def _default_tiers() -> tuple[TierRule, ...]:
    # The seeds name the tiers but give no thresholds or multipliers: these are placeholders
    # for the operator to configure.
    return (
        TierRule(name="normal", min_qualifying_points=0, multiplier=Decimal("1")),
        TierRule(name="silver", min_qualifying_points=5_000, multiplier=Decimal("1.25")),
        TierRule(name="gold", min_qualifying_points=20_000, multiplier=Decimal("1.5")),
        TierRule(name="diamond", min_qualifying_points=50_000, multiplier=Decimal("2")),
    )


class EarningRules(_Frozen):
    """One version of the coalition's earning rules. The caller stores it (as JSON), numbers the
    versions and picks the one whose `effective_from` is the latest not after the purchase."""

    version: Annotated[StrictInt, Field(ge=1)]
    effective_from: AwareDatetime
    monthly_brackets: tuple[MonthlyBracket, ...] = Field(default_factory=_default_brackets)
    tiers: tuple[TierRule, ...] = Field(default_factory=_default_tiers, min_length=1)
    promotions: tuple[Promotion, ...] = ()
    birthday_multiplier: RuleDecimal = Decimal("2")
    first_purchase_bonus: Points = 500
    first_purchase_bonus_by_partner: dict[Identifier, Points] = Field(default_factory=dict)
    multiplier_stacking: Stacking = "multiply"
    per_transaction_cap: Points | None = None
    per_day_cap: Points | None = None
    caps_by_partner: dict[Identifier, PartnerCaps] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        brackets = self.monthly_brackets
        for lower, upper in zip(brackets, brackets[1:], strict=False):
            if upper.min_month_spend_fen <= lower.min_month_spend_fen:
                raise ValueError(
                    "monthly_brackets must be sorted by min_month_spend_fen, without repeats"
                )
            # A falling rate would make spending more earn less.
            if upper.points_per_yuan < lower.points_per_yuan:
                raise ValueError("monthly_brackets rates must not fall as spend rises")
        if self.tiers[0].min_qualifying_points != 0:
            raise ValueError("the first tier must start at 0 qualifying points")
        for lower_tier, upper_tier in zip(self.tiers, self.tiers[1:], strict=False):
            if upper_tier.min_qualifying_points <= lower_tier.min_qualifying_points:
                raise ValueError("tiers must ascend strictly by min_qualifying_points")
            if TIER_ORDER.index(upper_tier.name) <= TIER_ORDER.index(lower_tier.name):
                raise ValueError(f"tiers must be named in the order {', '.join(TIER_ORDER)}")
        codes = [promotion.code for promotion in self.promotions]
        if len(set(codes)) != len(codes):
            raise ValueError("promotion codes must be unique")
        return self

    def bracket_for(self, month_spend_fen: int) -> MonthlyBracket | None:
        """The highest bracket the month-to-date spend reaches, if any."""
        reached = [b for b in self.monthly_brackets if month_spend_fen >= b.min_month_spend_fen]
        return reached[-1] if reached else None

    def tier_rule(self, name: str) -> TierRule | None:
        return next((tier for tier in self.tiers if tier.name == name), None)

    def caps_for(self, partner_id: str) -> PartnerCaps:
        override = self.caps_by_partner.get(partner_id)
        if override is not None:
            return override
        return PartnerCaps(
            per_transaction_cap=self.per_transaction_cap, per_day_cap=self.per_day_cap
        )

    def first_purchase_bonus_for(self, partner_id: str) -> int:
        return self.first_purchase_bonus_by_partner.get(partner_id, self.first_purchase_bonus)

    def promotions_at(self, partner_id: str, at: datetime) -> list[Promotion]:
        return [promotion for promotion in self.promotions if promotion.applies(partner_id, at)]


# --- inputs and result ------------------------------------------------------------------------


class Purchase(_Frozen):
    amount_fen: Annotated[StrictInt, Field(gt=0, le=BIGINT_MAX)]
    occurred_at: AwareDatetime
    partner_id: Identifier
    store_id: Identifier | None = None
    """None for a partner's online channel; carried for the record, not used by the rules."""


class MemberContext(_Frozen):
    """What the caller knows about the member at the time of the purchase."""

    tier: TierName
    month_spend_fen_including_this: Fen
    """Coalition-wide spend in the purchase's calendar month (coalition time zone), this
    purchase included."""
    birthday_month: Month | None
    occurred_month: Month
    """The purchase's calendar month in the coalition time zone."""
    first_purchase_at_partner: StrictBool
    points_earned_today_at_partner: Points
    """Points this member already earned at this partner on this business day."""


class BreakdownLine(_Frozen):
    rule: str
    description: str
    points: ExactDecimal
    """This rule's signed contribution; the lines of an accrual sum to its points."""


# Wide enough for any sane input; anything that would still round raises instead.
_EXACT = Context(
    prec=400,
    Emax=999_999,
    Emin=-999_999,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Decimal arithmetic that raises rather than rounds."""
    try:
        with localcontext(_EXACT):
            yield
    except DecimalException as exc:
        raise EarningRulesError(f"the numbers are too large to compute exactly: {exc!r}") from exc


class Accrual(_Frozen):
    points: Points
    rules_version: Annotated[StrictInt, Field(ge=1)]
    points_per_yuan: ExactDecimal
    """The earn rate applied before multipliers: max(partner base, bracket)."""
    multiplier: ExactDecimal
    """The combined multiplier applied to the rate's points."""
    breakdown: tuple[BreakdownLine, ...]

    @model_validator(mode="after")
    def _breakdown_adds_up(self) -> Self:
        with exact_arithmetic():
            total = sum((line.points for line in self.breakdown), Decimal(0))
        if total != self.points:
            raise ValueError(f"breakdown sums to {total}, not to {self.points} points")
        return self


# --- computing an accrual ---------------------------------------------------------------------


def compute_accrual(
    purchase: Purchase,
    member: MemberContext,
    base_points_per_yuan: Decimal,
    rules: EarningRules,
) -> Accrual:
    """The points a purchase earns under `rules`, with a line per rule that contributed.

    Order: rate = max(partner base, month bracket); points = yuan x rate; tier, promotion and
    birthday multipliers (combined per `rules.multiplier_stacking`); + first purchase bonus;
    per-transaction cap; per-day cap; round down to a whole point.
    """
    if not isinstance(base_points_per_yuan, Decimal):
        raise TypeError("base_points_per_yuan must be a Decimal")
    if not base_points_per_yuan.is_finite() or base_points_per_yuan < 0:
        raise EarningRulesError("the partner's base earn rate must be a finite decimal >= 0")
    if member.month_spend_fen_including_this < purchase.amount_fen:
        raise EarningRulesError(
            "month_spend_fen_including_this must include the purchase's own amount"
        )
    if purchase.occurred_at < rules.effective_from:
        raise EarningRulesError(
            f"rules version {rules.version} is effective from "
            f"{rules.effective_from.isoformat()}, after the purchase"
        )
    tier = rules.tier_rule(member.tier)
    if tier is None:
        raise EarningRulesError(f"tier {member.tier} is not defined in rules v{rules.version}")

    with exact_arithmetic():
        return _accrue(purchase, member, base_points_per_yuan, rules, tier)


def _accrue(
    purchase: Purchase,
    member: MemberContext,
    base_rate: Decimal,
    rules: EarningRules,
    tier: TierRule,
) -> Accrual:
    partner = purchase.partner_id
    lines: list[BreakdownLine] = []

    def add(rule: str, description: str, points: Decimal) -> None:
        lines.append(BreakdownLine(rule=rule, description=description, points=points))

    amount_yuan = Decimal(purchase.amount_fen).scaleb(-2)
    add(
        "base",
        f"{yuan_text(purchase.amount_fen)} yuan at partner {partner}'s base rate "
        f"{plain_decimal(base_rate)} points/yuan",
        amount_yuan * base_rate,
    )

    rate = base_rate
    bracket = rules.bracket_for(member.month_spend_fen_including_this)
    if bracket is not None:
        bracket_rate = bracket.points_per_yuan
        reached = (
            f"month-to-date spend {yuan_text(member.month_spend_fen_including_this)} yuan reaches "
            f"the {yuan_text(bracket.min_month_spend_fen)}-yuan bracket: "
            f"{plain_decimal(bracket_rate)} points/yuan ({plain_decimal(bracket_rate)} % back)"
        )
        if bracket_rate > base_rate:
            rate = bracket_rate
            add(
                "bracket",
                f"{reached}, {plain_decimal(bracket_rate - base_rate)} points/yuan above the base",
                amount_yuan * (bracket_rate - base_rate),
            )
        else:
            add("bracket", f"{reached}, not above the base: no uplift", Decimal(0))
    earned = amount_yuan * rate

    multipliers: list[tuple[str, str, Decimal]] = [("tier", f"tier {tier.name}", tier.multiplier)]
    for promotion in rules.promotions_at(partner, purchase.occurred_at):
        scope = f"at partner {partner}" if promotion.partner_id else "coalition-wide"
        multipliers.append(
            (
                f"promotion:{promotion.code}",
                f"promotion {promotion.code} ({scope}, {promotion.starts_at.isoformat()} "
                f"to {promotion.ends_at.isoformat()})",
                promotion.multiplier,
            )
        )
    if member.birthday_month is not None and member.birthday_month == member.occurred_month:
        multipliers.append(
            ("birthday", f"birthday month ({member.occurred_month})", rules.birthday_multiplier)
        )

    total = earned
    if rules.multiplier_stacking == "multiply":
        combined = Decimal(1)
        for rule, label, factor in multipliers:
            contribution = total * (factor - 1)
            add(rule, f"{label} x{plain_decimal(factor)}", contribution)
            total += contribution
            combined *= factor
    else:
        # max() keeps the first of equal factors: tier, then promotions, then birthday.
        best = max(range(len(multipliers)), key=lambda i: multipliers[i][2])
        combined = multipliers[best][2]
        for index, (rule, label, factor) in enumerate(multipliers):
            if index == best:
                add(
                    rule,
                    f"{label} x{plain_decimal(factor)}, the largest: applied",
                    earned * (factor - 1),
                )
            else:
                add(
                    rule,
                    f"{label} x{plain_decimal(factor)}: not applied, stacking keeps only the "
                    f"largest (x{plain_decimal(combined)})",
                    Decimal(0),
                )
        total = earned * combined

    if member.first_purchase_at_partner:
        bonus = rules.first_purchase_bonus_for(partner)
        if bonus:
            # Either way the partner issues the bonus points; this says whose setting it is.
            source = (
                "this partner's setting"
                if partner in rules.first_purchase_bonus_by_partner
                else "coalition default"
            )
            add(
                "first_purchase_bonus",
                f"first purchase at partner {partner}: {bonus} points ({source})",
                Decimal(bonus),
            )
            total += bonus

    caps = rules.caps_for(partner)
    if caps.per_transaction_cap is not None and total > caps.per_transaction_cap:
        cut = caps.per_transaction_cap - total
        add(
            "per_transaction_cap",
            f"capped at {caps.per_transaction_cap} points per transaction at partner {partner}",
            cut,
        )
        total += cut
    if caps.per_day_cap is not None:
        room = max(0, caps.per_day_cap - member.points_earned_today_at_partner)
        if total > room:
            cut = room - total
            add(
                "per_day_cap",
                f"capped at {caps.per_day_cap} points a day at partner {partner}: "
                f"{member.points_earned_today_at_partner} already earned today, {room} left",
                cut,
            )
            total += cut

    whole = points_earned(total)
    if whole != total:
        dropped = whole - total
        shown = plain_decimal(-dropped)
        add("rounding", f"rounded down to a whole point: {shown} dropped", dropped)

    return Accrual(
        points=whole,
        rules_version=rules.version,
        points_per_yuan=rate,
        multiplier=combined,
        breakdown=tuple(lines),
    )
