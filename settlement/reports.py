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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    and_,
    case,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.errors import NotFound
from clearinghouse.ledger.tables import accounts, journal_entries, postings
from clearinghouse.numbers import fen_half_even, plain_decimal, yuan_text
from clearinghouse.points import outstanding
from clearinghouse.settleable import PARTNER_KEY, VALUE_KEY
from partners import directory, rates
from partners.rates import RatesNotFound
from settlement import categories, netting, runs
from settlement.runs import Line, Run, SettlementNotFound
from settlement.tables import settlement_items, settlement_lines, settlement_runs

# A report's line: the partner, each category's points and fen in the categories' order, the net.
LINE_COLUMNS = ("partner_id", *categories.LINE_COLUMNS, "net_fen")
# The same in the CSV, with the partner's legal name (and a yuan column beside each fen one).
CSV_LINE_COLUMNS = ("partner_id", "legal_name", *LINE_COLUMNS[1:])

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

# A settled entry's columns, in a partner's drill-down and its CSV.
ENTRY_COLUMNS = (
    "entry_id",
    "kind",
    "category",
    "partner_txn_id",
    "points",
    "value_fen",
    "net_fen",
    "rates_version",
    "issue_price",
    "redemption_value",
    "occurred_at",
    "recorded_at",
)

RATES_VERSION_KEY = "rates_version"
"""Where an entry valued by a partner's rates records their version (an accrual, an exchange, a
capture)."""

MONTH_PATTERN = r"^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$"
"""A month as the month view's routes take it: YYYY-MM, from 1900 to 2999."""

DUE_DAYS = 3
"""A run's money is due this many days after its business date (T+3): the date a partner's
settlement advice names for its payment either way."""


class SettlementLineNotFound(NotFound):
    code = "settlement_line_not_found"
    title = "The partner has no line in that settlement"


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

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "occurred_date": self.occurred_date.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
        }

    @classmethod
    def of_json(cls, data: Mapping[str, Any]) -> LateArrival:
        return cls(
            **{
                **data,
                "occurred_date": date.fromisoformat(data["occurred_date"]),
                "recorded_at": datetime.fromisoformat(data["recorded_at"]),
            }
        )


@dataclass(frozen=True)
class SettledEntry:
    """One entry of a partner's line: its category, its points and value as the line counts
    them, `net_fen` its part in the partner's net (the value with the category's sign), and the
    rates it was valued by: the version the entry recorded (a refund: its purchase's), else the
    one in force when it occurred (None if the partner had none), with that version's issue
    price and redemption value in fen a point."""

    partner_id: str
    entry_id: int
    partner_txn_id: str | None
    kind: str
    category: str
    points: int
    value_fen: int
    net_fen: int
    rates_version: int | None
    issue_price: Decimal | None
    redemption_value: Decimal | None
    occurred_at: datetime
    recorded_at: datetime


def _run_entries(
    session: Session,
    run: Run,
    *where: ColumnElement[bool],
    order_by: Sequence[ColumnElement[Any]],
    limit: int | None = None,
) -> Sequence[Row[Any]]:
    """The run's entries that `where` keeps, with the partner each settles with, its points (the
    category's account's, as the lines count them), value, and the rates version it recorded
    (a refund: its purchase's), read from the run's items and their entries."""
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
            postings.c.recorded_at == journal_entries.c.recorded_at,
            accounts.c.address == func.concat("partner:", partner, ":", points_account),
        )
        .scalar_subquery()
    )
    purchase = journal_entries.alias("purchase")
    return session.execute(
        select(
            partner.label("partner_id"),
            journal_entries.c.id,
            journal_entries.c.metadata["partner_txn_id"].astext.label("partner_txn_id"),
            journal_entries.c.kind,
            points.label("points"),
            cast(journal_entries.c.metadata[VALUE_KEY].astext, BigInteger).label("value_fen"),
            cast(
                func.coalesce(
                    journal_entries.c.metadata[RATES_VERSION_KEY].astext,
                    purchase.c.metadata[RATES_VERSION_KEY].astext,
                ),
                Integer,
            ).label("rates_version"),
            journal_entries.c.occurred_at,
            journal_entries.c.recorded_at,
        )
        .join(settlement_items, settlement_items.c.entry_id == journal_entries.c.id)
        .outerjoin(purchase, purchase.c.id == journal_entries.c.reverses_id)
        .where(settlement_items.c.run_id == run.id, *where)
        .order_by(*order_by)
        .limit(limit)
    ).all()


