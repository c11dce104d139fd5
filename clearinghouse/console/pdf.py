"""The settlement report as a PDF (A4 landscape) for the file and the bank: the run's facts, one
line per partner with a totals row, the coalition's revenue, the zero-sum verdict, the late
arrivals (if any), approvals and the run's state history; a footer with the generation time
and page numbers on every page.

Written with fpdf2's core Helvetica, which needs no font file but only draws Windows-1252 text
(Latin-1 plus a few signs such as the em dash): characters outside it print as "?" rather than
stopping the report. For that reason its labels are English whatever the console's language.
The same inputs give the same bytes (the creation date is `generated_at`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fpdf import FPDF
from fpdf.fonts import FontFace

from clearinghouse.console import i18n
from clearinghouse.console.formatting import local_time, points, yuan
from settlement.categories import CATEGORIES
from settlement.reports import Advice
from settlement.runs import Approval, Event

# English labels whatever CLEARINGHOUSE_LANGUAGE says: the core font has no CJK glyphs, so Chinese
# labels would print as "?". A Chinese PDF needs a CJK font embedded (fpdf2's `add_font`); the
# labels stay marked with `_()` so the catalogue already holds them for that day.
ENGLISH = i18n.translations(None)
_ = ENGLISH.gettext

ENCODING = "windows-1252"
FONT = "Helvetica"
HEADINGS = FontFace(emphasis="BOLD", fill_color=(228, 232, 238))
TOTALS = FontFace(emphasis="BOLD", fill_color=(244, 246, 249))
OK, BAD = (29, 122, 70), (179, 38, 30)  # the console's --ok and --bad
# The partner table's type size: smaller than the rest, so that every category's column fits the
# page's width. A category's column is this wide (mm: ¥123,456,789.00 fits), or wider if its
# heading's longest word needs it (a heading wraps at its spaces).
TABLE_SIZE = 8
MONEY_WIDTH = 25


def _text(value: object) -> str:
    """What the core font can draw: anything else becomes "?" (a note in Chinese, say)."""
    return str(value).encode(ENCODING, errors="replace").decode(ENCODING)


def _net(fen: int) -> str:
    """A partner's net from the coalition's side: positive, the partner pays."""
    if fen > 0:
        return _("pays %(amount)s") % {"amount": yuan(fen)}
    if fen < 0:
        return _("receives %(amount)s") % {"amount": yuan(-fen)}
    return yuan(0)


def _state(state: str | None) -> str:
    return "" if state is None else i18n.label(state, ENGLISH)


class _SettlementPdf(FPDF):
    def __init__(self, footer_note: str, orientation: str = "landscape") -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.footer_note = footer_note
        self.core_fonts_encoding = ENCODING
        self.set_margins(12, 12, 12)
        self.set_auto_page_break(auto=True, margin=16)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(FONT, size=8)
        self.set_text_color(91, 101, 117)
        half = self.epw / 2
        self.cell(half, 5, _text(self.footer_note))
        page = _("Page %(page)s of %(pages)s") % {"page": self.page_no(), "pages": "{nb}"}
        self.cell(half, 5, _text(page), align="R")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str) -> None:
        # A heading never ends a page: it moves to the next with what it heads.
        if self.will_page_break(26):
            self.add_page()
        else:
            self.ln(4)
        self.set_font(FONT, style="B", size=12)
        self.cell(0, 8, _text(text), new_x="LMARGIN", new_y="NEXT")
        self.set_font(FONT, size=9)

    def facts(self, pairs: Sequence[tuple[str, str]], per_row: int = 3) -> None:
        """Labelled values side by side, `per_row` to a row; the last of a row takes the rest
        of the line and wraps (a bank reference is never cut)."""
        width = self.epw / per_row
        for start in range(0, len(pairs), per_row):
            row = pairs[start : start + per_row]
            for index, (label, value) in enumerate(row):
                self.set_font(FONT, style="B", size=10)
                self.cell(34, 6, _text(label))
                self.set_font(FONT, size=10)
                if index < len(row) - 1:
                    self.cell(width - 34, 6, _text(value))
                else:
                    self.multi_cell(0, 6, _text(value), align="L", new_x="LMARGIN", new_y="NEXT")

    def paragraph(
        self, text: str, *, bold: bool = False, colour: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        self.set_font(FONT, style="B" if bold else "", size=10)
        self.set_text_color(*colour)
        self.multi_cell(0, 6, _text(text), align="L", new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)


def _category_widths(pdf: _SettlementPdf) -> list[int]:
    """Each category's column width: its heading's longest word, bold, with the cell's
    padding."""
    pdf.set_font(FONT, style="B", size=TABLE_SIZE)
    widths = [
        max(
            MONEY_WIDTH,
            *(
                math.ceil(pdf.get_string_width(word) + 6)
                for word in _text(_(category.label)).split()
            ),
        )
        for category in CATEGORIES
    ]
    pdf.set_font(FONT, size=TABLE_SIZE)
    return widths


def _partner_table(pdf: _SettlementPdf, report: dict[str, Any]) -> None:
    headings = [
        _("Partner"),
        *(_(category.label) for category in CATEGORIES),
        _("Net: pays / receives"),
    ]
    widths = (37, *_category_widths(pdf), 36)
    pdf.set_font(FONT, size=TABLE_SIZE)
    with pdf.table(
        col_widths=widths,
        text_align=("LEFT", *("RIGHT",) * (len(widths) - 1)),
        headings_style=HEADINGS,
        repeat_headings=1,
        line_height=4.6,
        padding=(1, 1.5),
    ) as table:
        table.row([_text(h) for h in headings])
        for line in report["lines"]:
            table.row(
                [
                    _text(line["legal_name"]),
                    *(yuan(line[category.fen_column]) for category in CATEGORIES),
                    _text(_net(line["net_fen"])),
                ]
            )
        totals = report["totals"]
        table.row(
            [
                _text(_("Total")),
                *(yuan(totals[category.fen_column]) for category in CATEGORIES),
                _text(_net(totals["net_fen"])),
            ],
            style=TOTALS,
        )


def _simple_table(
    pdf: _SettlementPdf,
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[int],
) -> None:
    """A plain table from the left margin, its columns `widths` mm wide."""
    pdf.set_font(FONT, size=9)
    with pdf.table(
        col_widths=tuple(widths),
        width=sum(widths),
        align="LEFT",
        text_align="LEFT",
        headings_style=HEADINGS,
        repeat_headings=1,
        line_height=4.6,
        padding=(1, 1.5),
    ) as table:
        table.row([_text(h) for h in headings])
        for row in rows:
            table.row([_text(cell) for cell in row])


def _document(title: str, generated_at: datetime, orientation: str = "landscape") -> _SettlementPdf:
    """A new document with its title, metadata, footer and first page."""
    pdf = _SettlementPdf(_("Generated %(when)s") % {"when": local_time(generated_at)}, orientation)
    pdf.set_title(title)  # document metadata is Unicode: no need to narrow it
    pdf.set_creator("clearinghouse")
    pdf.set_creation_date(generated_at)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font(FONT, style="B", size=16)
    pdf.cell(0, 10, _text(title), new_x="LMARGIN", new_y="NEXT")
    return pdf


def settlement_pdf(
    report: dict[str, Any],
    history: Sequence[Event],
    approvals: Sequence[Approval],
    *,
    generated_at: datetime,
) -> bytes:
    """`report` as `settlement.reports.settlement_report` gives it; `history` and `approvals`
    as `settlement.runs.history` and `approvals` give them."""
    title = _("Settlement report — %(date)s") % {"date": report["business_date"]}
    pdf = _document(title, generated_at)
    pdf.facts(
        [
            (_("State"), _state(report["state"])),
            (_("Attempt"), str(report["attempt"])),
            (_("Cut-off"), local_time(datetime.fromisoformat(report["cutoff"]))),
            (
                _("Computed"),
                local_time(datetime.fromisoformat(report["computed_at"]))
                + (f" ({_('early: before its cut-off')})" if report["computed_early"] else ""),
            ),
            (_("Entries"), f"{report['entries']:,}"),
            (_("Bank reference"), report["bank_reference"] or _("none yet")),
        ]
    )

    pdf.heading(_("By partner"))
    _partner_table(pdf, report)

    pdf.heading(_("Summary"))
    pdf.facts(
        [
            (_("Partners pay"), yuan(report["partners_pay_fen"])),
            (_("Partners receive"), yuan(report["partners_receive_fen"])),
            (_("Coalition revenue"), yuan(report["coalition_fen"])),
        ]
    )
    pdf.ln(2)
    if report["zero_sum"]:
        pdf.paragraph(
            _(
                "Zero-sum check passed: the partners' nets less the coalition's revenue come to "
                "zero, to the fen."
            ),
            bold=True,
            colour=OK,
        )
    else:
        pdf.paragraph(
            _(
                "Zero-sum check FAILED: the partners' nets less the coalition's revenue do not "
                "come to zero. Do not pay this settlement."
            ),
            bold=True,
            colour=BAD,
        )

    if report["late_arrivals"]:
        pdf.heading(_("Late arrivals"))
        pdf.paragraph(
            _(
                "A settlement takes the entries recorded on its date. These were recorded on this "
                "date but occurred on an earlier one: they are in the partners' lines above "
                "already, and are shown here with the date they occurred on."
            )
        )
        _simple_table(
            pdf,
            [
                _("Partner"),
                _("Entry"),
                _("Partner's transaction"),
                _("Kind"),
                _("Points"),
                _("Value"),
                _("Occurred on"),
                _("Recorded at"),
            ],
            [
                [
                    late["partner_id"],
                    str(late["entry_id"]),
                    late["partner_txn_id"] or "",
                    late["kind"],
                    points(late["points"]),
                    yuan(late["value_fen"]),
                    late["occurred_date"],
                    local_time(datetime.fromisoformat(late["recorded_at"])),
                ]
                for late in report["late_arrivals"]
            ],
            (40, 24, 50, 30, 25, 30, 26, 48),
        )

    pdf.heading(_("Approvals"))
    if approvals:
        _simple_table(
            pdf,
            [_("Approved by"), _("At")],
            [[a.user, local_time(a.at)] for a in approvals],
            (60, 60),
        )
    else:
        pdf.paragraph(_("No approvals yet."))

    pdf.heading(_("State history"))
    if history:
        _simple_table(
            pdf,
            [_("Attempt"), _("From"), _("To"), _("By"), _("Note"), _("At")],
            [
                [
                    str(event.attempt),
                    _state(event.from_state),
                    _state(event.to_state),
                    event.user or "",
                    event.note or "",
                    local_time(event.at),
                ]
                for event in history
            ],
            (18, 28, 28, 40, 111, 48),
        )
    else:
        pdf.paragraph(_("No state changes recorded."))
    return bytes(pdf.output())


def advice_pdf(advice: Advice, *, generated_at: datetime) -> bytes:
    """A partner's settlement advice (A4 portrait), `advice` as `settlement.reports.advice`
    gives it: who it is addressed to and its bank details, the run, the partner's line by
    category, and what it pays or receives by the due date."""
    run, line, partner = advice.run, advice.line, advice.partner
    title = _("Settlement advice — %(date)s") % {"date": run.business_date.isoformat()}
    pdf = _document(title, generated_at, "portrait")
    pdf.facts(
        [
            (_("To"), partner.legal_name),
            (_("Partner"), partner.id),
            (_("Bank"), partner.bank_name or _("not on file")),
            (_("Account"), partner.bank_account or _("not on file")),
        ],
        per_row=1,
    )
    pdf.ln(2)
    pdf.facts(
        [
            (_("Business date"), run.business_date.isoformat()),
            (_("Attempt"), str(run.attempt)),
            (_("State"), _state(run.state)),
            (_("Cut-off"), local_time(run.cutoff)),
            (_("Due date"), advice.due_date.isoformat()),
            (_("Bank reference"), run.bank_reference or _("none yet")),
        ],
        per_row=2,
    )

    pdf.heading(_("Your line"))
    _simple_table(
        pdf,
        [_("Category"), _("Points"), _("Value")],
        [
            [
                _(category.label),
                points(line[category.points_column]),
                yuan(line[category.fen_column]),
            ]
            for category in CATEGORIES
        ],
        (80, 45, 45),
    )
    net = line["net_fen"]
    pdf.ln(2)
    if net > 0:
        owed = _("You pay the clearing house %(amount)s by %(due)s.")
    elif net < 0:
        owed = _("The clearing house pays you %(amount)s by %(due)s, to the account above.")
    else:
        owed = _("Nothing is owed either way (%(amount)s); due date %(due)s.")
    pdf.paragraph(owed % {"amount": yuan(abs(net)), "due": advice.due_date.isoformat()}, bold=True)
    return bytes(pdf.output())
