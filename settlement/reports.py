"""Finance reports: the settlement report of a date (JSON and CSV) and the liability report."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.numbers import fen_half_even
from clearinghouse.points import outstanding
from partners import rates
from partners.rates import RatesNotFound
from settlement import categories
from settlement.runs import Line, Run, SettlementNotFound
from settlement.tables import settlement_lines, settlement_runs

# A report's line: the partner, each category's points and fen in the categories' order, the net.
LINE_COLUMNS = ("partner_id", *categories.LINE_COLUMNS, "net_fen")


def settlement_report(run: Run) -> dict[str, Any]:
    lines = [{**asdict(line), "net_fen": line.net_fen} for line in run.lines]
    totals = {column: sum(line[column] for line in lines) for column in LINE_COLUMNS[1:]}
    return {
        "business_date": run.business_date.isoformat(),
        "attempt": run.attempt,
        "cutoff": run.cutoff.isoformat(),
        "state": run.state,
        "bank_reference": run.bank_reference,
        "entries": run.entries,
        "lines": lines,
        "totals": totals,
        "partners_pay_fen": run.partners_pay_fen,
        "partners_receive_fen": run.partners_receive_fen,
        "coalition_fen": run.coalition_fen,
        "zero_sum": run.zero_sum,
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


def settlement_csv(run: Run) -> str:
    """One row per partner, then a total row and the coalition's side; amounts in fen."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["business_date", *LINE_COLUMNS])
    report = settlement_report(run)
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