def late_arrivals(session: Session, run: Run) -> list[LateArrival]:
    """The entries of `run` that occurred before its business date began (coalition time), by
    partner, then in the order they occurred: as kept when the run was computed
    (`record_late_arrivals`), or, for a run computed before they were kept, read from its items
    and their entries."""
    kept = session.execute(
        select(settlement_runs.c.late_arrivals).where(settlement_runs.c.id == run.id)
    ).scalar_one()
    if kept is not None:
        return [LateArrival.of_json(arrival) for arrival in kept]
    return _late_arrivals_in_journal(session, run)


def record_late_arrivals(session: Session, run: Run) -> None:
    """Keep the run's late arrivals with it, read from the journal while its entries are there,
    so that its report lists them once their month has been archived."""
    arrivals = _late_arrivals_in_journal(session, run)
    session.execute(
        update(settlement_runs)
        .where(settlement_runs.c.id == run.id)
        .values(late_arrivals=[arrival.as_json() for arrival in arrivals])
    )


def keep_missing_late_arrivals(session: Session) -> int:
    """Keep the late arrivals of the runs computed before runs kept them, while their entries
    are in the journal (a month whose runs lack them is not archived); returns how many runs."""
    missing = session.execute(
        select(settlement_runs).where(settlement_runs.c.late_arrivals.is_(None))
    ).all()
    for row in missing:
        record_late_arrivals(session, runs.run_of(session, row))
    return len(missing)


