"""The console's pages: settlement dates, one settlement with its approval, the liability,
reconciliation results, the ledger's accounts and seals, the fraud review queue, partners'
webhooks and the rewards catalogue. Routes stay thin; the settlement, reports, ledger, sealing,
fraud, webhooks and rewards modules do the work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from clearinghouse import clock, ledger
from clearinghouse.api.deps import ReadSession, WriteSession
from clearinghouse.api.schemas import BIGINT_MAX, RowId
from clearinghouse.audit import queries as audit_queries
from clearinghouse.audit import sealing
from clearinghouse.config import get_settings
from clearinghouse.console import charts, formatting, i18n, pdf, render
from clearinghouse.console.auth import (
    FINANCE_ACTORS,
    PREFIX,
    FinanceActor,
    FinanceViewer,
    OperatorActor,
    OperatorViewer,
    Signed,
    console_router,
)
from clearinghouse.console.documents import advice_pdf
from clearinghouse.console.i18n import N_
from clearinghouse.console.i18n import gettext as _
from clearinghouse.errors import NotFound
from clearinghouse.fraud import service as fraud
from clearinghouse.points import outstanding, review
from clearinghouse.rewards import overview as rewards_overview
from clearinghouse.rewards import service as rewards
from clearinghouse.webhooks import overview
from clearinghouse.webhooks import service as webhooks
from partners.directory import ID_PATTERN
from settlement import approval, categories, reconciliation, reports, runs
from settlement.liability import liability_history

router = console_router()

STATIC = FsPath(__file__).parent / "static"
BREAKS_PER_PAGE = 200

BusinessDate = Annotated[date, Path()]
PartnerId = Annotated[str, Path(pattern=ID_PATTERN)]
ENTRIES_PER_PAGE = 200

# Outcomes of a form, shown on the page it returns to (a code in the URL, never free text).
NOTICES = {
    "approved": N_("Your approval is recorded."),
    "approved_warned": N_("Your approval is recorded, despite the warnings below."),
    "rejected": N_("The settlement is rejected; it will be computed anew."),
    "paid": N_("The payment is recorded."),
    "resolved": N_("The breaks are marked resolved."),
    "case_approved": N_("The case is approved: what it held back is released."),
    "case_rejected": N_("The case is rejected: what it held back is reversed."),
    "redelivered": N_("The event is due again now, with a fresh round of retries."),
    "stock_moved": N_("The reward's stock is changed."),
    "withdrawn": N_("The reward is withdrawn: it can no longer be ordered."),
}


def _notice(done: str | None) -> str | None:
    return _(NOTICES[done]) if done in NOTICES else None


def _after(path: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}?done={done}", status_code=303)


@router.get("/settlements")
def settlements(request: Request, session: ReadSession, me: FinanceViewer) -> Response:
    listed = [
        {
            "run": item,
            "failed": isinstance(item, runs.FailedDate),
            "open_breaks": runs.open_breaks(session, item.business_date),
        }
        for item in runs.list_dates(session)
    ]
    yesterday = clock.today(get_settings().zone) - timedelta(days=1)
    return render.page(request, "settlements.html", runs=listed, yesterday=yesterday)


@router.get("/settlements/{business_date}")
def settlement(
    request: Request,
    business_date: BusinessDate,
    session: ReadSession,
    me: FinanceViewer,
    done: str | None = None,
) -> Response:
    run = runs.load_run(session, business_date)
    late = reports.late_arrivals(session, run)
    names = reports.legal_names(session, (line.partner_id for line in run.lines))
    report = reports.settlement_report(run, late, names)
    approvals = runs.approvals(session, business_date)
    acting = me.user.role in FINANCE_ACTORS
    chart = charts.grouped_bars(
        [line["legal_name"] for line in report["lines"]],
        [
            charts.Series(_(shown.label), [line[shown.fen_column] for line in report["lines"]])
            for shown in (categories.BY_NAME["issued"], categories.BY_NAME["redeemed"])
        ],
        title=_("Issued and redeemed value by partner"),
        value_label=formatting.yuan,
    )
    return render.page(
        request,
        "settlement.html",
        run=run,
        report=report,
        late_arrivals=late,
        chart=chart,
        categories=categories.CATEGORIES,
        history=runs.history(session, business_date),
        approvals=approvals,
        approvals_needed=approval.APPROVERS_NEEDED,
        reconciliations=reconciliation.for_date(session, business_date),
        open_breaks=runs.open_breaks(session, business_date),
        warnings=approval.warnings(session, run) if run.state in ("computed", "approved") else [],
        can_approve=acting
        and run.state == "computed"
        and all(a.user != me.user.id for a in approvals),
        can_reject=acting and run.state in ("computed", "approved"),
        can_mark_paid=acting and run.state == "approved",
        notice=_notice(done),
    )


def _download(content: bytes | str, media_type: str, filename: str) -> Response:
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/settlements/{business_date}/report.csv")
def settlement_csv(
    business_date: BusinessDate, session: ReadSession, me: FinanceViewer
) -> Response:
    run = runs.load_run(session, business_date)
    return _download(
        reports.settlement_csv(reports.report_of(session, run)),
        "text/csv",
        f"settlement-{business_date}.csv",
    )


@router.get("/settlements/{business_date}/report.pdf")
def settlement_pdf(
    business_date: BusinessDate, session: ReadSession, me: FinanceViewer
) -> Response:
    run = runs.load_run(session, business_date)
    content = pdf.settlement_pdf(
        reports.report_of(session, run),
        runs.history(session, business_date),
        runs.approvals(session, business_date),
        generated_at=clock.now().astimezone(get_settings().zone),
    )
    return _download(content, "application/pdf", f"settlement-{business_date}.pdf")


@router.get("/settlements/months/{month}")
def settlement_month(
    request: Request,
    month: Annotated[str, Path(pattern=reports.MONTH_PATTERN)],
    session: ReadSession,
    me: FinanceViewer,
) -> Response:
    return render.page(
        request, "settlement_month.html", report=reports.month_report(session, month)
    )


@router.get("/settlements/{business_date}/partners/{partner_id}")
def partner_entries(
    request: Request,
    business_date: BusinessDate,
    partner_id: PartnerId,
    session: ReadSession,
    me: FinanceViewer,
    after: Annotated[int | None, Query(ge=0, le=BIGINT_MAX)] = None,
) -> Response:
    run = runs.load_run(session, business_date)
    line = reports.partner_report_line(session, run, partner_id)
    entries, next_entries = reports.partner_entries(
        session, run, partner_id, after, ENTRIES_PER_PAGE
    )
    return render.page(
        request,
        "settlement_partner.html",
        run=run,
        line=line,
        entries=entries,
        next_entries=next_entries,
        categories=categories.CATEGORIES,
        category_labels={category.name: category.label for category in categories.CATEGORIES},
    )


@router.get("/settlements/{business_date}/partners/{partner_id}/entries.csv")
def partner_entries_csv(
    business_date: BusinessDate, partner_id: PartnerId, session: ReadSession, me: FinanceViewer
) -> Response:
    run = runs.load_run(session, business_date)
    reports.partner_report_line(session, run, partner_id)
    entries, _next = reports.partner_entries(session, run, partner_id, None, None)
    return _download(
        reports.entries_csv(run, partner_id, entries),
        "text/csv",
        f"settlement-{business_date}-{partner_id}.csv",
    )


@router.get("/settlements/{business_date}/partners/{partner_id}/advice.pdf")
def partner_advice(
    business_date: BusinessDate, partner_id: PartnerId, session: ReadSession, me: FinanceViewer
) -> Response:
    return _download(
        advice_pdf(session, business_date, partner_id),
        "application/pdf",
        f"settlement-advice-{business_date}-{partner_id}.pdf",
    )


@router.post("/settlements/{business_date}/approve")
def approve(business_date: BusinessDate, session: WriteSession, me: FinanceActor) -> Response:
    _, warnings = approval.approve(session, business_date, me.user)
    return _after(f"/settlements/{business_date}", "approved_warned" if warnings else "approved")


@router.post("/settlements/{business_date}/reject")
def reject(
    business_date: BusinessDate,
    reason: Annotated[str, Form(min_length=1, max_length=500)],
    session: WriteSession,
    me: FinanceActor,
) -> Response:
    approval.reject(session, business_date, me.user, reason.strip())
    return _after(f"/settlements/{business_date}", "rejected")


@router.post("/settlements/{business_date}/paid")
def mark_paid(
    business_date: BusinessDate,
    bank_reference: Annotated[str, Form(min_length=1, max_length=100)],
    session: WriteSession,
    me: FinanceActor,
) -> Response:
    approval.mark_paid(session, business_date, me.user, bank_reference)
    return _after(f"/settlements/{business_date}", "paid")


@router.get("/liability")
def liability(
    request: Request,
    session: ReadSession,
    me: FinanceViewer,
    days: Annotated[int, Query(ge=7, le=366)] = 30,
) -> Response:
    now = clock.now()
    report = reports.liability_report(session, now)
    history = liability_history(session, days, now)
    issuers = sorted({issuer for day in history for issuer in day["by_issuer"]})
    names = _issuer_names(session, [*issuers, *(item["issuer"] for item in report["outstanding"])])
    chart = charts.line_chart(
        [day["business_date"].isoformat() for day in history],
        [charts.Series(_("All issuers"), [day["total_points"] for day in history])]
        + [
            charts.Series(names[issuer], [day["by_issuer"].get(issuer, 0) for day in history])
            for issuer in issuers
        ],
        title=_("Outstanding points at the end of each day"),
        value_label=formatting.points,
    )
    return render.page(
        request, "liability.html", report=report, names=names, as_of=now, chart=chart, days=days
    )


def _issuer_names(session: ReadSession, issuers: list[str]) -> dict[str, str]:
    """Each issuer as the console shows it: a partner by its legal name, the coalition's own
    points as the coalition's."""
    partners = {issuer for issuer in issuers if issuer != outstanding.COALITION_ISSUER}
    return {**reports.legal_names(session, partners), outstanding.COALITION_ISSUER: _("Coalition")}


