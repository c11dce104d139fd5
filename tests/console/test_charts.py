"""The console's SVG charts, read back as XML: what a screen reader and a browser get."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from clearinghouse.console.charts import Series, grouped_bars, line_chart
from clearinghouse.console.formatting import points, yuan

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: Markup) -> ET.Element:
    return ET.fromstring(str(markup))


def find_all(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    found = root.iter(SVG + tag)
    return [e for e in found if cls is None or cls in e.get("class", "").split()]


def desc(root: ET.Element) -> str:
    element = root.find(SVG + "desc")
    assert element is not None
    return element.text or ""


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(SVG + "text")]


def number(element: ET.Element, attribute: str) -> float:
    value = element.get(attribute)
    assert value is not None
    assert re.fullmatch(r"-?\d+(\.\d)?", value), f"{attribute}={value} is not rounded"
    return float(value)


def test_one_bar_per_partner_and_series_with_heights_in_proportion() -> None:
    issued = [123_456, 50_000, 0]
    redeemed = [10_000, 200_000, 7_500]
    chart = grouped_bars(
        ["p1", "p2", "p3"],
        [Series("Issued", issued), Series("Redeemed", redeemed)],
        title="Issued and redeemed",
        value_label=yuan,
    )
    assert isinstance(chart, Markup)
    root = parse(chart)
    assert root.get("role") == "img"
    assert root.get("width") == "100%"
    assert re.fullmatch(r"0 0 \d+ \d+(\.\d)?", root.get("viewBox", ""))

    bars = find_all(root, "rect", "bar")
    assert len(bars) == 6
    heights = {int(bar.get("data-value", "")): number(bar, "height") for bar in bars}
    per_fen = heights[200_000] / 200_000
    for value, height in heights.items():
        assert height == pytest.approx(value * per_fen, abs=0.11)
    # The bars stand on the zero line.
    zero = {number(b, "y") + number(b, "height") for b in bars}
    assert max(zero) - min(zero) <= 0.11

    tooltips = [bar.findtext(SVG + "title") for bar in bars]
    assert "p1 · Issued: ¥1,234.56" in tooltips
    assert "p2 · Redeemed: ¥2,000.00" in tooltips

    groups = find_all(root, "g", "series")
    assert [g.get("class") for g in groups if g.find(SVG + "rect[@class='bar']") is not None] == [
        "series series-0",
        "series series-1",
    ]
    assert all(g.get("fill", "").startswith("#") for g in groups)

    labels = texts(root)
    assert {"p1", "p2", "p3", "Issued", "Redeemed"} <= set(labels)
    assert "¥0.00" in labels
    assert all(label.startswith("¥") for label in labels if "." in label)


def test_title_and_description_name_the_data() -> None:
    root = parse(
        grouped_bars(
            ["p1", "p2"],
            [Series("Issued", [100, 2_000]), Series("Redeemed", [50, 0])],
            title="Issued and redeemed",
            value_label=yuan,
        )
    )
    title = root.find(SVG + "title")
    assert title is not None
    assert title.text == "Issued and redeemed"
    assert root.get("aria-labelledby") == title.get("id")
    described = root.find(SVG + "desc")
    assert described is not None
    assert root.get("aria-describedby") == described.get("id")
    assert desc(root) == (
        "Issued and redeemed. p1: Issued ¥1.00, Redeemed ¥0.50; p2: Issued ¥20.00, Redeemed ¥0.00."
    )


def test_labels_are_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    chart = grouped_bars(
        [hostile],
        [Series("A & B", [100])],
        title="<b>title</b>",
        value_label=lambda v: f"<{v}>",
    )
    assert "<script>" not in chart
    assert "<b>" not in chart
    root = parse(chart)  # still well-formed XML
    # The label under the group is shortened; the bar's tooltip and the description keep it.
    assert '<script>alert("x")</scr…' in texts(root)
    assert [title.text for title in root.iter(SVG + "title")][1] == f"{hostile} · A & B: <100>"
    assert "A & B" in texts(root)
    assert "<100>" in texts(root)
    assert hostile in desc(root)
    line = line_chart(["<d>"], [Series(hostile, [1])], title="t", value_label=str)
    assert "<script>" not in line
    assert "<d>" in texts(parse(line))
    assert hostile in desc(parse(line))


@pytest.mark.parametrize(
    ("categories", "series"),
    [
        ([], []),
        (["p1", "p2"], []),
        ([], [Series("Issued", [])]),
        (["p1", "p2"], [Series("Issued", [0, 0]), Series("Redeemed", [0, 0])]),
    ],
)
def test_no_data_still_draws_axes(categories: list[str], series: list[Series]) -> None:
    root = parse(grouped_bars(categories, series, title="Nothing", value_label=yuan))
    assert find_all(root, "rect", "bar") == []
    assert "No data" in texts(root)
    assert "No data" in desc(root)
    assert "¥0.00" in texts(root)  # the value axis, at zero
    assert find_all(root, "line")

    line = parse(line_chart(categories, series, title="Nothing", value_label=points))
    assert find_all(line, "polyline") == []
    assert "No data" in texts(line)


def test_negative_values_hang_below_a_zero_line_inside_the_axis() -> None:
    root = parse(
        grouped_bars(
            ["p1", "p2"],
            [Series("Net", [30_000, -10_000])],
            title="Net",
            value_label=yuan,
        )
    )
    up, down = find_all(root, "rect", "bar")
    assert number(up, "y") + number(up, "height") == pytest.approx(number(down, "y"), abs=0.11)
    assert number(down, "height") == pytest.approx(number(up, "height") / 3, abs=0.11)
    labels = texts(root)
    assert "¥0.00" in labels
    assert any(label.startswith("-¥") for label in labels)
    ticks = [t for t in labels if t.startswith(("¥", "-¥"))]
    assert len(ticks) >= 3


def test_ticks_are_round_numbers() -> None:
    root = parse(grouped_bars(["p1"], [Series("Issued", [987_654])], title="t", value_label=str))
    ticks = [int(t) for t in texts(root) if t.lstrip("-").isdigit()]
    assert ticks[0] == 0
    assert ticks[-1] >= 987_654
    step = ticks[1] - ticks[0]
    assert str(step).rstrip("0") in ("1", "2", "5")
    assert 3 <= len(ticks) <= 7


def test_mismatched_series_are_refused() -> None:
    with pytest.raises(ValueError, match="2 values for 3"):
        grouped_bars(["a", "b", "c"], [Series("x", [1, 2])], title="t", value_label=str)
    with pytest.raises(ValueError, match="1 values for 2"):
        line_chart(["a", "b"], [Series("x", [1])], title="t", value_label=str)


def test_a_line_per_series_with_a_titled_point_per_day() -> None:
    dates = [f"2026-03-{d:02d}" for d in range(1, 8)]
    total = [100, 200, 300, 250, 400, 350, 500]
    partner = [0, 100, 100, 50, 50, 50, 60]
    root = parse(
        line_chart(
            dates,
            [Series("All issuers", total), Series("p1", partner)],
            title="Outstanding points",
            value_label=points,
        )
    )
    polylines = find_all(root, "polyline")
    assert len(polylines) == 2
    assert all(p.get("fill") == "none" for p in polylines)
    coords = [
        tuple(float(c) for c in pair.split(",")) for pair in polylines[0].get("points", "").split()
    ]
    assert len(coords) == 7
    xs = [x for x, _ in coords]
    assert xs == sorted(xs)
    # Heights above the zero line are in proportion to the values.
    circles = find_all(root, "circle", "point")
    assert len(circles) == 14
    zero_line = [
        line for line in find_all(root, "line", "grid") if line.get("stroke-opacity") == "0.6"
    ]
    assert len(zero_line) == 1
    zero = number(zero_line[0], "y1")
    per_point = (zero - number(circles[6], "cy")) / 500
    for circle, value in zip(circles[:7], total, strict=True):
        assert zero - number(circle, "cy") == pytest.approx(value * per_point, abs=0.11)
    assert circles[4].findtext(SVG + "title") == "All issuers, 2026-03-05: 400"

    series_classes = [g.get("class") for g in find_all(root, "g", "series")]
    assert "series series-0" in series_classes
    assert "series series-1" in series_classes
    assert desc(root) == (
        "Outstanding points, 2026-03-01 – 2026-03-07. "
        "All issuers: 100 on 2026-03-01, 500 on 2026-03-07; "
        "lowest 100 on 2026-03-01, highest 500 on 2026-03-07. "
        "p1: 0 on 2026-03-01, 60 on 2026-03-07; "
        "lowest 0 on 2026-03-01, highest 100 on 2026-03-02."
    )


def test_many_days_label_every_kth_date_ending_with_the_last() -> None:
    dates = [f"2026-{m:02d}-{d:02d}" for m in range(1, 4) for d in range(1, 29)][:60]
    root = parse(line_chart(dates, [Series("All", list(range(60)))], title="t", value_label=points))
    shown = [t for t in texts(root) if t.startswith("2026-")]
    assert shown[-1] == dates[-1]
    assert 3 <= len(shown) <= 12
    positions = [dates.index(label) for label in shown]
    gaps = {b - a for a, b in zip(positions, positions[1:], strict=False)}
    assert len(gaps) == 1
    assert len(find_all(root, "circle", "point")) == 60


def test_a_seventh_series_reuses_the_palette_dashed() -> None:
    labels = ["d1", "d2"]
    root = parse(
        line_chart(
            labels,
            [Series(f"s{i}", [i, i + 1]) for i in range(8)],
            title="t",
            value_label=str,
        )
    )
    groups = [g for g in find_all(root, "g", "series") if g.find(SVG + "polyline") is not None]
    assert [g.get("class") for g in groups][6] == "series series-0"
    assert groups[0].get("stroke-dasharray") is None
    assert groups[6].get("stroke-dasharray")


def test_the_same_data_renders_the_same_markup() -> None:
    def render() -> Markup:
        return grouped_bars(["p1"], [Series("Issued", [5])], title="t", value_label=yuan)

    assert render() == render()
    other = grouped_bars(["p1"], [Series("Issued", [6])], title="t", value_label=yuan)
    assert parse(render()).get("aria-labelledby") != parse(other).get("aria-labelledby")
