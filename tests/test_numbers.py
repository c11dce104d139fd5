"""Numbers, stated once: each rounding rule holds what its name promises, nothing outside
`clearinghouse.numbers` rounds, money shows exactly, and a decimal in an answer is written one
way: plain digits, never an exponent."""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import pytest
from fastapi.routing import APIRoute
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.routing import BaseRoute

from clearinghouse import numbers
from clearinghouse.app import create_app
from clearinghouse.console import formatting
from clearinghouse.numbers import DECIMAL_PATTERN, PlainDecimal, plain_decimal

WRITER = get_args(PlainDecimal)[1]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("50.00000000", "50"),
        ("0E-8", "0"),
        ("-0.000", "0"),
        ("1E+3", "1000"),
        ("100", "100"),
        ("-0.32000", "-0.32"),
        ("0.4666", "0.4666"),
        ("5E-10", "0.0000000005"),
        ("123456789012345678901234567890.100", "123456789012345678901234567890.1"),
    ],
)
def test_plain_decimal_keeps_the_value_and_drops_exponents_and_trailing_zeros(
    value: str, written: str
) -> None:
    assert plain_decimal(Decimal(value)) == written
    assert re.fullmatch(DECIMAL_PATTERN, written)
    assert Decimal(written) == Decimal(value)


