"""The settlement report as a PDF, read back with pypdf: the text a reader (or the bank) sees."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pypdf import PdfReader

from clearinghouse.console import i18n
from clearinghouse.console.pdf import settlement_pdf
from settlement.reports import LateArrival, settlement_report
from settlement.runs import Approval, Event, Line, Run
from tests.builders.console import console_language

SHANGHAI = ZoneInfo("Asia/Shanghai")
GENERATED = datetime(2026, 3, 10, 3, 15, tzinfo=UTC)  # 11:15 in Shanghai


def report_of(
    lines: list[Line],
    *,
    clearing_fen: int | None = None,
    late: Sequence[LateArrival] = (),
    **run: Any,
) -> dict[str, Any]:
    """The report dict as the console gets it, from a run built by hand, with the late arrivals
    `late`. The coalition keeps what the partners' nets leave over unless `clearing_fen` says
    otherwise."""
    fields: dict[str, Any] = {
        "id": 1,
        "business_date": date(2026, 3, 9),
        "attempt": 1,
        "cutoff": datetime(2026, 3, 10, tzinfo=SHANGHAI),
        "state": "approved",
        "bank_reference": None,
        "entries": 1_234,
        "computed_at": datetime(2026, 3, 10, 0, 5, tzinfo=SHANGHAI),
    } | run
    net = sum(line.net_fen for line in lines)
    return settlement_report(
        Run(**fields, lines=lines, clearing_fen=-net if clearing_fen is None else clearing_fen),
        late,
        {},
    )


def two_partners() -> list[Line]:
    return [
        Line("payer-1", issued_points=1_000, issued_fen=123_456, reversed_fen=1_000),
        Line(
            "receiver-2",
            redeemed_points=500,
            redeemed_fen=50_000,
            redemption_refunded_fen=2_500,
            exchange_out_fen=7_000,
        ),
    ]


HISTORY = [
    Event(
        attempt=1,
        from_state=None,
        to_state="computed",
        user=None,
        note="12 entries",
        at=datetime(2026, 3, 10, 1, 0, tzinfo=UTC),
    ),
    Event(
        attempt=1,
        from_state="computed",
        to_state="computed",
        user="alice",
        note="first approval",
        at=datetime(2026, 3, 10, 2, 0, tzinfo=UTC),
    ),
    Event(
        attempt=1,
        from_state="computed",
        to_state="approved",
        user="bob",
        note="second approval",
        at=datetime(2026, 3, 10, 2, 30, tzinfo=UTC),
    ),
]
APPROVALS = [
    Approval("alice", datetime(2026, 3, 10, 2, 0, tzinfo=UTC)),
    Approval("bob", datetime(2026, 3, 10, 2, 30, tzinfo=UTC)),
]


def pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_the_report_reads_back_with_its_lines_totals_and_verdict() -> None:
    report = report_of(two_partners())
    pdf = settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED)
    assert pdf.startswith(b"%PDF-")
    [text] = pages(pdf)

    assert "Settlement report — 2026-03-09" in text
    assert re.search(r"State\s+approved", text)
    assert re.search(r"Attempt\s+1", text)
    assert re.search(r"Cut-off\s+2026-03-10 00:00 CST", text)
    assert re.search(r"Entries\s+1,234", text)
    assert re.search(r"Bank reference\s+none yet", text)
    # A heading too long for its column wraps at its spaces.
    words = " ".join(text.split())
    for heading in ("Partner", "Issued", "Reversals", "Redeemed", "Redemption refunds"):
        assert heading in words
    assert "Net: pays / receives" in text

    # payer-1: issued 1,234.56, reversed 10.00, net 1,224.56 owed to the coalition.
    assert re.search(
        r"payer-1 ¥1,234\.56 ¥10\.00 ¥0\.00 ¥0\.00 ¥0\.00 ¥0\.00 ¥0\.00 ¥0\.00 pays ¥1,224\.56",
        text,
    )
    # receiver-2: redeemed 500.00, 25.00 of it refunded, 70.00 exchanged out: it receives 545.00.
    assert re.search(
        r"receiver-2 ¥0\.00 ¥0\.00 ¥500\.00 ¥25\.00 ¥0\.00 ¥70\.00 ¥0\.00 ¥0\.00"
        r" receives ¥545\.00",
        text,
    )
    assert re.search(
        r"Total ¥1,234\.56 ¥10\.00 ¥500\.00 ¥25\.00 ¥0\.00 ¥70\.00 ¥0\.00 ¥0\.00 pays ¥679\.56",
        text,
    )
    assert re.search(r"Partners pay\s+¥1,224\.56", text)
    assert re.search(r"Partners receive\s+¥545\.00", text)
    assert re.search(r"Coalition revenue\s+¥679\.56", text)
    assert "Zero-sum check passed" in text

    assert re.search(r"alice\s+2026-03-10 10:00 CST", text)
    assert re.search(r"bob\s+2026-03-10 10:30 CST", text)
    assert "second approval" in text
    assert re.search(r"computed\s+approved\s+bob", text)
    assert "Generated 2026-03-10 11:15 CST" in text
    assert "Page 1 of 1" in text


def test_a_failed_zero_sum_says_so() -> None:
    report = report_of(two_partners(), clearing_fen=-1, state="computed")
    assert report["zero_sum"] is False
    [text] = pages(settlement_pdf(report, HISTORY[:1], [], generated_at=GENERATED))
    assert "Zero-sum check FAILED" in text
    assert "Do not pay this settlement" in text
    assert "No approvals yet." in text
    assert re.search(r"Coalition revenue\s+¥0\.01", text)


def test_late_arrivals_are_listed_with_the_date_they_occurred_on() -> None:
    late = LateArrival(
        "payer-1",
        4_321,
        "T-1001",
        "accrual",
        1_540,
        1_848,
        date(2026, 3, 6),
        datetime(2026, 3, 9, 2, 30, tzinfo=UTC),
    )
    [text] = pages(
        settlement_pdf(report_of(two_partners(), late=[late]), [], [], generated_at=GENERATED)
    )
    assert "Late arrivals" in text
    assert "recorded on this date but occurred on an earlier one" in text
    assert re.search(
        r"payer-1\s+4321\s+T-1001\s+accrual\s+1,540\s+¥18\.48\s+2026-03-06\s+2026-03-09 10:30",
        text,
    )
    assert (
        "Late arrivals"
        not in pages(settlement_pdf(report_of(two_partners()), [], [], generated_at=GENERATED))[0]
    )


def test_a_paid_run_shows_its_bank_reference_and_no_history_is_said() -> None:
    report = report_of(two_partners(), state="paid", bank_reference="BOC-2026-0310-77")
    [text] = pages(settlement_pdf(report, [], APPROVALS, generated_at=GENERATED))
    assert re.search(r"State\s+paid", text)
    assert re.search(r"Bank reference\s+BOC-2026-0310-77", text)
    assert "No state changes recorded." in text


def test_eighty_partners_run_over_pages_with_the_header_row_on_each() -> None:
    lines = [
        Line(f"partner-{i:03d}", issued_fen=100_000 + i, redeemed_fen=40_000) for i in range(80)
    ]
    report = report_of(lines)
    texts = pages(settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED))

    assert len(texts) >= 3
    table_pages = [t for t in texts if re.search(r"partner-\d{3}", t)]
    assert len(table_pages) >= 3
    for text in table_pages:
        assert re.search(r"Partner\s+Issued\s+Reversals\s+Redeemed\s+Redemption\s+refunds", text)
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text
        assert "Generated 2026-03-10 11:15 CST" in text
    everything = "\n".join(texts)
    for i in range(80):
        assert len(re.findall(rf"partner-{i:03d} ", everything)) == 1
    assert "partner-079 ¥1,000.79 ¥0.00 ¥400.00" in everything
    total_issued = sum(100_000 + i for i in range(80))
    assert f"Total ¥{total_issued // 100:,}.{total_issued % 100:02d}" in everything
    # What follows the table comes after the last partner.
    assert everything.index("Zero-sum check passed") > everything.index("partner-079")


def test_the_same_inputs_give_the_same_bytes_dated_when_generated() -> None:
    report = report_of(two_partners())
    first = settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED)
    assert first == settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED)
    metadata = PdfReader(io.BytesIO(first)).metadata
    assert metadata is not None
    assert metadata.creation_date == GENERATED
    assert metadata.title == "Settlement report — 2026-03-09"


def test_text_the_core_font_cannot_draw_does_not_stop_the_report() -> None:
    history = [replace(HISTORY[1], note="第一次批准 ok")]
    [text] = pages(settlement_pdf(report_of(two_partners()), history, [], generated_at=GENERATED))
    assert "????? ok" in text


def test_with_the_console_in_chinese_the_pdf_keeps_its_english_labels() -> None:
    report = report_of(two_partners())
    english = settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED)
    with console_language("zh_CN"):
        assert i18n.gettext("Settlement report — %(date)s") == "结算报告 — %(date)s"
        in_chinese_console = settlement_pdf(report, HISTORY, APPROVALS, generated_at=GENERATED)
    assert in_chinese_console == english
    [text] = pages(in_chinese_console)
    assert "Settlement report — 2026-03-09" in text
    assert re.search(r"State\s+approved", text)
    assert "?" not in text
