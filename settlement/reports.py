"""Finance reports: the settlement report of a date (JSON and CSV) and the liability report.

Two dates meet in a settlement report. A run settles the entries *recorded* on its business date
(before its cut-off), so its lines and totals group entries by the date they were recorded on.
An entry may have *occurred* earlier: a partner reports a purchase back-dated within the rules'
window, and it earns by the rules of when it occurred. Such an entry is a late arrival: it is in
the lines of the run its recording falls into, and the report lists it again, apart, with the
date it occurred on, to explain it; the totals do not count it twice."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, func, select
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.ledger.tables import accounts, journal_entries, postings
from clearinghouse.numbers import fen_half_even
from clearinghouse.points import outstanding
from clearinghouse.settleable import PARTNER_KEY, VALUE_KEY
from partners import rates
from partners.rates import RatesNotFound
from settlement import categories, netting
from settlement.runs import Line, Run, SettlementNotFound
from settlement.tables import settlement_items, settlement_lines, settlement_runs

# A report's line: the partner, each category's points and fen in the categories' order, the net.
LINE_COLUMNS = ("partner_id", *categories.LINE_COLUMNS, "net_fen")

# A late arrival's columns, in the report and the CSV.
LATE_ARRIVAL_COLUMNS = (
    "partner_id",
    "entry_id",
    "partner_txn_id",
    "kind",
    "points",
    "value_fen",
    "occurred_date",
    "recorded_at",
)


@dataclass(frozen=True)
class LateArrival:
    """An entry of a run that occurred on an earlier business date than the run's: its points
    (the category's, as the lines count them), its value, the date it occurred on and the instant
    it was recorded. `partner_txn_id` is the partner's transaction id, for the kinds that have
    one (a purchase, a refund)."""

    partner_id: str
    entry_id: int
    partner_txn_id: str | None
    kind: str
    points: int
    value_fen: int
    occurred_date: date
    recorded_at: datetime


def late_arrivals(session: Session, run: Run) -> list[LateArrival]:
    """The entries of `run` that occurred before its business date began (coalition time), by
    partner, then in the order they occurred. Reads the run's items, not the journal."""
    partner = journal_entries.c.metadata[PARTNER_KEY].astext
    points_account = case(
        {kind: category.points_account for kind, category in categories.BY_KIND.items()},
        value=journal_entries.c.kind,
    )
    points = (
        select(func.coalesce(func.sum(func.abs(postings.c.amount)), 0))
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(
            postings.c.entry_id == journal_entries.c.id,
            accounts.c.address == func.concat("partner:", partner, ":", points_account),
        )
        .scalar_subquery()
    )
    began = netting.cutoff(run.business_date - timedelta(days=1))
    rows = session.execute(
        select(
            partner.label("partner_id"),
            journal_entries.c.id,
            journal_entries.c.metadata["partner_txn_id"].astext.label("partner_txn_id"),
            journal_entries.c.kind,
            points.label("points"),
            cast(journal_entries.c.metadata[VALUE_KEY].astext, BigInteger).label("value_fen"),
            journal_entries.c.occurred_at,
            journal_entries.c.recorded_at,
        )
        .join(settlement_items, settlement_items.c.entry_id == journal_entries.c.id)
        .where(settlement_items.c.run_id == run.id, journal_entries.c.occurred_at < began)
        .order_by(partner, journal_entries.c.occurred_at, journal_entries.c.id)
    )
    return [
        LateArrival(
            row.partner_id,
            row.id,
            row.partner_txn_id,
            row.kind,
            int(row.points),
            row.value_fen,
            netting.business_date_of(row.occurred_at),
            row.recorded_at,
        )
        for row in rows
    ]


def settlement_report(run: Run, late: Sequence[LateArrival]) -> dict[str, Any]:
    """The run's report: its lines and totals (by the date entries were recorded on), and its
    late arrivals (`late_arrivals`), listed with the date they occurred on."""
    lines = [{**asdict(line), "net_fen": line.net_fen} for line in run.lines]
    totals = {column: sum(line[column] for line in lines) for column in LINE_COLUMNS[1:]}
    return {
        "business_date": run.business_date.isoformat(),
        "attempt": run.attempt,
        "cutoff": run.cutoff.isoformat(),
        "computed_at": run.computed_at.isoformat(),
        "computed_early": run.computed_early,
        "state": run.state,
        "bank_reference": run.bank_reference,
        "entries": run.entries,
        "lines": lines,
        "totals": totals,
        "partners_pay_fen": run.partners_pay_fen,
        "partners_receive_fen": run.partners_receive_fen,
        "coalition_fen": run.coalition_fen,
        "zero_sum": run.zero_sum,
        "late_arrivals": [
            {
                **asdict(arrival),
                "occurred_date": arrival.occurred_date.isoformat(),
                "recorded_at": arrival.recorded_at.isoformat(),
            }
            for arrival in late
        ],
    }


def partner_line(session: Session, business_date: date, partner_id: str) -> tuple[str, Line]:
    """The state of the date's live run and the partner's own line of it (zeros if it had no
    entries that day), read without the rest of the run."""
    row = session.execute(
        select(settlement_runs.c.state, settlement_lines)
        .outerjoin(
            settlement_lines,
            and_(
                settlement_lines.c.run_id == settlement_runs.c.id,
                settlement_lines.c.partner_id == partner_id,
            ),
        )
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
    ).first()
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    if row.partner_id is None:
        return row.state, Line(partner_id)
    amounts = {name: getattr(row, name) for name in categories.LINE_COLUMNS}
    return row.state, Line(partner_id, **amounts)


def settlement_csv(run: Run, late: Sequence[LateArrival]) -> str:
    """One row per partner, then a total row and the coalition's side; amounts in fen. Then, if
    the run has late arrivals, a blank line and a table of its own: a header row, and a row per
    late arrival marked LATE_ARRIVAL (their amounts are in the partners' rows already)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["business_date", *LINE_COLUMNS])
    report = settlement_report(run, late)
    for line in report["lines"]:
        writer.writerow([report["business_date"], *(line[c] for c in LINE_COLUMNS)])
    writer.writerow(
        [report["business_date"], "TOTAL", *(report["totals"][c] for c in LINE_COLUMNS[1:])]
    )
    writer.writerow(
        [
            report["business_date"],
            "COALITION_REVENUE",
            *([""] * (len(LINE_COLUMNS) - 2)),
            report["coalition_fen"],
        ]
    )
    if report["late_arrivals"]:
        writer.writerow([])
        writer.writerow(["business_date", "section", *LATE_ARRIVAL_COLUMNS])
        for arrival in report["late_arrivals"]:
            writer.writerow(
                [
                    report["business_date"],
                    "LATE_ARRIVAL",
                    *(arrival[c] if arrival[c] is not None else "" for c in LATE_ARRIVAL_COLUMNS),
                ]
            )
    return out.getvalue()


def liability_report(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Outstanding points by issuing partner, valued at that partner's redemption value now;
    breakage to date; points expiring in the next 30, 60 and 90 days."""
    moment = now or clock.now()
    figures = outstanding.at_instant(session, moment)
    by_issuer = []
    for issuer, points in figures.items():
        value: int | None = None
        if issuer is not None:
            try:
                redemption = rates.rates_at(session, issuer, moment).redemption_value
                value = fen_half_even(redemption * points)
            except RatesNotFound:
                value = None
        else:
            # Coalition bonuses: 100 points = 1 yuan.
            value = fen_half_even(Decimal(points))
        by_issuer.append({"issuer": issuer or "coalition", "points": points, "value_fen": value})
    expiring = {
        f"{days}_days": outstanding.expiring_within(session, moment, days) for days in (30, 60, 90)
    }
    return {
        "as_of": moment.isoformat(),
        "outstanding": by_issuer,
        "total_points": sum(item["points"] for item in by_issuer),
        "total_value_fen": sum(item["value_fen"] or 0 for item in by_issuer),
        "breakage_points": ledger.balance(session, "coalition:breakage"),
        "expiring_points": expiring,
    }
