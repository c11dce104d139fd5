"""The settlement API's request bodies and answers: the finance routes' settlements (listed, in
detail, approved, rejected, paid), the liability and a reconciliation resolved; a partner's own
statement, and its reconciliations with their breaks. Each answer reads the settlement domain's
objects (`settlement.runs`, `settlement.reconciliation`) by their attributes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from clearinghouse.api.schemas import JsonDay, RequestBody, ResponseModel
from clearinghouse.numbers import PlainDecimal
from clearinghouse.webhooks.schemas import WebhookBody
from settlement.runs import FailedDate, Run


def _resolved(resolved_at: datetime | None) -> bool:
    return resolved_at is not None


Resolved = Annotated[bool, BeforeValidator(_resolved)]
"""Whether a reconciliation's breaks are resolved, read from when they were (`resolved_at`)."""


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
    computed_early: bool = Field(
        False, description="The run was computed before its cut-off had passed."
    )
    error: str | None = Field(None, description="A failed date's last error.")
    failed_tries: int = Field(0, description="How many tries of a failed date's run failed.")
    retry_at: datetime | None = Field(None, description="When the job tries a failed date again.")

    @classmethod
    def of(cls, item: Run | FailedDate, open_breaks: int) -> RunSummary:
        """A date's run, or its failed tries, with the reconciliation breaks open for it."""
        if isinstance(item, FailedDate):
            return cls(
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
        return cls(
            business_date=item.business_date,
            state=item.state,
            attempt=item.attempt,
            entries=item.entries,
            partners_net_fen=item.partners_net_fen,
            coalition_fen=item.coalition_fen,
            open_breaks=open_breaks,
            computed_early=item.computed_early,
        )


class RunSummaryPage(ResponseModel):
    settlements: list[RunSummary]
    next: date | None = Field(description="The cursor of the next page (`before`), if any.")


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
    catalogue_points: int
    catalogue_fen: int
    catalogue_returned_points: int
    catalogue_returned_fen: int
    net_fen: int


class ReportLineOut(LineOut):
    """A partner's line in a settlement report, with the partner's legal name."""

    legal_name: str = Field(description="The partner's legal name, as its papers print it.")


class SettledEntryOut(ResponseModel):
    """One entry of a partner's line, as the line counts it, with the rates that valued it."""

    entry_id: int
    kind: str
    category: str = Field(description="The line's category it falls in (docs/settlement.md).")
    partner_txn_id: str | None = Field(description="The partner's transaction id, if it has one.")
    points: int
    value_fen: int
    net_fen: int = Field(
        description="Its part in the partner's net: its value with its category's sign."
    )
    rates_version: int | None = Field(
        description=(
            "The partner's rates version that valued it: the one the entry recorded (a refund:"
            " its purchase's), else the one in force when it occurred; null if none was."
        )
    )
    issue_price: PlainDecimal | None = Field(description="That version's fen per point issued.")
    redemption_value: PlainDecimal | None = Field(
        description="That version's fen per point redeemed."
    )
    occurred_at: datetime
    recorded_at: datetime


class PartnerEntriesOut(ResponseModel):
    """A partner's line of a settlement and, a page at a time, the entries that make it."""

    business_date: date
    attempt: int
    state: str
    line: ReportLineOut
    entries: list[SettledEntryOut] = Field(description="In the order of their ids.")
    next: int | None = Field(description="The cursor of the next page (`after`), if any.")


class MonthRunOut(ResponseModel):
    business_date: date
    state: str
    attempt: int
    entries: int
    partners_pay_fen: int
    partners_receive_fen: int
    coalition_fen: int


class MonthPartnerOut(ResponseModel):
    partner_id: str
    legal_name: str
    days: int = Field(description="The month's runs in which the partner has a line.")
    net_fen: int = Field(description="Its nets summed over the month's runs (negative: receives).")


class MonthOut(ResponseModel):
    """A month's live runs and each partner's net over them."""

    month: str = Field(description="YYYY-MM.")
    previous: str = Field(description="The month before, YYYY-MM.")
    following: str = Field(description="The month after, YYYY-MM.")
    runs: list[MonthRunOut] = Field(description="By business date.")
    partners: list[MonthPartnerOut]
    partners_pay_fen: int = Field(description="What partners with a positive month's net pay.")
    partners_receive_fen: int = Field(description="What partners with a negative one receive.")
    coalition_fen: int = Field(description="The coalition's revenue over the month's runs.")


class SettlementWebhookData(ResponseModel):
    """What a `settlement.*` event tells one partner of a run."""

    business_date: date
    state: str = Field(description="The run's state: `computed`, `approved` or `paid`.")
    attempt: int = Field(description="The run's attempt for its date (a rejected run's next).")
    bank_reference: str | None = Field(description="The payment's reference, once paid.")
    pays_fen: int = Field(description="What the partner pays the coalition, in fen (or 0).")
    receives_fen: int = Field(description="What the partner receives, in fen (or 0).")
    line: LineOut


class SettlementWebhook(WebhookBody):
    """The body of a `settlement.computed`, `settlement.approved` or `settlement.paid` webhook,
    signed the Standard Webhooks way (docs/webhooks.md)."""

    type: Literal["settlement.computed", "settlement.approved", "settlement.paid"]
    data: SettlementWebhookData


class LateArrivalOut(ResponseModel):
    """An entry settled in this run that occurred on an earlier business date: reported late.
    Its points and value are in its partner's line already."""

    partner_id: str
    entry_id: int
    partner_txn_id: str | None = Field(description="The partner's transaction id, if it has one.")
    kind: str
    points: int
    value_fen: int
    occurred_date: date = Field(description="The business date the entry occurred on.")
    recorded_at: datetime = Field(description="When it was recorded: before the run's cut-off.")


class SettlementOut(ResponseModel):
    business_date: date = Field(
        description="The business date settled: the entries recorded on it, before its cut-off."
    )
    attempt: int
    cutoff: datetime
    computed_at: datetime
    computed_early: bool = Field(
        description=(
            "Computed before its cut-off had passed (refused since): entries recorded on its "
            "date after it are settled in a later date's run."
        )
    )
    state: str
    bank_reference: str | None
    entries: int
    lines: list[ReportLineOut]
    totals: dict[str, int] = Field(description="Each line column summed over the partners.")
    partners_pay_fen: int
    partners_receive_fen: int
    coalition_fen: int
    zero_sum: bool
    late_arrivals: list[LateArrivalOut] = Field(
        description=(
            "The run's entries that occurred on an earlier business date than the one settled "
            "(settlement groups entries by the date they were recorded on; these show the date "
            "they occurred on). They are counted in the lines and totals already."
        )
    )


class SettlementEventOut(ResponseModel):
    attempt: int
    from_state: str | None = Field(serialization_alias="from")
    to_state: str = Field(serialization_alias="to")
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
    breaks: int = Field(validation_alias="break_count")
    resolved: Resolved = Field(validation_alias="resolved_at")


class SettlementDetailOut(SettlementOut):
    history: list[SettlementEventOut]
    approvals: list[ApprovalOut]
    reconciliations: list[ReconciliationSummaryOut]
    open_breaks: int


class ApprovedOut(SettlementDetailOut):
    warnings: list[str]


class RejectIn(RequestBody):
    reason: str = Field(min_length=1, max_length=500)


class PaidIn(RequestBody):
    bank_reference: str = Field(min_length=1, max_length=100)


class IssuerLiabilityOut(ResponseModel):
    issuer: str = Field(description="The issuing partner, or `coalition` for its own bonuses.")
    points: int
    value_fen: int | None = Field(description="None when the issuer has no rates.")


class LiabilityOut(ResponseModel):
    """The points the coalition still owes, by line; `total_points` = `available_points` +
    `held_points` + `pending_review_points` - `owed_points` = `issued_points` -
    `redeemed_points` - `expired_points`."""

    as_of: datetime
    outstanding: list[IssuerLiabilityOut] = Field(
        description="Points available to members, in lots not expired, by issuer."
    )
    available_points: int = Field(description="The sum of `outstanding`.")
    held_points: int = Field(description="Points reserved by open redemption holds.")
    pending_review_points: int = Field(
        description="Points earned but waiting for a risk review, not yet spendable."
    )
    owed_points: int = Field(
        description="Points members owe (after refunds of points spent, or offline redemptions "
        "beyond their points), which their next earnings repay."
    )
    total_points: int = Field(description="What the coalition still owes members, in points.")
    total_value_fen: int = Field(
        description="The redemption value of `outstanding` (held and pending points not valued)."
    )
    issued_points: int = Field(
        description="Points issued by partners and the coalition, net of refunds and reversals."
    )
    redeemed_points: int = Field(
        description="Points spent: redeemed at partners (the catalogue too), exchange fees and "
        "rounding, net of redemption refunds."
    )
    expired_points: int = Field(description="`breakage_points` + `lapsed_points`.")
    breakage_points: int = Field(description="Expired points moved to coalition:breakage.")
    lapsed_points: int = Field(
        description="Points in lots past their expiry that the expiry job has not moved yet."
    )
    expiring_points: dict[str, int] = Field(
        description="Points expiring within 30, 60 and 90 days: `30_days`, `60_days`, `90_days`."
    )


class ResolvedOut(ResponseModel):
    id: int
    resolved_at: datetime | None


class StatementOut(ResponseModel):
    business_date: date
    state: str
    line: LineOut
    ledger_digest: str | None = Field(
        description="The newest sealed block's hash: keep it to verify the journal later."
    )


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
    breaks: int = Field(
        validation_alias="break_count",
        description="How many breaks: read them at `.../breaks`, a page at a time.",
    )
    resolved: Resolved = Field(validation_alias="resolved_at")


class BreakOut(ResponseModel):
    """A line of either side not matched exactly; `ours` and `theirs` are [amount_fen, points],
    null on the side without the line."""

    type: str
    txn_id: str
    kind: str = Field(
        serialization_alias="break",
        description=(
            "`missing_ours`, `missing_theirs`, `amount_differs`, `points_differ` or `duplicate`"
            " (a later line of the file with the type and txn_id of an earlier one; `ours` is"
            " null)."
        ),
    )
    ours: list[int] | None
    theirs: list[int] | None


class BreakPageOut(ResponseModel):
    breaks: list[BreakOut] = Field(description="In the order of (type, txn_id), by code point.")
    next: int | None = Field(description="The cursor of the next page (`after`), if any.")


class BreakCounts(ResponseModel):
    """A reconciliation's breaks by kind."""

    missing_ours: int = Field(description="Lines of the file we have no record of.")
    missing_theirs: int = Field(description="Our records of the day missing from the file.")
    amount_differs: int = Field(description="Lines on both sides whose amount_fen differs.")
    points_differ: int = Field(description="Lines on both sides whose points differ (only).")
    duplicate: int = Field(
        description="Later lines of the file with the type and txn_id of an earlier one."
    )


class ReconciliationWebhookData(ResponseModel):
    """What a `reconciliation.completed` event tells the partner of its file reconciled."""

    reconciliation_id: int = Field(description="Read it at `/v1/reconciliations/{id}`.")
    business_date: date
    uploaded_at: datetime
    lines: int = Field(description="The file's lines, its header left out.")
    matched: int = Field(description="Lines matched exactly by our records.")
    breaks: int = Field(description="How many breaks: read them at `.../breaks`.")
    breaks_by_kind: BreakCounts


class ReconciliationWebhook(WebhookBody):
    """The body of a `reconciliation.completed` webhook, signed the Standard Webhooks way
    (docs/webhooks.md)."""

    type: Literal["reconciliation.completed"]
    data: ReconciliationWebhookData
