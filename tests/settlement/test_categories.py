"""The settlement categories are defined once and every output follows that definition in its
order: the netting's kinds, the stored lines, the line types, the CSV, the command line's table,
the PDF and the console's page. An entry's settleable partner and value are written and read
through one typed helper that refuses anything but a whole number of fen."""

from __future__ import annotations

import csv
import gettext
import io
import re
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from clearinghouse.console import render
from clearinghouse.console.pdf import settlement_pdf
from clearinghouse.settleable import PARTNER_KEY, VALUE_KEY, NotSettleable, Settleable
from settlement import approval, categories, cli, netting, reports, runs
from settlement.categories import CATEGORIES
from settlement.schemas import LineOut
from settlement.tables import settlement_lines

EXPECTED_COLUMNS = [
    f"{category.name}_{measure}" for category in CATEGORIES for measure in ("points", "fen")
]


def a_run() -> runs.Run:
    lines = [
        runs.Line(
            "partner-a",
            **{category.fen_column: 100 * (i + 1) for i, category in enumerate(CATEGORIES)},
        )
    ]
    net = sum(line.net_fen for line in lines)
    return runs.Run(
        1,
        date(2026, 3, 9),
        1,
        datetime(2026, 3, 10, tzinfo=ZoneInfo("Asia/Shanghai")),
        "computed",
        None,
        len(CATEGORIES),
        datetime(2026, 3, 10, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai")),
        lines,
        clearing_fen=-net,
    )


def in_order(text: str, labels: list[str]) -> bool:
    """Each of `labels` is in `text`, each after the one before it."""
    at = 0
    for label in labels:
        found = text.find(label, at)
        if found < 0:
            return False
        at = found + len(label)
    return True


def test_each_settleable_kind_has_one_category() -> None:
    kinds = [kind for category in CATEGORIES for kind in category.kinds]
    assert len(kinds) == len(set(kinds))
    assert list(netting.CATEGORIES) == kinds
    by_kind = {kind: (c.name, c.sign) for c in CATEGORIES for kind in c.kinds}
    assert by_kind == netting.CATEGORIES
    assert len({category.name for category in CATEGORIES}) == len(CATEGORIES)


def test_the_stored_lines_and_the_line_types_have_the_categories_columns_in_order() -> None:
    assert list(categories.LINE_COLUMNS) == EXPECTED_COLUMNS
    assert [c.name for c in settlement_lines.columns] == [
        "run_id",
        "partner_id",
        *EXPECTED_COLUMNS,
        "net_fen",
    ]
    assert [f.name for f in fields(runs.Line)] == ["partner_id", *EXPECTED_COLUMNS]
    assert list(LineOut.model_fields) == ["partner_id", *EXPECTED_COLUMNS, "net_fen"]
    assert list(reports.LINE_COLUMNS) == ["partner_id", *EXPECTED_COLUMNS, "net_fen"]


def test_a_line_nets_its_categories_by_their_signs() -> None:
    line = a_run().lines[0]
    assert line.net_fen == sum(
        category.sign * 100 * (i + 1) for i, category in enumerate(CATEGORIES)
    )


def test_the_csv_header_lists_the_categories_in_order() -> None:
    text = reports.settlement_csv(reports.settlement_report(a_run(), [], {}))
    rows = list(csv.reader(io.StringIO(text)))
    with_yuan = [
        name
        for column in [*EXPECTED_COLUMNS, "net_fen"]
        for name in (
            [column, column.replace("_fen", "_yuan")] if column.endswith("_fen") else [column]
        )
    ]
    assert rows[0] == ["business_date", "partner_id", "legal_name", *with_yuan]
    line = dict(zip(rows[0], rows[1], strict=True))
    assert [line[c] for c in EXPECTED_COLUMNS] == [
        str(a_run().lines[0].__dict__[c]) for c in EXPECTED_COLUMNS
    ]


def test_the_command_line_table_lists_the_categories_in_order() -> None:
    header = cli.table_header()
    assert in_order(header, ["partner", *(c.heading for c in CATEGORIES), "net (yuan)"])
    assert header.split() == [
        "partner",
        *(word for c in CATEGORIES for word in c.heading.split()),
        "net",
        "(yuan)",
    ]


def test_the_pdf_heads_its_table_with_the_categories_in_order() -> None:
    report = reports.settlement_report(a_run(), [], {})
    pdf = settlement_pdf(report, [], [], generated_at=datetime(2026, 3, 10, 3, 15))
    # Its words, wherever they break: a heading too long for its column wraps at its spaces.
    text = " ".join(
        word for page in PdfReader(io.BytesIO(pdf)).pages for word in page.extract_text().split()
    )
    labels = [category.label for category in CATEGORIES]
    assert in_order(text, ["Partner", *labels, "Net: pays / receives"])
    amounts = [f"¥{i + 1}.00" for i in range(len(CATEGORIES))]
    assert in_order(text, ["partner-a", *amounts])


class Bracketed(gettext.NullTranslations):
    def gettext(self, message: str) -> str:
        return f"[{message}]"

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return f"[{singular if n == 1 else plural}]"


def test_the_console_page_heads_its_table_with_the_categories_translated_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = a_run()
    context: dict[str, Any] = {
        "me": None,
        "csrf_token": None,
        "run": run,
        "report": reports.settlement_report(run, [], {}),
        "late_arrivals": [],
        "chart": "",
        "categories": CATEGORIES,
        "history": [],
        "approvals": [],
        "approvals_needed": approval.APPROVERS_NEEDED,
        "reconciliations": [],
        "open_breaks": 0,
        "warnings": [],
        "can_approve": False,
        "can_reject": False,
        "can_mark_paid": False,
    }
    render.environment.cache_clear()
    monkeypatch.setattr("clearinghouse.console.i18n.current", lambda: Bracketed())
    try:
        html = render.environment().get_template("settlement.html").render(**context)
    finally:
        render.environment.cache_clear()
    table = html.split('<table class="lines">', 1)[1].split("</table>", 1)[0]
    headings = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', table)
    assert headings == [
        "[Partner]",
        *(f"[{category.label}]" for category in CATEGORIES),
        "[Partner pays]",
        "[Partner receives]",
        "[Advice]",
    ]
    row = table.split(">partner-a</a></th>", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert len(cells) == len(CATEGORIES)


def test_settleable_facts_go_into_an_entrys_metadata_and_come_back() -> None:
    facts = Settleable("teahouse", 1_234)
    metadata = {**facts.to_metadata(), "member_id": "M1"}
    assert metadata == {PARTNER_KEY: "teahouse", VALUE_KEY: 1_234, "member_id": "M1"}
    assert (PARTNER_KEY, VALUE_KEY) == ("partner_id", "value_fen")
    assert Settleable.from_metadata(metadata) == facts
    assert Settleable.from_metadata({"partner_id": "p", "value_fen": 0}).value_fen == 0


@pytest.mark.parametrize(
    "value", [12.5, 12.0, Decimal("12"), Decimal("12.5"), "12", True, None, [12]]
)
def test_a_settleable_value_is_a_whole_number_of_fen(value: Any) -> None:
    with pytest.raises(NotSettleable, match="whole number of fen"):
        Settleable("teahouse", value)
    with pytest.raises(NotSettleable):
        Settleable.from_metadata({"partner_id": "teahouse", "value_fen": value})


@pytest.mark.parametrize("partner", ["", None, 7])
def test_a_settleable_partner_is_a_partner_id(partner: Any) -> None:
    with pytest.raises(NotSettleable, match="partner id"):
        Settleable(partner, 100)


@pytest.mark.parametrize(
    ("metadata", "missing"),
    [
        ({"value_fen": 100}, "partner_id"),
        ({"partner_id": "teahouse"}, "value_fen"),
        ({}, "partner_id or value_fen"),
    ],
)
def test_metadata_without_the_settleable_facts_is_refused(
    metadata: dict[str, Any], missing: str
) -> None:
    with pytest.raises(NotSettleable, match=f"has no {missing}$"):
        Settleable.from_metadata(metadata)
