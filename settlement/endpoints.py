"""Settlement routes: finance staff (bearer token) review, approve, reject and mark paid; each
partner reads its own statement and reconciles its day through the signed API."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import Field
from sqlalchemy.orm import Session

from clearinghouse.api.deps import ReadSession, WriteSession
from clearinghouse.api.schemas import BIGINT_MAX, Day, JsonDay, RequestBody, ResponseModel, RowId
from clearinghouse.audit import sealing
from clearinghouse.database import Tx
from clearinghouse.users.deps import FinanceUser
from partners.gate import Partner, Reply
from settlement import approval, reconciliation, reports, runs

finance = APIRouter(prefix="/finance", tags=["finance"])
partner = APIRouter(prefix="/v1", tags=["settlement"])

BusinessDate = Annotated[Day, Path(description="Business date, in the coalition's time zone.")]


class RunSummary(ResponseModel):
    business_date: date
    state: str = Field(
        description="computed, approved or paid; failed: the date's run failed (no totals)."
    )
    attempt: int
    entries: int
    partners_net_fen: int
    coalition_fen: int
    open_breaks: int
    error: str | None = Field(None, description="A failed date's last error.")
    failed_tries: int = Field(0, description="How many tries of a failed date's run failed.")
    retry_at: datetime | None = Field(None, description="When the job tries a failed date again.")


def _summary(session: Session, item: runs.Run | runs.FailedDate) -> RunSummary:
    open_breaks = runs.open_breaks(session, item.business_date)
    if isinstance(item, runs.FailedDate):
        return RunSummary(
            business_date=item.business_date,
            state=item.state,
            attempt=item.attempt,
            entries=0,
            partners_net_fen=0,
            coalition_fen=0,
            open_breaks=open_breaks,
            error=item.error,
            failed_tries=item.tries,
            retry_at=item.retry_at,
        )
    return RunSummary(
        business_date=item.business_date,
        state=item.state,
        attempt=item.attempt,
        entries=item.entries,
        partners_net_fen=item.partners_net_fen,
        coalition_fen=item.coalition_fen,
        open_breaks=open_breaks,
    )


class RunSummaryPage(ResponseModel):
    settlements: list[RunSummary]
    next: date | None = Field(description="The cursor of the next page (`before`), if any.")


@finance.get("/settlements", summary="Settlement dates with their state and totals, newest first")
def list_settlements(
    session: ReadSession,
    user: FinanceUser,
    before: Annotated[
        Day | None, Query(description="The cursor of the previous page: dates before it.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
) -> RunSummaryPage:
    dates = runs.list_dates(session, limit + 1, before)
    return RunSummaryPage(
        settlements=[_summary(session, item) for item in dates[:limit]],
        next=dates[limit - 1].business_date if len(dates) > limit else None,
    )


class LineOut(ResponseModel):
    """A partner's side of a settlement: points and fen by category; net_fen is what it pays
    the coalition (negative: what it receives)."""

    partner_id: str
    issued_points: int
    issued_fen: int
    reversed_points: int
    reversed_fen: int
    redeemed_points: int
    redeemed_fen: int
    redemption_refunded_points: int
    redemption_refunded_fen: int
    exchange_in_points: int
    exchange_in_fen: int
    exchange_out_points: int
    exchange_out_fen: int
    net_fen: int


class SettlementOut(ResponseModel):
    business_date: date
    attempt: int
    cutoff: datetime
    state: str
    bank_reference: str | None
    entries: int
    lines: list[LineOut]
    totals: dict[str, int] = Field(description="Each line column summed over the partners.")
    partners_pay_fen: int
    partners_receive_fen: int
    coalition_fen: int
    zero_sum: bool


class SettlementEventOut(ResponseModel):
    attempt: int
    from_state: str | None = Field(alias="from")
    to_state: str = Field(alias="to")
    user: str | None
    note: str | None
    at: datetime


class ApprovalOut(ResponseModel):
    user: str
    at: datetime


class ReconciliationSummaryOut(ResponseModel):
    id: int
    partner_id: str
    matched: int
    breaks: int
    resolved: bool


class SettlementDetailOut(SettlementOut):
    history: list[SettlementEventOut]
    approvals: list[ApprovalOut]
    reconciliations: list[ReconciliationSummaryOut]
    open_breaks: int


class ApprovedOut(SettlementDetailOut):
    warnings: list[str]


def _detail(session: Session, business_date: date) -> dict[str, Any]:
    run = runs.load_run(session, business_date)
    return {
        **reports.settlement_report(run),
        "history": runs.history(session, business_date),
        "approvals": runs.approvals(session, business_date),
        "reconciliations": [
            {
                "id": r.id,
                "partner_id": r.partner_id,
                "matched": r.matched,
                "breaks": r.break_count,
                "resolved": r.resolved_at is not None,
            }
            for r in reconciliation.for_date(session, business_date)
        ],
        "open_breaks": runs.open_breaks(session, business_date),
    }


@finance.get("/settlements/{business_date}", summary="One settlement: lines, totals, history")
def get_settlement(
    business_date: BusinessDate, session: ReadSession, user: FinanceUser
) -> SettlementDetailOut:
    return SettlementDetailOut.model_validate(_detail(session, business_date))


@finance.get(
    "/settlements/{business_date}/report.csv",
    summary="The settlement report as CSV (amounts in fen)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def settlement_csv(
    business_date: BusinessDate, session: ReadSession, user: FinanceUser
) -> Response:
    run = runs.load_run(session, business_date)
    return Response(
        reports.settlement_csv(run),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="settlement-{business_date}.csv"'},
    )


@finance.post("/settlements/{business_date}/approve", summary="Approve (four eyes)")
def approve(business_date: BusinessDate, session: WriteSession, user: FinanceUser) -> ApprovedOut:
    _, warnings = approval.approve(session, business_date, user)
    return ApprovedOut.model_validate({**_detail(session, business_date), "warnings": warnings})


class RejectIn(RequestBody):
    reason: str = Field(min_length=1, max_length=500)


@finance.post("/settlements/{business_date}/reject", summary="Reject; it is computed anew")
def reject(
    business_date: BusinessDate, body: RejectIn, session: WriteSession, user: FinanceUser
) -> SettlementOut:
    run = approval.reject(session, business_date, user, body.reason)
    return SettlementOut.model_validate(reports.settlement_report(run))


class PaidIn(RequestBody):
    bank_reference: str = Field(min_length=1, max_length=100)


@finance.post("/settlements/{business_date}/paid", summary="Record the bank transfer")
def mark_paid(
    business_date: BusinessDate, body: PaidIn, session: WriteSession, user: FinanceUser
) -> SettlementDetailOut:
    approval.mark_paid(session, business_date, user, body.bank_reference)
    return SettlementDetailOut.model_validate(_detail(session, business_date))


class IssuerLiabilityOut(ResponseModel):
    issuer: str = Field(description="The issuing partner, or `coalition` for its own bonuses.")
    points: int
    value_fen: int | None = Field(description="None when the issuer has no rates.")


class LiabilityOut(ResponseModel):
    as_of: datetime
    outstanding: list[IssuerLiabilityOut]
    total_points: int
    total_value_fen: int
    breakage_points: int
    expiring_points: dict[str, int] = Field(
        description="Points expiring within 30, 60 and 90 days: `30_days`, `60_days`, `90_days`."
    )


@finance.get("/liability", summary="Outstanding points by issuer, breakage, expiring soon")
def liability(session: ReadSession, user: FinanceUser) -> LiabilityOut:
    return LiabilityOut.model_validate(reports.liability_report(session))


class ResolvedOut(ResponseModel):
    id: int
    resolved_at: datetime | None


@finance.post("/reconciliations/{reconciliation_id}/resolve", summary="Close the breaks")
def resolve(reconciliation_id: RowId, session: WriteSession, user: FinanceUser) -> ResolvedOut:
    return ResolvedOut.model_validate(reconciliation.resolve(session, reconciliation_id))


class StatementOut(ResponseModel):
    business_date: date
    state: str
    line: LineOut
    ledger_digest: str | None = Field(
        description="The newest sealed block's hash: keep it to verify the journal later."
    )


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


class ReconcileIn(RequestBody):
    business_date: JsonDay
    csv: str = Field(
        min_length=1,
        max_length=900_000,
        description="The partner's record of the day: txn_id,type,amount_fen,points",
    )


class ReconciliationOut(ResponseModel):
    id: int
    business_date: date
    uploaded_at: datetime
    lines: int = Field(description="The file's lines, its header left out.")
    matched: int
    breaks: int = Field(description="How many breaks: read them at `.../breaks`, a page at a time.")
    resolved: bool


def _out(r: reconciliation.Reconciliation) -> ReconciliationOut:
    return ReconciliationOut(
        id=r.id,
        business_date=r.business_date,
        uploaded_at=r.uploaded_at,
        lines=r.lines,
        matched=r.matched,
        breaks=r.break_count,
        resolved=r.resolved_at is not None,
    )


class BreakOut(ResponseModel):
    """A line of either side not matched exactly; `ours` and `theirs` are [amount_fen, points],
    null on the side without the line."""

    type: str
    txn_id: str
    kind: str = Field(
        alias="break",
        description="`missing_ours`, `missing_theirs`, `amount_differs` or `points_differ`.",
    )
    ours: list[int] | None
    theirs: list[int] | None


class BreakPageOut(ResponseModel):
    breaks: list[BreakOut] = Field(description="In the order of (type, txn_id), by code point.")
    next: int | None = Field(description="The cursor of the next page (`after`), if any.")


@partner.post(
    "/reconciliations",
    status_code=status.HTTP_201_CREATED,
    summary="Upload the partner's record of a day; get matches and breaks",
    response_model=ReconciliationOut,
)
async def reconcile(body: ReconcileIn, call: Partner) -> Response:
    file = io.BytesIO(body.csv.encode())
    return await call.answer(
        lambda tx: _out(
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
        lambda tx: _out(
            reconciliation.reconcile(tx.session, call.partner_id, business_date, call.upload)
        )
    )


@partner.get(
    "/reconciliations/{reconciliation_id}",
    summary="A reconciliation's result",
    response_model=ReconciliationOut,
)
async def get_reconciliation(reconciliation_id: RowId, call: Partner) -> Response:
    return await call.answer(
        lambda tx: _out(reconciliation.get(tx.session, reconciliation_id, call.partner_id))
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