def _late_arrivals_in_journal(session: Session, run: Run) -> list[LateArrival]:
    began = netting.cutoff(run.business_date - timedelta(days=1))
    rows = _run_entries(
        session,
        run,
        journal_entries.c.occurred_at < began,
        order_by=(
            journal_entries.c.metadata[PARTNER_KEY].astext,
            journal_entries.c.occurred_at,
            journal_entries.c.id,
        ),
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


def _rates_of(session: Session, row: Row[Any]) -> rates.Rates | None:
    """The rates an entry was valued by: the version it recorded, else the one in force when it
    occurred; None if the partner had none."""
    try:
        if row.rates_version is not None:
            return rates.rates_version(session, row.partner_id, row.rates_version)
        return rates.rates_at(session, row.partner_id, row.occurred_at)
    except RatesNotFound:
        return None


def partner_entries(
    session: Session, run: Run, partner_id: str, after: int | None, limit: int | None
) -> tuple[list[SettledEntry], int | None]:
    """The entries of the partner's line of `run`, in the order of their ids, after the cursor
    `after` (an entry id), `limit` of them (None: all); and the cursor of the next page, if any."""
    rows = _run_entries(
        session,
        run,
        journal_entries.c.metadata[PARTNER_KEY].astext == partner_id,
        journal_entries.c.id > (after or 0),
        order_by=(journal_entries.c.id,),
        limit=None if limit is None else limit + 1,
    )
    found = []
    for row in rows[:limit]:
        category = categories.BY_KIND[row.kind]
        valued = _rates_of(session, row)
        found.append(
            SettledEntry(
                row.partner_id,
                row.id,
                row.partner_txn_id,
                row.kind,
                category.name,
                int(row.points),
                row.value_fen,
                category.sign * row.value_fen,
                None if valued is None else valued.version,
                None if valued is None else valued.issue_price,
                None if valued is None else valued.redemption_value,
                row.occurred_at,
                row.recorded_at,
            )
        )
    more = limit is not None and len(rows) > limit
    return found, (found[-1].entry_id if more else None)


def legal_names(session: Session, partner_ids: Iterable[str]) -> dict[str, str]:
    """Each partner's legal name, as its settlement papers print it."""
    return {
        partner_id: directory.get_partner(session, partner_id).legal_name
        for partner_id in partner_ids
    }


def _line(line: Line, names: Mapping[str, str]) -> dict[str, Any]:
    """A line as a report shows it: with its partner's legal name and its net."""
    return {
        **asdict(line),
        "legal_name": names.get(line.partner_id, line.partner_id),
        "net_fen": line.net_fen,
    }


def partner_report_line(session: Session, run: Run, partner_id: str) -> dict[str, Any]:
    """The partner's line of `run` as its report shows it; SettlementLineNotFound when the run
    has none."""
    line = next((line for line in run.lines if line.partner_id == partner_id), None)
    if line is None:
        raise SettlementLineNotFound(
            f"{partner_id} has no line in the settlement of {run.business_date.isoformat()}"
        )
    return _line(line, legal_names(session, [partner_id]))


def report_of(session: Session, run: Run) -> dict[str, Any]:
    """The run's report (`settlement_report`), its late arrivals and partners' names read."""
    return settlement_report(
        run,
        late_arrivals(session, run),
        legal_names(session, [line.partner_id for line in run.lines]),
    )


def settlement_report(
    run: Run, late: Sequence[LateArrival], names: Mapping[str, str]
) -> dict[str, Any]:
    """The run's report: its lines (each with its partner's legal name, from `names`) and
    totals (by the date entries were recorded on), and its late arrivals (`late_arrivals`),
    listed with the date they occurred on."""
    lines = [_line(line, names) for line in run.lines]
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
        "late_arrivals": [arrival.as_json() for arrival in late],
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


def with_yuan(columns: Sequence[str]) -> list[str]:
    """A CSV's header: the columns, each fen one (`x_fen`) followed by its yuan (`x_yuan`)."""
    return [
        name
        for column in columns
        for name in (
            (column, column.removesuffix("_fen") + "_yuan")
            if column.endswith("_fen")
            else (column,)
        )
    ]


def _cells(record: Mapping[str, Any], columns: Sequence[str]) -> list[object]:
    """A CSV's row, in the order of `with_yuan(columns)`: each column of `record` (empty if it
    has none; a rate as the API writes it), a fen amount followed by the same in yuan, written
    exactly from the fen."""
    cells: list[object] = []
    for column in columns:
        value = record.get(column)
        cells.append(
            "" if value is None else plain_decimal(value) if isinstance(value, Decimal) else value
        )
        if column.endswith("_fen"):
            cells.append("" if value is None else yuan_text(value))
    return cells


def settlement_csv(report: Mapping[str, Any]) -> str:
    """The report (`report_of`) as CSV: one row per partner, with its legal name, then a total row
    and the coalition's side; each amount in fen and, beside it, in yuan. Then, if the run has
    late arrivals, a blank line and a table of its own: a header row, and a row per late arrival
    marked LATE_ARRIVAL (their amounts are in the partners' rows already). A run computed
    before its cut-off says so last, in a section of its own (COMPUTED_EARLY, when it was
    computed and its cut-off)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    day = report["business_date"]
    writer.writerow(["business_date", *with_yuan(CSV_LINE_COLUMNS)])
    for line in report["lines"]:
        writer.writerow([day, *_cells(line, CSV_LINE_COLUMNS)])
    writer.writerow([day, *_cells({"partner_id": "TOTAL", **report["totals"]}, CSV_LINE_COLUMNS)])
    revenue = {"partner_id": "COALITION_REVENUE", "net_fen": report["coalition_fen"]}
    writer.writerow([day, *_cells(revenue, CSV_LINE_COLUMNS)])
    if report["late_arrivals"]:
        writer.writerow([])
        writer.writerow(["business_date", "section", *with_yuan(LATE_ARRIVAL_COLUMNS)])
        for arrival in report["late_arrivals"]:
            writer.writerow([day, "LATE_ARRIVAL", *_cells(arrival, LATE_ARRIVAL_COLUMNS)])
    if report["computed_early"]:
        writer.writerow([])
        writer.writerow(["business_date", "section", "computed_at", "cutoff"])
        writer.writerow([day, "COMPUTED_EARLY", report["computed_at"], report["cutoff"]])
    return out.getvalue()


# Where each points account (owner type, kind) stands in the liability: the members' holdings,
# and the three sides of issued - redeemed - expired. Every PTS account is one of these; the
# report refuses to add up books with an account it cannot place.
HOLDINGS = ("available", "held", "pending", "debt")
ISSUING = (("partner", "issued"), ("coalition", "bonus"))
"""The sources of points: a partner's issue, the coalition's bonuses (credit balances)."""
REDEEMING = (("partner", "redeemed"), ("coalition", "fees"), ("coalition", "rounding"))
"""Where spent points go: redeemed at a partner (and the catalogue), exchange fees, rounding."""
EXPIRING = (("coalition", "breakage"),)


class UnplacedAccount(RuntimeError):
    """A points account kind the liability report does not know where to put."""


def entries_csv(run: Run, partner_id: str, entries: Sequence[SettledEntry]) -> str:
    """A partner's line of `run` entry by entry (`partner_entries`): each amount in fen and, beside
    it, in yuan; the rates each entry was valued by."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["business_date", "partner_id", *with_yuan(ENTRY_COLUMNS)])
    for entry in entries:
        record = {
            **asdict(entry),
            "occurred_at": entry.occurred_at.isoformat(),
            "recorded_at": entry.recorded_at.isoformat(),
        }
        writer.writerow([run.business_date.isoformat(), partner_id, *_cells(record, ENTRY_COLUMNS)])
    return out.getvalue()


@dataclass(frozen=True)
class Advice:
    """What a partner's settlement advice tells it: its line of a run (`partner_report_line`),
    who it is and where it is paid, and when the money is due (`DUE_DAYS` after the business
    date)."""

    run: Run
    line: dict[str, Any]
    partner: directory.Partner
    due_date: date


def advice(session: Session, run: Run, partner_id: str) -> Advice:
    """The partner's settlement advice of `run`; SettlementLineNotFound when the run has no line
    of the partner."""
    return Advice(
        run,
        partner_report_line(session, run, partner_id),
        directory.get_partner(session, partner_id),
        run.business_date + timedelta(days=DUE_DAYS),
    )


def month_report(session: Session, month: str) -> dict[str, Any]:
    """The month `month` (YYYY-MM, as `MONTH_PATTERN` holds it): its live runs, day by day, and
    each partner's net over them (with its legal name and the days it had a line), with the
    month's totals."""
    first = date.fromisoformat(f"{month}-01")
    following = (first + timedelta(days=32)).replace(day=1)
    month_runs = sorted(
        (run for run in runs.list_runs(session, 31, following) if run.business_date >= first),
        key=lambda run: run.business_date,
    )
    nets: dict[str, int] = {}
    days: dict[str, int] = {}
    for run in month_runs:
        for line in run.lines:
            nets[line.partner_id] = nets.get(line.partner_id, 0) + line.net_fen
            days[line.partner_id] = days.get(line.partner_id, 0) + 1
    names = legal_names(session, nets)
    return {
        "month": month,
        "previous": f"{first - timedelta(days=1):%Y-%m}",
        "following": f"{following:%Y-%m}",
        "runs": [
            {
                "business_date": run.business_date,
                "state": run.state,
                "attempt": run.attempt,
                "entries": run.entries,
                "partners_pay_fen": run.partners_pay_fen,
                "partners_receive_fen": run.partners_receive_fen,
                "coalition_fen": run.coalition_fen,
            }
            for run in month_runs
        ],
        "partners": [
            {
                "partner_id": partner_id,
                "legal_name": names[partner_id],
                "days": days[partner_id],
                "net_fen": nets[partner_id],
            }
            for partner_id in sorted(nets)
        ],
        "partners_pay_fen": sum(max(net, 0) for net in nets.values()),
        "partners_receive_fen": sum(-min(net, 0) for net in nets.values()),
        "coalition_fen": sum(run.coalition_fen for run in month_runs),
    }


def liability_report(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """The points the coalition still owes, line by line: outstanding points by issuing partner
    (available to members in lots not expired), valued at that partner's redemption value now;
    points in open holds; points pending a risk review; less the points members owe. Their total
    reconciles to issued - redeemed - expired, read from the ledger. Also breakage to date and
    points expiring in the next 30, 60 and 90 days."""
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
        by_issuer.append(
            {
                "issuer": issuer or outstanding.COALITION_ISSUER,
                "points": points,
                "value_fen": value,
            }
        )
    books = ledger.balances_by_kind(session, "PTS")
    placed: set[tuple[str, str]] = {*ISSUING, *REDEEMING, *EXPIRING}
    placed.update(("member", kind) for kind in HOLDINGS)
    unplaced = sorted(set(books) - placed)
    if unplaced:
        raise UnplacedAccount(f"the liability report cannot place points accounts {unplaced}")
    available = sum(figures.values())
    held = books.get(("member", "held"), 0)
    pending = books.get(("member", "pending"), 0)
    owed = -books.get(("member", "debt"), 0)
    breakage = books.get(("coalition", "breakage"), 0)
    lapsed = outstanding.lapsed(session, moment)
    expiring = {
        f"{days}_days": outstanding.expiring_within(session, moment, days) for days in (30, 60, 90)
    }
    return {
        "as_of": moment.isoformat(),
        "outstanding": by_issuer,
        "available_points": available,
        "held_points": held,
        "pending_review_points": pending,
        "owed_points": owed,
        "total_points": available + held + pending - owed,
        "total_value_fen": sum(item["value_fen"] or 0 for item in by_issuer),
        "issued_points": -sum(books.get(account, 0) for account in ISSUING),
        "redeemed_points": sum(books.get(account, 0) for account in REDEEMING),
        "expired_points": breakage + lapsed,
        "breakage_points": breakage,
        "lapsed_points": lapsed,
        "expiring_points": expiring,
    }