@router.get("/reconciliations")
def reconciliations(
    request: Request,
    session: ReadSession,
    me: FinanceViewer,
    business_date: Annotated[date | None, Query(alias="date")] = None,
) -> Response:
    found = (
        reconciliation.recent(session)
        if business_date is None
        else reconciliation.for_date(session, business_date)
    )
    return render.page(
        request,
        "reconciliations.html",
        reconciliations=found,
        names=reports.legal_names(session, {r.partner_id for r in found}),
        business_date=business_date,
    )


@router.get("/reconciliations/{reconciliation_id}")
def reconciliation_page(
    request: Request,
    reconciliation_id: int,
    session: ReadSession,
    me: FinanceViewer,
    done: str | None = None,
    after: Annotated[int | None, Query(ge=0, le=BIGINT_MAX)] = None,
) -> Response:
    found = reconciliation.get(session, reconciliation_id)
    breaks, next_breaks = reconciliation.breaks(session, reconciliation_id, after, BREAKS_PER_PAGE)
    return render.page(
        request,
        "reconciliation.html",
        rec=found,
        legal_name=reports.legal_names(session, [found.partner_id])[found.partner_id],
        breaks=breaks,
        next_breaks=next_breaks,
        can_resolve=me.user.role in FINANCE_ACTORS and found.resolved_at is None,
        notice=_notice(done),
    )


