"""Settlement routes: finance staff (bearer token) review, approve, reject and mark paid; each
partner reads its own statement and reconciles its day through the signed API. The bodies and
answers are in `settlement.schemas`."""

from __future__ import annotations

import io
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from clearinghouse.api.deps import ReportSession, WriteSession, freshness_headers
from clearinghouse.api.schemas import BIGINT_MAX, Day, RowId
from clearinghouse.audit import sealing
from clearinghouse.database import Tx
from clearinghouse.users.deps import FinanceReader, FinanceUser
from partners.directory import ID_PATTERN
from partners.gate import Partner, Reply
from settlement import approval, reconciliation, reports, runs
from settlement.schemas import (
    ApprovalOut,
    ApprovedOut,
    BreakOut,
    BreakPageOut,
    LiabilityOut,
    LineOut,
    MonthOut,
    PaidIn,
    PartnerEntriesOut,
    ReconcileIn,
    ReconciliationOut,
    ReconciliationSummaryOut,
    ReconciliationWebhook,
    RejectIn,
    ResolvedOut,
    RunSummary,
    RunSummaryPage,
    SettlementDetailOut,
    SettlementEventOut,
    SettlementOut,
    SettlementWebhook,
    StatementOut,
)

finance = APIRouter(prefix="/finance", tags=["finance"])
partner = APIRouter(prefix="/v1", tags=["settlement"])
webhooks = APIRouter(tags=["settlement"])
"""What settlement posts to partners' endpoints (docs/webhooks.md): published in the OpenAPI
document's webhooks section, never served."""

BusinessDate = Annotated[Day, Path(description="Business date, in the coalition's time zone.")]
PartnerId = Annotated[str, Path(pattern=ID_PATTERN, description="The partner's id.")]
Month = Annotated[str, Path(pattern=reports.MONTH_PATTERN, description="A month: YYYY-MM.")]


