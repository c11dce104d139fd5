"""Rounding rules, stated once: money rounds half-even to the fen."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal


def money(value: Decimal) -> int:
    """Fen from an exact amount of fen: half-even, the banker's rounding."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