@router.post("/reconciliations/{reconciliation_id}/resolve")
def resolve(reconciliation_id: int, session: WriteSession, me: FinanceActor) -> Response:
    reconciliation.resolve(session, reconciliation_id)
    return _after(f"/reconciliations/{reconciliation_id}", "resolved")


ACCOUNTS_PER_PAGE = 200
STATEMENT_LINES_PER_PAGE = 100
BLOCKS_PER_PAGE = 50


@router.get("/ledger")
def ledger_page(
    request: Request,
    session: ReadSession,
    me: FinanceViewer,
    at: Annotated[datetime | None, Query(description="In the coalition's time zone.")] = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    # A time picked in the page has no offset: it is the coalition's local time.
    as_of = None if at is None else at.replace(tzinfo=at.tzinfo or get_settings().zone)
    lines = ledger.trial_balance_accounts(session, as_of, after=after, limit=ACCOUNTS_PER_PAGE + 1)
    return render.page(
        request,
        "ledger.html",
        accounts=lines[:ACCOUNTS_PER_PAGE],
        totals=ledger.trial_balance(session, as_of),
        next_after=lines[ACCOUNTS_PER_PAGE - 1].address if len(lines) > ACCOUNTS_PER_PAGE else None,
        as_of=as_of or clock.now(),
        at=at,
    )


@router.get("/ledger/{address}")
def account_page(
    request: Request,
    address: Annotated[str, Path(max_length=200)],
    session: ReadSession,
    me: FinanceViewer,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    account = ledger.get_account(session, address)
    page = ledger.statement(session, address, limit=STATEMENT_LINES_PER_PAGE, cursor=cursor)
    return render.page(
        request,
        "account.html",
        account=account,
        page=page,
        balance=ledger.balance(session, address),
    )


@router.get("/entries/{entry_id}")
def entry_page(
    request: Request, entry_id: RowId, session: ReadSession, me: FinanceViewer
) -> Response:
    detail = audit_queries.entry_detail(session, entry_id)
    proof = sealing.prove(session, entry_id)
    return render.page(
        request,
        "entry.html",
        entry=detail.entry,
        reversed_by=detail.reversed_by,
        block=None if proof is None else proof.block,
    )


@router.get("/seals")
def seals_page(
    request: Request,
    session: ReadSession,
    me: FinanceViewer,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> Response:
    blocks = sealing.recent_blocks(session, before, BLOCKS_PER_PAGE + 1)
    shown = blocks[:BLOCKS_PER_PAGE]
    return render.page(
        request,
        "seals.html",
        newest=next(iter(sealing.recent_blocks(session, limit=1)), None),
        blocks=shown,
        waiting=sealing.waiting(session),
        next_before=shown[-1].block.number if len(blocks) > BLOCKS_PER_PAGE else None,
    )


CASE_STATES = ("open", "approved", "rejected", "blocked")


@router.get("/cases")
def cases(
    request: Request,
    session: ReadSession,
    me: OperatorViewer,
    state: Annotated[str, Query(pattern="^(open|approved|rejected|blocked)$")] = "open",
) -> Response:
    return render.page(
        request,
        "cases.html",
        cases=fraud.list_cases(session, state, 200),
        state=state,
        states=CASE_STATES,
    )


def _yes_no(value: object) -> str:
    return _("yes") if value else _("no")


def _instant(value: object) -> str:
    return formatting.local_time(datetime.fromisoformat(str(value)))


# The fields of a fraud case's attempt (clearinghouse.fraud.rules.Attempt, as the case keeps
# it), in words, each with how its value is shown: times in the console's zone, money in yuan.
ATTEMPT_FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "operation": (N_("Operation"), i18n.label),
    "partner_id": (N_("Partner"), str),
    "member_id": (N_("Member"), str),
    "store_id": (N_("Store"), str),
    "occurred_at": (N_("Occurred"), _instant),
    "points": (N_("Points"), formatting.points),
    "amount_fen": (N_("Amount"), formatting.yuan),
    "points_already_spent": (N_("Points already spent"), _yes_no),
    "direction": (N_("Exchange direction"), i18n.label),
    "offline": (N_("Approved at an offline till"), _yes_no),
    "debt_after": (N_("Points owed afterwards"), formatting.points),
}


def attempt_rows(attempt: dict[str, Any]) -> list[tuple[str, str]]:
    """The attempt as (label, value) rows in the order above; a field the console has no words
    for yet is shown under its own name, and an empty one is left out."""
    known = [
        (_(label), show(attempt[key]))
        for key, (label, show) in ATTEMPT_FIELDS.items()
        if attempt.get(key) is not None
    ]
    unknown = [
        (key, str(value))
        for key, value in sorted(attempt.items())
        if key not in ATTEMPT_FIELDS and value is not None
    ]
    return known + unknown


@router.get("/cases/{case_id}")
def case(
    request: Request,
    case_id: str,
    session: ReadSession,
    me: OperatorViewer,
    done: str | None = None,
) -> Response:
    found = fraud.get_case(session, case_id)
    return render.page(
        request,
        "case.html",
        case=found,
        attempt=attempt_rows(found.attempt),
        actions=fraud.case_actions(session, case_id),
        notice=_notice(done),
    )


# An operator's decision, and what follows it: the points held back released or reversed.
DECISIONS = {
    "approve": (review.approve_case, "case_approved"),
    "reject": (review.reject_case, "case_rejected"),
}


@router.post("/cases/{case_id}/{decision}")
def decide_case(
    case_id: str,
    decision: Literal["approve", "reject"],
    session: WriteSession,
    me: OperatorActor,
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    decide, done = DECISIONS[decision]
    decide(session, case_id, me.user, note.strip() or None)
    return _after(f"/cases/{case_id}", done)


@router.get("/webhooks")
def webhooks_page(
    request: Request, session: ReadSession, me: OperatorViewer, done: str | None = None
) -> Response:
    return render.page(
        request,
        "webhooks.html",
        endpoints=overview.endpoints(session),
        failures=overview.failures(session),
        redeliveries=overview.redeliveries(session),
        notice=_notice(done),
    )


@router.post("/webhooks/redeliver")
def redeliver_webhook(
    endpoint_id: Annotated[str, Form(max_length=100)],
    event_id: Annotated[str, Form(max_length=100)],
    session: WriteSession,
    me: OperatorActor,
) -> Response:
    webhooks.redeliver(session, None, endpoint_id, event_id)
    return _after("/webhooks", "redelivered")


RewardId = Annotated[str, Form(max_length=100)]
# As many units as a supplier may add or take away at once through the API.
StockUnits = Annotated[int, Form(ge=-rewards.MAX_STOCK_CHANGE, le=rewards.MAX_STOCK_CHANGE)]


@router.get("/rewards")
def rewards_page(
    request: Request, session: ReadSession, me: OperatorViewer, done: str | None = None
) -> Response:
    return render.page(
        request,
        "rewards.html",
        rewards=rewards_overview.catalogue(session),
        orders=rewards_overview.latest_orders(session),
        chinese=i18n.in_chinese(),
        notice=_notice(done),
    )


@router.post("/rewards/stock")
def move_stock(
    reward_id: RewardId, units: StockUnits, session: WriteSession, me: OperatorActor
) -> Response:
    rewards.add_stock(session, None, reward_id, units)
    return _after("/rewards", "stock_moved")


@router.post("/rewards/withdraw")
def withdraw_reward(reward_id: RewardId, session: WriteSession, me: OperatorActor) -> Response:
    rewards.withdraw(session, None, reward_id)
    return _after("/rewards", "withdrawn")


@router.get("/{path:path}")
def unknown_page(path: str, me: Signed) -> Response:
    raise NotFound(f"there is no page /console/{path}")
