"""Charts drawn on the server as inline SVG: they need no script, print, and scale with the page.

Each chart is an `<svg role="img">` named by its `<title>` and described by a `<desc>` that says
in words what the bars or lines show, so a screen reader (or a test) reads the data too. Every
series draws in class `series-<n>` (the stylesheet's colours) with the same colours as
presentation attributes underneath, which any stylesheet rule overrides. Labels are data
(partner ids, dates) and are escaped. Coordinates are geometry, not money: floats, written to
one decimal."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from clearinghouse.console.i18n import gettext as _

# The stylesheet's --series-0 .. --series-5; a seventh series starts again, dashed.
PALETTE = ("#1f5fae", "#e07b24", "#2e9d6a", "#8c4fb5", "#c2417a", "#5b6575")
DASHES = ("", "6 3", "2 3", "8 3 2 3")

WIDTH = 720
FONT_SIZE = 12
CHAR_WIDTH = 0.6 * FONT_SIZE  # a fair guess for a proportional sans-serif
MAX_LABEL_CHARS = 24


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[int]


@dataclass(frozen=True)
class _Axis:
    """The value axis: round ticks from `bottom` to `top`, which include zero and every value."""

    bottom: int
    top: int
    ticks: list[int]


@dataclass(frozen=True)
class _Frame:
    """The plot area inside the chart, in viewBox units."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def _n(x: float) -> str:
    text = f"{x:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _shorten(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_step(span: int, intervals: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that covers `span` in `intervals` steps."""
    wanted = max(1, -(-span // intervals))
    power = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * power >= wanted:
                return multiple * power
        power *= 10


def _axis(values: Sequence[int], intervals: int = 4) -> _Axis:
    low, high = min([0, *values]), max([0, *values])
    if low == high:
        return _Axis(0, 1, [0])
    step = _nice_step(high - low, intervals)
    bottom, top = (low // step) * step, -(-high // step) * step
    return _Axis(bottom, top, list(range(bottom, top + 1, step)))


def _chart_id(kind: str, title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    """Stable across renders (tests and caches see the same markup) and distinct between the
    charts of one page, which differ in title or data."""
    digest = hashlib.blake2s(digest_size=5)
    digest.update(repr((kind, title, list(labels))).encode())
    for s in series:
        digest.update(repr((s.label, list(s.values))).encode())
    return f"chart-{digest.hexdigest()}"


def _check(labels: Sequence[str], series: Sequence[Series], what: str) -> None:
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(
                f"series {s.label!r} has {len(s.values)} values for {len(labels)} {what}"
            )


def _open(chart_id: str, kind: str, height: float, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-{kind}" role="img"'
        f' aria-labelledby="{chart_id}-title" aria-describedby="{chart_id}-desc"'
        f' viewBox="0 0 {WIDTH} {_n(height)}" width="100%"'
        f' font-family="system-ui, sans-serif" font-size="{FONT_SIZE}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]


def _series_group(index: int, *, line: bool = False) -> str:
    colour = PALETTE[index % len(PALETTE)]
    dash = DASHES[(index // len(PALETTE)) % len(DASHES)] if line else ""
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<g class="series series-{index % len(PALETTE)}" data-series="{index}"'
        f' fill="{colour}" stroke="{colour}"{dashed}>'
    )


def _legend(series: Sequence[Series], *, line: bool = False) -> tuple[list[str], float]:
    """Swatches and labels in rows across the top; returns the markup and the height used."""
    parts = ['<g class="legend">']
    x, y = 8.0, 8.0
    for index, s in enumerate(series):
        label = _shorten(s.label)
        item_width = 14 + _text_width(label) + 16
        if x > 8 and x + item_width > WIDTH - 8:
            x, y = 8.0, y + FONT_SIZE + 6
        parts.append(_series_group(index, line=line))
        if line:
            parts.append(
                f'<line x1="{_n(x)}" y1="{_n(y + 5)}" x2="{_n(x + 10)}" y2="{_n(y + 5)}"'
                ' stroke-width="2"/>'
            )
        else:
            parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="10" height="10" stroke="none"/>')
        parts.append("</g>")
        parts.append(
            f'<text x="{_n(x + 14)}" y="{_n(y + 9.5)}" fill="currentColor">{escape(label)}</text>'
        )
        x += item_width
    parts.append("</g>")
    height = y + FONT_SIZE + 6 if series else 0.0
    return parts, height


def _value_axis(
    axis: _Axis, frame: _Frame, value_label: Callable[[int], str], y: Callable[[int], float]
) -> list[str]:
    parts = ['<g class="axis axis-y">']
    for tick in axis.ticks:
        at = _n(y(tick))
        parts.append(
            f'<line class="grid" x1="{_n(frame.left)}" y1="{at}" x2="{_n(frame.right)}"'
            f' y2="{at}" stroke="currentColor" stroke-opacity="{0.6 if tick == 0 else 0.15}"/>'
        )
        parts.append(
            f'<text x="{_n(frame.left - 6)}" y="{_n(y(tick) + 4)}" text-anchor="end"'
            f' fill="currentColor">{escape(value_label(tick))}</text>'
        )
    parts.append(
        f'<line x1="{_n(frame.left)}" y1="{_n(frame.top)}" x2="{_n(frame.left)}"'
        f' y2="{_n(frame.bottom)}" stroke="currentColor"/>'
    )
    parts.append("</g>")
    return parts


def _no_data(frame: _Frame) -> str:
    label = _("No data")
    return (
        f'<text class="no-data" x="{_n(frame.left + frame.width / 2)}"'
        f' y="{_n(frame.top + frame.height / 2)}" text-anchor="middle"'
        f' fill="currentColor">{escape(label)}</text>'
    )


def _scale(axis: _Axis, frame: _Frame) -> Callable[[int], float]:
    def y(value: int) -> float:
        return frame.bottom - (value - axis.bottom) / (axis.top - axis.bottom) * frame.height

    return y


def _left_margin(axis: _Axis, value_label: Callable[[int], str]) -> float:
    widest = max(_text_width(value_label(tick)) for tick in axis.ticks)
    return min(max(widest + 14, 40), 180)


def _every(count: int, label_width: float, room: float) -> int:
    """Label one slot in k so that labels `label_width` wide fit in `room` per slot."""
    return max(1, math.ceil(label_width / room)) if count else 1


def _no_data_desc(title: str, value_label: Callable[[int], str], all_zero: bool) -> str:
    if all_zero:
        return _("%(title)s. No data: every value is %(zero)s.") % {
            "title": title,
            "zero": value_label(0),
        }
    return _("%(title)s. No data.") % {"title": title}


def _bars_desc(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    value_label: Callable[[int], str],
) -> str:
    groups = [
        f"{category}: " + ", ".join(f"{s.label} {value_label(s.values[i])}" for s in series)
        for i, category in enumerate(categories)
    ]
    return f"{title}. " + "; ".join(groups) + "."


@dataclass(frozen=True)
class _Plot:
    """What both kinds of chart work out first: the axis, the legend, and whether there is
    anything to draw."""

    kind: str
    title: str
    chart_id: str
    values: list[int]
    axis: _Axis
    legend: list[str]
    legend_height: float

    @classmethod
    def of(cls, kind: str, title: str, labels: Sequence[str], series: Sequence[Series]) -> _Plot:
        _check(labels, series, "x labels" if kind == "line" else "categories")
        values = [v for s in series for v in s.values]
        legend, legend_height = _legend(series, line=kind == "line")
        return cls(
            kind,
            title,
            _chart_id(kind, title, labels, series),
            values,
            _axis(values),
            legend,
            legend_height,
        )

    @property
    def empty(self) -> bool:
        return all(v == 0 for v in self.values)

    def start(
        self,
        frame: _Frame,
        height: float,
        value_label: Callable[[int], str],
        y: Callable[[int], float],
        describe: Callable[[], str],
    ) -> list[str]:
        """The opening markup: title, description, legend, value axis, and "No data" when
        there is nothing to draw."""
        desc = (
            _no_data_desc(self.title, value_label, bool(self.values)) if self.empty else describe()
        )
        parts = _open(self.chart_id, self.kind, height, self.title, desc)
        parts += self.legend
        parts += _value_axis(self.axis, frame, value_label, y)
        if self.empty:
            parts.append(_no_data(frame))
        return parts


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_label: Callable[[int], str],
) -> Markup:
    """One group of bars per category (a partner), one bar per series in each group."""
    plot = _Plot.of("bars", title, categories, series)
    axis, legend_height = plot.axis, plot.legend_height

    left = _left_margin(axis, value_label)
    slot = (WIDTH - 12 - left) / max(len(categories), 1)
    labels = [_shorten(c) for c in categories]
    widest = max((_text_width(label) for label in labels), default=0.0)
    # Labels that do not fit under their group are turned 45 degrees, and thinned out if even
    # then they would overlap (each bar's tooltip still names its partner).
    turned = widest > slot - 4
    if turned:
        # Room on the left for the first turned label, which reaches back from its group.
        left = max(left, widest * math.sqrt(0.5) + 4)
        slot = (WIDTH - 12 - left) / max(len(categories), 1)
    every = _every(len(categories), FONT_SIZE * 1.5, slot) if turned else 1
    label_room = widest * math.sqrt(0.5) + FONT_SIZE if turned else FONT_SIZE * 1.5
    height = legend_height + 12 + 240 + 8 + label_room
    frame = _Frame(left, legend_height + 12, WIDTH - 12, legend_height + 12 + 240)
    y = _scale(axis, frame)

    parts = plot.start(
        frame, height, value_label, y, lambda: _bars_desc(title, categories, series, value_label)
    )
    if not plot.empty:
        bar = slot * 0.8 / len(series)
        zero = y(0)
        for index, s in enumerate(series):
            parts.append(_series_group(index))
            for i, value in enumerate(s.values):
                x = frame.left + i * slot + slot * 0.1 + index * bar
                top, bottom = min(zero, y(value)), max(zero, y(value))
                tooltip = f"{categories[i]} · {s.label}: {value_label(value)}"
                parts.append(
                    f'<rect class="bar" x="{_n(x)}" y="{_n(top)}" width="{_n(bar)}"'
                    f' height="{_n(bottom - top)}" stroke="none" data-value="{value}">'
                    f"<title>{escape(tooltip)}</title></rect>"
                )
            parts.append("</g>")
    parts.append('<g class="axis axis-x">')
    for i, label in enumerate(labels):
        if (len(labels) - 1 - i) % every:
            continue
        x = frame.left + (i + 0.5) * slot
        if turned:
            at = f"{_n(x)} {_n(frame.bottom + 14)}"
            parts.append(
                f'<text x="{_n(x)}" y="{_n(frame.bottom + 14)}" text-anchor="end"'
                f' transform="rotate(-45 {at})" fill="currentColor">{escape(label)}</text>'
            )
        else:
            parts.append(
                f'<text x="{_n(x)}" y="{_n(frame.bottom + 16)}" text-anchor="middle"'
                f' fill="currentColor">{escape(label)}</text>'
            )
    parts.append("</g></svg>")
    return Markup("".join(parts))


def _line_desc(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    value_label: Callable[[int], str],
) -> str:
    lines = [
        title + ", " + (f"{x_labels[0]} – {x_labels[-1]}" if len(x_labels) > 1 else x_labels[0])
    ]
    for s in series:
        low = min(range(len(s.values)), key=lambda i: (s.values[i], i))
        high = max(range(len(s.values)), key=lambda i: (s.values[i], -i))
        lines.append(
            _(
                "%(series)s: %(first)s on %(first_x)s, %(last)s on %(last_x)s;"
                " lowest %(low)s on %(low_x)s, highest %(high)s on %(high_x)s"
            )
            % {
                "series": s.label,
                "first": value_label(s.values[0]),
                "first_x": x_labels[0],
                "last": value_label(s.values[-1]),
                "last_x": x_labels[-1],
                "low": value_label(s.values[low]),
                "low_x": x_labels[low],
                "high": value_label(s.values[high]),
                "high_x": x_labels[high],
            }
        )
    return ". ".join(lines) + "."


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_label: Callable[[int], str],
) -> Markup:
    """One line per series over the x labels (dates), each point marked."""
    plot = _Plot.of("line", title, x_labels, series)
    axis, legend_height = plot.axis, plot.legend_height

    # The first and last x labels are centred on the plot's edges: room for half of each.
    widest = max((_text_width(label) for label in x_labels), default=0.0)
    left = max(_left_margin(axis, value_label), widest / 2 + 4)
    frame = _Frame(left, legend_height + 12, WIDTH - max(16, widest / 2 + 4), legend_height + 232)
    height = frame.bottom + 8 + FONT_SIZE * 1.5
    y = _scale(axis, frame)
    count = len(x_labels)
    step = frame.width / (count - 1) if count > 1 else 0.0

    def x(i: int) -> float:
        return frame.left + i * step if count > 1 else frame.left + frame.width / 2

    parts = plot.start(
        frame, height, value_label, y, lambda: _line_desc(title, x_labels, series, value_label)
    )
    if not plot.empty:
        # Markers shrink when the days crowd together (a year of them); each keeps its tooltip.
        radius = max(1.5, min(3.0, step / 3)) if count > 1 else 3.0
        for index, s in enumerate(series):
            parts.append(_series_group(index, line=True))
            points = " ".join(f"{_n(x(i))},{_n(y(v))}" for i, v in enumerate(s.values))
            parts.append(f'<polyline class="line" points="{points}" fill="none" stroke-width="2"/>')
            for i, value in enumerate(s.values):
                tooltip = f"{s.label}, {x_labels[i]}: {value_label(value)}"
                parts.append(
                    f'<circle class="point" cx="{_n(x(i))}" cy="{_n(y(value))}" r="{_n(radius)}"'
                    f' stroke="none" data-value="{value}"><title>{escape(tooltip)}</title></circle>'
                )
            parts.append("</g>")
    # The last label (today) is always shown; the others every k-th back from it.
    every = _every(count, widest + 12, step or frame.width)
    parts.append('<g class="axis axis-x">')
    parts.append(
        f'<line x1="{_n(frame.left)}" y1="{_n(frame.bottom)}" x2="{_n(frame.right)}"'
        f' y2="{_n(frame.bottom)}" stroke="currentColor" stroke-opacity="0.6"/>'
    )
    for i, label in enumerate(x_labels):
        if (count - 1 - i) % every:
            continue
        parts.append(
            f'<text x="{_n(x(i))}" y="{_n(frame.bottom + 16)}" text-anchor="middle"'
            f' fill="currentColor">{escape(label)}</text>'
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))
