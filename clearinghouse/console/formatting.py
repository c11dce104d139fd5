"""How the console writes numbers and instants: money as yuan with two decimals and thousands
separators, points as grouped integers, instants in the coalition's time zone."""

from __future__ import annotations

from datetime import datetime

from clearinghouse.config import get_settings
from clearinghouse.numbers import yuan_text


def yuan(fen: int) -> str:
    """`123456789` → `¥1,234,567.89`; negative amounts lead with a minus sign. Exact: integer
    arithmetic only."""
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{yuan_text(abs(fen), grouped=True)}"


def points(amount: int) -> str:
    return f"{amount:,}"


def amount(value: int, asset: str) -> str:
    """An amount of the ledger in its asset: CNY (kept in fen) as yuan, anything else (points
    of the coalition or of a programme) as grouped whole units."""
    return yuan(value) if asset == "CNY" else points(value)


def local_time(instant: datetime | None) -> str:
    """The instant in the coalition's time zone, to the minute, with the zone's abbreviation."""
    if instant is None:
        return ""
    local = instant.astimezone(get_settings().zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
