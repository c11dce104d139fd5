"""Numbers, stated once: money rounds half-even to the fen, and an answer writes a decimal one
way."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema


def money(value: Decimal) -> int:
    """Fen from an exact amount of fen: half-even, the banker's rounding."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


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
