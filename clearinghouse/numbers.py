"""Numbers, stated once. Every rounding the product does is a function here, named for its rule
and saying where it is used; nothing else in clearinghouse/, partners/ or settlement/ rounds
(tests/test_numbers.py reads their source to hold that). Money is shown to people one way
(`yuan_text`), and an answer writes a decimal one way (`PlainDecimal`).

Points and fen are `int`, rates are `Decimal`. A conversion between them rounds by one of these
rules and, where a ledger entry depends on it, posts what the rounding leaves to the rounding
account, so every asset balances exactly."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

# Money


def fen_half_even(fen: Decimal) -> int:
    """Money rounds half-even to the fen (the banker's rounding: a tie goes to the even fen, so
    ties do not drift one way over many entries). `fen` is an exact amount of fen, such as points
    x a rate in fen per point.

    Used for every value in CNY a points movement carries: the issue value of an accrual, a
    referral bonus and an exchange in (points x issue price), the redemption value of a hold, a
    redemption refund and an exchange out (points x redemption value), and the liability
    report."""
    return int(fen.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


money = fen_half_even
"""The former name of `fen_half_even`."""


def yuan_text(fen: int, *, grouped: bool = False) -> str:
    """Money as people read it: yuan with exactly two decimals, written from the integer fen and
    never through a float, so no amount is ever shown off by a fen. `123456` → `"1234.56"`
    (`"1,234.56"` grouped), `-5` → `"-0.05"`, `0` → `"0.00"`. Not a rounding: every fen shows.

    Used by the command line (settlement runs, the demo), the console's `yuan` filter and PDF
    (which add the `¥`), and the earning breakdown's descriptions."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}" if grouped else f"{sign}{whole}.{cents:02d}"


# Points


def points_earned(exact: Decimal) -> int:
    """Earning rounds down to a whole point (floor): a member never gets a fraction of a point,
    and never a point the purchase did not fully earn. The fraction dropped shows in the
    accrual's breakdown as its `rounding` line.

    Used by the earning rules (`clearinghouse.rules.earning`) on the points a purchase earns
    after rate, multipliers, bonuses and caps."""
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))


def refund_points_share(points: int, refunded_fen: int, amount_fen: int) -> int:
    """A refund claws back a purchase's points in proportion to the money refunded, rounded down
    (floor): `floor(points x refunded_fen / amount_fen)`, the fractions left to the member.
    Computed on the running total refunded, less what earlier refunds took, so refunds in pieces
    add up to exactly all the points when the whole amount is refunded.

    Used by refunds (`clearinghouse.points.refunds`)."""
    return points * refunded_fen // amount_fen


def refund_value_share(value_fen: int, points_share: int, points: int) -> int:
    """The issue value a refund hands back follows the points it claws back, rounded down
    (floor): `floor(value_fen x points_share / points)`, and 0 for a purchase that earned no
    points. On the running total like `refund_points_share`, so no fen moves without its points
    and a full refund returns exactly the whole issue value.

    Used by refunds (`clearinghouse.points.refunds`)."""
    return value_fen * points_share // points if points else 0


def exchange_in_points(programme_points: int, rate: Decimal) -> int:
    """An exchange in converts programme points into coalition points at the programme's rate,
    rounded down (floor): the coalition never issues a point it was not paid for.

    Used by exchanges (`clearinghouse.points.exchange`), direction `in`."""
    return int((programme_points * rate).to_integral_value(rounding=ROUND_FLOOR))


def exchange_fee(points: int, fee_percent: Decimal) -> int:
    """An exchange's fee is `fee_percent` of the coalition points exchanged, rounded half-even to
    a whole point, like money: ties do not lean towards the member or the coalition.

    Used by exchanges (`clearinghouse.points.exchange`), both directions: on the coalition points
    made (in) or offered (out)."""
    return int((points * (fee_percent / 100)).to_integral_value(rounding=ROUND_HALF_EVEN))


def exchange_out_payout(points: int, rate: Decimal) -> int:
    """An exchange out pays whole programme points for coalition points (after the fee) at the
    programme's rate, rounded down (floor): the programme never pays a point it was not given.

    Used by exchanges (`clearinghouse.points.exchange`), direction `out`."""
    return int((points / rate).to_integral_value(rounding=ROUND_FLOOR))


def exchange_out_points_used(payout: int, rate: Decimal) -> int:
    """The coalition points an exchange out's payout costs, rounded up (ceiling), so they always
    cover it; what is left of the points offered, less than one programme point's worth, goes to
    the rounding account.

    Used by exchanges (`clearinghouse.points.exchange`), direction `out`, on the payout
    `exchange_out_payout` gave."""
    return int((payout * rate).to_integral_value(rounding=ROUND_CEILING))


# Tiers

TIER_PROGRESS_PLACES = Decimal("0.0001")


def tier_progress(done: int, span: int) -> Decimal:
    """A member's progress towards the next tier, `done / span` of the qualifying points between
    the two thresholds, rounded down to 4 places so it never reads 1 before the member gets
    there.

    Used by the tier rules (`clearinghouse.rules.tiers`)."""
    with localcontext(prec=60):  # wide enough that the division cannot round up to 1
        return (Decimal(done) / Decimal(span)).quantize(TIER_PROGRESS_PLACES, rounding=ROUND_DOWN)


# Decimals in answers

DECIMAL_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"


def plain_decimal(value: Decimal) -> str:
    """The exact value in plain digits: a point only before a fraction, no trailing zeros, no
    exponent, no sign on zero ("520", "0.99", "-0.32", "0"). Integrators parse it with any
    decimal parser; an exponent such as "0E-8" breaks many of them."""
    if value.is_zero():
        return "0"
    # "f" writes every digit of the value as it is: no rounding, whatever the context.
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


PlainDecimal = Annotated[
    Decimal,
    PlainSerializer(plain_decimal, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DECIMAL_PATTERN,
            "description": "An exact decimal as a string: plain digits, a point only before a "
            "fraction, no trailing zeros, never an exponent.",
            "examples": ["520", "0.99", "-0.32"],
        },
        mode="serialization",
    ),
]
"""A decimal in an answer: every response model's decimal field has this type."""
