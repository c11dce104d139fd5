"""The settlement categories, defined once: what each kind of settleable entry is for the partner
it names, the sign of its value in that partner's net, the partner account whose posting gives
its points, and how people see it. The netting's statements, the stored lines' columns, the CSV,
the PDF, the command line and the console all read this list, in its order.

The trigger that queues settleable entries keeps its own frozen copy of the kinds, as a migration
must (written by 0011_settlement_in_sql, recreated by 0024_catalogue_settlement when the
catalogue's kinds came and by 0025_campaigns for `engagement`); a test checks that it names the
same kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Measure = Literal["points", "fen"]
MEASURES: tuple[Measure, ...] = ("points", "fen")


@dataclass(frozen=True)
class Category:
    name: str
    """The line's name: its columns are `<name>_points` and `<name>_fen`."""
    kinds: tuple[str, ...]
    """The ledger kinds whose entries fall in it."""
    sign: Literal[1, -1]
    """The sign of its value in the partner's net (positive: the partner pays)."""
    points_account: Literal["issued", "redeemed"]
    """The partner's account whose posting gives an entry's points."""
    label: str
    """Its heading for people, in English; the console translates it through its catalogue."""
    heading: str
    """Its short heading on the command line."""

    @property
    def points_column(self) -> str:
        return f"{self.name}_points"

    @property
    def fen_column(self) -> str:
        return f"{self.name}_fen"

    def column(self, measure: Measure) -> str:
        return f"{self.name}_{measure}"


CATEGORIES: tuple[Category, ...] = (
    Category(
        "issued", ("accrual", "referral_bonus", "engagement"), 1, "issued", "Issued", "issued"
    ),
    Category("reversed", ("refund", "fraud_reversal"), -1, "issued", "Reversals", "reversed"),
    Category("redeemed", ("capture",), -1, "redeemed", "Redeemed", "redeemed"),
    Category(
        "redemption_refunded",
        ("redemption_refund",),
        1,
        "redeemed",
        "Redemption refunds",
        "refunded",
    ),
    Category("exchange_in", ("exchange_in",), 1, "issued", "Exchange in", "exch in"),
    Category("exchange_out", ("exchange_out",), -1, "redeemed", "Exchange out", "exch out"),
    Category("catalogue", ("reward_order",), -1, "redeemed", "Catalogue orders", "catalogue"),
    Category(
        "catalogue_returned",
        ("reward_order_return",),
        1,
        "redeemed",
        "Catalogue returns",
        "cat ret",
    ),
)

BY_NAME: dict[str, Category] = {category.name: category for category in CATEGORIES}
BY_KIND: dict[str, Category] = {
    kind: category for category in CATEGORIES for kind in category.kinds
}
"""Every settleable kind, in the categories' order, with its category."""

LINE_COLUMNS: tuple[str, ...] = tuple(
    category.column(measure) for category in CATEGORIES for measure in MEASURES
)
"""A settlement line's amounts, in the order of the `settlement_lines` model: each category's
points, then its value in fen."""

FEN_COLUMNS: tuple[str, ...] = tuple(category.fen_column for category in CATEGORIES)


def net_expression() -> str:
    """A line's net in SQL, from its fen columns and their signs (the table's check)."""
    terms = [
        f"{'-' if category.sign < 0 else '+'} {category.fen_column}" for category in CATEGORIES
    ]
    first = terms[0].removeprefix("+ ")
    return " ".join([first, *terms[1:]])