@finance.get("/settlements", summary="Settlement dates with their state and totals, newest first")
def list_settlements(
    session: ReportSession,
    user: FinanceReader,
    before: Annotated[
        Day | None, Query(description="The cursor of the previous page: dates before it.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
) -> RunSummaryPage:
    dates = runs.list_dates(session, limit + 1, before)
    return RunSummaryPage(
        settlements=[
            RunSummary.of(item, runs.open_breaks(session, item.business_date))
            for item in dates[:limit]
        ],
        next=dates[limit - 1].business_date if len(dates) > limit else None,
    )


def _detail(session: Session, business_date: date) -> SettlementDetailOut:
    """The date's live run with its history, approvals and reconciliations."""
    run = runs.load_run(session, business_date)
    return SettlementDetailOut(
        **reports.report_of(session, run),
        history=[
            SettlementEventOut.model_validate(e) for e in runs.history(session, business_date)
        ],
        approvals=[ApprovalOut.model_validate(a) for a in runs.approvals(session, business_date)],
        reconciliations=[
            ReconciliationSummaryOut.model_validate(r)
            for r in reconciliation.for_date(session, business_date)
        ],
        open_breaks=runs.open_breaks(session, business_date),
    )


@finance.get("/settlements/{business_date}", summary="One settlement: lines, totals, history")
def get_settlement(
    business_date: BusinessDate, session: ReportSession, user: FinanceReader
) -> SettlementDetailOut:
    return _detail(session, business_date)


@finance.get(
    "/settlements/{business_date}/report.csv",
    summary="The settlement report as CSV (amounts in fen)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def settlement_csv(
    business_date: BusinessDate, session: ReportSession, user: FinanceReader
) -> Response:
    run = runs.load_run(session, business_date)
    return Response(
        reports.settlement_csv(reports.report_of(session, run)),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="settlement-{business_date}.csv"',
            **freshness_headers(session),
        },
    )


@finance.get(
    "/settlements/months/{month}", summary="A month's runs and each partner's net over them"
)
def settlement_month(month: Month, session: ReportSession, user: FinanceReader) -> MonthOut:
    return MonthOut.model_validate(reports.month_report(session, month))


@finance.get(
    "/settlements/{business_date}/partners/{partner_id}",
    summary="A partner's line and, a page at a time, the entries that make it",
)
def partner_entries(
    business_date: BusinessDate,
    partner_id: PartnerId,
    session: ReportSession,
    user: FinanceReader,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="The cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PartnerEntriesOut:
    run = runs.load_run(session, business_date)
    line = reports.partner_report_line(session, run, partner_id)
    entries, next_cursor = reports.partner_entries(session, run, partner_id, after, limit)
    return PartnerEntriesOut.model_validate(
        {
            "business_date": run.business_date,
            "attempt": run.attempt,
            "state": run.state,
            "line": line,
            "entries": entries,
            "next": next_cursor,
        }
    )


@finance.get(
    "/settlements/{business_date}/partners/{partner_id}/entries.csv",
    summary="A partner's line entry by entry, as CSV (amounts in fen and in yuan)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def partner_entries_csv(
    business_date: BusinessDate, partner_id: PartnerId, session: ReportSession, user: FinanceReader
) -> Response:
    run = runs.load_run(session, business_date)
    reports.partner_report_line(session, run, partner_id)
    entries, _ = reports.partner_entries(session, run, partner_id, None, None)
    return Response(
        reports.entries_csv(run, partner_id, entries),
        media_type="text/csv",
        headers={
            "Content-Disposition": (
                f'attachment; filename="settlement-{business_date}-{partner_id}.csv"'
            ),
            **freshness_headers(session),
        },
    )


@finance.post("/settlements/{business_date}/approve", summary="Approve (four eyes)")
def approve(business_date: BusinessDate, session: WriteSession, user: FinanceUser) -> ApprovedOut:
    _, warnings = approval.approve(session, business_date, user)
    return ApprovedOut(**dict(_detail(session, business_date)), warnings=warnings)


@finance.post("/settlements/{business_date}/reject", summary="Reject; it is computed anew")
def reject(
    business_date: BusinessDate, body: RejectIn, session: WriteSession, user: FinanceUser
) -> SettlementOut:
    run = approval.reject(session, business_date, user, body.reason)
    return SettlementOut.model_validate(reports.report_of(session, run))


@finance.post("/settlements/{business_date}/paid", summary="Record the bank transfer")
def mark_paid(
    business_date: BusinessDate, body: PaidIn, session: WriteSession, user: FinanceUser
) -> SettlementDetailOut:
    approval.mark_paid(session, business_date, user, body.bank_reference)
    return _detail(session, business_date)


@finance.get("/liability", summary="Outstanding points by issuer, breakage, expiring soon")
def liability(session: ReportSession, user: FinanceReader) -> LiabilityOut:
    return LiabilityOut.model_validate(reports.liability_report(session))


@finance.post("/reconciliations/{reconciliation_id}/resolve", summary="Close the breaks")
def resolve(reconciliation_id: RowId, session: WriteSession, user: FinanceUser) -> ResolvedOut:
    return ResolvedOut.model_validate(reconciliation.resolve(session, reconciliation_id))


@partner.get(
    "/settlements/{business_date}",
    summary="The partner's own settlement line",
    response_model=StatementOut,
)
async def statement(business_date: BusinessDate, call: Partner) -> Response:
    def own_line(tx: Tx) -> StatementOut:
        state, line = reports.partner_line(tx.session, business_date, call.partner_id)
        newest = sealing.newest_block(tx.session)
        return StatementOut(
            business_date=business_date,
            state=state,
            line=LineOut.model_validate(line),
            ledger_digest=None if newest is None else newest.block_hash.hex(),
        )

    return await call.answer(own_line)


@partner.post(
    "/reconciliations",
    status_code=status.HTTP_201_CREATED,
    summary="Upload the partner's record of a day; get matches and breaks",
    response_model=ReconciliationOut,
)
async def reconcile(body: ReconcileIn, call: Partner) -> Response:
    file = io.BytesIO(body.csv.encode())
    return await call.answer(
        lambda tx: ReconciliationOut.model_validate(
            reconciliation.reconcile(tx.session, call.partner_id, body.business_date, file)
        )
    )


@partner.post(
    "/reconciliation-files/{business_date}",
    status_code=status.HTTP_201_CREATED,
    summary="Upload the partner's record of a day as a CSV file, the body itself",
    description=(
        "The body is the file itself (`Content-Type: text/csv`), signed like any body; the"
        " answer is that of `POST /v1/reconciliations`."
    ),
    response_model=ReconciliationOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def reconcile_file(business_date: BusinessDate, call: Partner) -> Response:
    return await call.answer(
        lambda tx: ReconciliationOut.model_validate(
            reconciliation.reconcile(
                tx.session, call.partner_id, business_date, call.upload, call.upload_sha256
            )
        )
    )


@partner.get(
    "/reconciliations/{reconciliation_id}",
    summary="A reconciliation's result",
    response_model=ReconciliationOut,
)
async def get_reconciliation(reconciliation_id: RowId, call: Partner) -> Response:
    return await call.answer(
        lambda tx: ReconciliationOut.model_validate(
            reconciliation.get(tx.session, reconciliation_id, call.partner_id)
        )
    )


@partner.get(
    "/reconciliations/{reconciliation_id}/breaks",
    summary="A reconciliation's breaks, a page at a time",
    response_model=BreakPageOut,
)
async def reconciliation_breaks(
    reconciliation_id: RowId,
    call: Partner,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="The cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    def page(tx: Tx) -> BreakPageOut:
        reconciliation.get(tx.session, reconciliation_id, call.partner_id)
        found, next_cursor = reconciliation.breaks(tx.session, reconciliation_id, after, limit)
        return BreakPageOut(breaks=[BreakOut.model_validate(b) for b in found], next=next_cursor)

    return await call.answer(page)


@partner.get(
    "/reconciliations/{reconciliation_id}/file",
    summary="The uploaded file",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def reconciliation_file(reconciliation_id: RowId, call: Partner) -> Response:
    def uploaded(tx: Tx) -> Reply:
        file = reconciliation.uploaded_file(tx.session, reconciliation_id, call.partner_id)
        return Reply(file, media_type="text/csv; charset=utf-8")

    return await call.answer(uploaded)


@webhooks.post("settlement.computed", summary="A run with the partner's line was computed")
def settlement_computed(body: SettlementWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `settlement.computed`."""


@webhooks.post("settlement.approved", summary="A run with the partner's line was approved")
def settlement_approved(body: SettlementWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `settlement.approved`."""


@webhooks.post("settlement.paid", summary="A run with the partner's line was paid")
def settlement_paid(body: SettlementWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `settlement.paid`."""


@webhooks.post("reconciliation.completed", summary="The partner's reconciliation file was matched")
def reconciliation_completed(body: ReconciliationWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `reconciliation.completed`."""