def _loose_decimals(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[str]:
    """The fields of `model`, and of the models it holds, whose decimals are not PlainDecimal."""
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield from _loose(field.annotation, field.metadata, f"{model.__name__}.{name}", seen)


def _loose(
    annotation: Any, metadata: Sequence[Any], where: str, seen: set[type[BaseModel]]
) -> Iterator[str]:
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        yield from _loose(inner, [*metadata, *extra], where, seen)
    elif annotation is Decimal:
        if WRITER not in metadata:
            yield where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _loose_decimals(annotation, seen)
    else:
        for argument in get_args(annotation):
            yield from _loose(argument, (), where, seen)


class _Rates(BaseModel):
    written: PlainDecimal | None
    loose: list[Decimal]


def test_the_check_finds_a_decimal_written_any_other_way() -> None:
    assert list(_loose_decimals(_Rates, set())) == ["_Rates.loose"]


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Newer FastAPI keeps an included router whole rather than copying its routes.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_answer_writes_its_decimals_as_plain_decimal() -> None:
    models = [
        model
        for route in _api_routes(create_app().routes)
        for model in [route.response_model, *(r.get("model") for r in route.responses.values())]
        if isinstance(model, type) and issubclass(model, BaseModel)
    ]
    assert models
    seen: set[type[BaseModel]] = set()
    assert [where for model in models for where in _loose_decimals(model, seen)] == []


# --- the rounding rules ---------------------------------------------------------------------

FEN = st.integers(min_value=-(10**15), max_value=10**15)
EXACT_FEN = st.decimals(
    min_value=-(10**12), max_value=10**12, places=6, allow_nan=False, allow_infinity=False
)
POINTS = st.integers(min_value=0, max_value=10**9)
# As partners/rates.py stores them: above zero, at most 999999.999999, six places.
RATES = st.decimals(
    min_value=Decimal("0.000001"),
    max_value=Decimal("999999.999999"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)
# As the exchange policy allows: 0 to 50 %.
FEE_PERCENTS = st.decimals(
    min_value=0, max_value=50, places=2, allow_nan=False, allow_infinity=False
)


def _is_tie(exact: Fraction) -> bool:
    return exact - (exact.numerator // exact.denominator) == Fraction(1, 2)


@given(EXACT_FEN)
@example(Decimal("0.5"))
@example(Decimal("1.5"))
@example(Decimal("-2.5"))
@example(Decimal("2.4999999"))
def test_fen_half_even_is_the_nearest_fen_and_a_tie_goes_to_the_even_one(exact: Decimal) -> None:
    fen = numbers.fen_half_even(exact)
    assert type(fen) is int
    off = abs(Fraction(exact) - fen)
    assert off <= Fraction(1, 2)
    if _is_tie(Fraction(exact)):
        assert fen % 2 == 0
    else:
        assert off < Fraction(1, 2)


@given(EXACT_FEN)
@example(Decimal("99.99"))
@example(Decimal("-0.01"))
def test_points_earned_is_the_whole_points_below_the_exact_amount(exact: Decimal) -> None:
    points = numbers.points_earned(exact)
    assert type(points) is int
    assert points <= exact < points + 1


@given(POINTS, st.data())
def test_a_refund_claws_back_its_share_of_the_points_rounded_down(
    points: int, data: st.DataObject
) -> None:
    amount = data.draw(st.integers(min_value=1, max_value=10**12))
    refunded = data.draw(st.integers(min_value=0, max_value=amount))
    share = numbers.refund_points_share(points, refunded, amount)
    assert share * amount <= points * refunded < (share + 1) * amount
    assert 0 <= share <= points
    assert numbers.refund_points_share(points, amount, amount) == points
    assert numbers.refund_points_share(points, 0, amount) == 0


@given(POINTS, st.integers(min_value=0, max_value=10**12), st.data())
def test_a_refund_hands_back_the_value_of_the_points_it_claws_back_rounded_down(
    points: int, value: int, data: st.DataObject
) -> None:
    share = data.draw(st.integers(min_value=0, max_value=points))
    back = numbers.refund_value_share(value, share, points)
    if points == 0:
        assert back == 0
    else:
        assert back * points <= value * share < (back + 1) * points
        assert numbers.refund_value_share(value, points, points) == value


@given(POINTS, st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=8))
def test_refunds_in_pieces_add_up_to_all_the_points(points: int, pieces: list[int]) -> None:
    amount, clawed, refunded = sum(pieces), 0, 0
    for piece in pieces:
        refunded += piece
        step = numbers.refund_points_share(points, refunded, amount) - clawed
        assert step >= 0
        clawed += step
    assert clawed == points


@given(POINTS, RATES)
def test_an_exchange_in_issues_the_whole_coalition_points_below_the_exact_amount(
    points: int, rate: Decimal
) -> None:
    coalition = numbers.exchange_in_points(points, rate)
    exact = points * Fraction(rate)
    assert coalition <= exact < coalition + 1


@given(POINTS, FEE_PERCENTS)
@example(1, Decimal(50))
@example(3, Decimal(50))
@example(10, Decimal(5))
def test_an_exchange_fee_is_the_nearest_point_and_a_tie_goes_to_the_even_one(
    points: int, fee_percent: Decimal
) -> None:
    fee = numbers.exchange_fee(points, fee_percent)
    exact = points * Fraction(fee_percent) / 100
    assert abs(exact - fee) <= Fraction(1, 2)
    if _is_tie(exact):
        assert fee % 2 == 0
    assert 0 <= fee <= points


@given(POINTS, RATES)
@example(10, Decimal(3))
@example(1, Decimal("0.333333"))
def test_an_exchange_out_pays_whole_programme_points_its_coalition_points_cover(
    points: int, rate: Decimal
) -> None:
    payout = numbers.exchange_out_payout(points, rate)
    rate_exact = Fraction(rate)
    assert payout * rate_exact <= points < (payout + 1) * rate_exact
    used = numbers.exchange_out_points_used(payout, rate)
    assert used - 1 < payout * rate_exact <= used
    # What the rounding account receives: never negative, under one programme point's worth.
    assert 0 <= points - used < rate_exact


TIER_STEPS = st.integers(min_value=1, max_value=10**12).flatmap(
    lambda span: st.tuples(st.integers(min_value=0, max_value=span - 1), st.just(span))
)


@given(TIER_STEPS)
@example((2, 3))
@example((19_999, 20_000))
@example((10**12 - 1, 10**12))
def test_tier_progress_rounds_down_to_four_places_and_never_reads_one_too_early(
    step: tuple[int, int],
) -> None:
    done, span = step
    progress = numbers.tier_progress(done, span)
    assert progress.as_tuple().exponent == -4
    assert Fraction(progress) <= Fraction(done, span) < Fraction(progress) + Fraction(1, 10_000)
    assert 0 <= progress < 1


# --- money shown to people ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "plain", "grouped"),
    [
        (0, "0.00", "0.00"),
        (5, "0.05", "0.05"),
        (-5, "-0.05", "-0.05"),
        (52_000, "520.00", "520.00"),
        (123_456, "1234.56", "1,234.56"),
        (-123_456_789, "-1234567.89", "-1,234,567.89"),
        (2**63 - 1, "92233720368547758.07", "92,233,720,368,547,758.07"),
    ],
)
def test_yuan_text_writes_every_fen(fen: int, plain: str, grouped: str) -> None:
    assert numbers.yuan_text(fen) == plain
    assert numbers.yuan_text(fen, grouped=True) == grouped


@given(FEN)
def test_yuan_text_reads_back_as_the_exact_fen(fen: int) -> None:
    plain = numbers.yuan_text(fen)
    assert re.fullmatch(r"-?(0|[1-9][0-9]*)\.[0-9]{2}", plain)
    assert Decimal(plain) * 100 == fen
    grouped = numbers.yuan_text(fen, grouped=True)
    assert grouped.replace(",", "") == plain
    assert plain.startswith("-") == (fen < 0)


@given(FEN)
def test_the_console_writes_yuan_with_the_same_digits(fen: int) -> None:
    shown = formatting.yuan(fen)
    assert shown == ("-" if fen < 0 else "") + "¥" + numbers.yuan_text(abs(fen), grouped=True)


# --- nothing else rounds --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("clearinghouse", "partners", "settlement")
ROUNDING = re.compile(
    r"ROUND_[A-Z_]+|\.quantize\(|\.to_integral|math\.floor|math\.ceil|\bround\("
    r"|from math import|\bdivmod\(|/\s*100\b"
)
# Floor division is rounding too when what it divides is money or points.
AMOUNT = re.compile(r"fen|points", re.IGNORECASE)
# Rounding that is not of money or points, where numbers has no rule to give.
NOT_MONEY = {
    # Whole seconds for Retry-After and a throttle's window.
    "clearinghouse/api/throttle.py": {"math.ceil", "round("},
    # How many axis labels fit in a chart.
    "clearinghouse/console/charts.py": {"math.ceil"},
    # Column widths in a settlement PDF.
    "clearinghouse/console/pdf.py": {"math.ceil"},
    # A fraud case's evidence: kilometres, hours and km/h between two purchases.
    "clearinghouse/fraud/rules.py": {"round("},
    # A webhook delivery attempt's latency, in whole milliseconds.
    "clearinghouse/webhooks/worker.py": {"round("},
}


def _roundings(path: str, text: str) -> Iterator[str]:
    """`path:line: what` for each rounding in the source `text`, comments left out."""
    allowed = NOT_MONEY.get(path, set())
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start
            lines[row - 1] = lines[row - 1][:column]
    for number, code in enumerate(lines, start=1):
        for found in ROUNDING.finditer(code):
            what = re.sub(r"\s+", " ", found.group())
            if what not in allowed:
                yield f"{path}:{number}: {what}"
        if "//" in code and AMOUNT.search(code):
            yield f"{path}:{number}: // on fen or points"


def test_nothing_outside_numbers_rounds() -> None:
    sources = sorted(
        path
        for package in SCANNED
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "clearinghouse" / "numbers.py"
    )
    assert len(sources) > 50
    found = [
        where
        for path in sources
        for where in _roundings(path.relative_to(ROOT).as_posix(), path.read_text())
    ]
    assert found == [], "round through clearinghouse.numbers, with a function named for the rule"


def test_the_scan_finds_rounding_written_any_other_way() -> None:
    source = """
value = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
points = math.floor(exact)
used = math.ceil(payout * rate)
print(f"{fen / 100:,.2f}")
yuan, fen = divmod(amount, 100)
whole = exact.to_integral_value()
kmh = round(speed)  # a comment: ROUND_DOWN, math.floor
label = f"#{fen / 100}"
share = points * refunded_fen // amount_fen
"""
    assert list(_roundings("settlement/example.py", source)) == [
        "settlement/example.py:2: .quantize(",
        "settlement/example.py:2: ROUND_HALF_UP",
        "settlement/example.py:3: math.floor",
        "settlement/example.py:4: math.ceil",
        "settlement/example.py:5: / 100",
        "settlement/example.py:6: divmod(",
        "settlement/example.py:7: .to_integral",
        "settlement/example.py:8: round(",
        "settlement/example.py:9: / 100",
        "settlement/example.py:10: // on fen or points",
    ]
    assert list(_roundings("clearinghouse/fraud/rules.py", "kmh = round(speed)")) == []
