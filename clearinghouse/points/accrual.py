"""Accrual: a partner reports a purchase, the earning rules compute the points, and one ledger
entry moves them from the partner's issuance account to the member (repaying any points debt
first) together with their issue value against the partner's issuance limit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.members.service import MemberNotFound
from clearinghouse.numbers import fen_half_even
from clearinghouse.points import events, lots, operation, wallet
from clearinghouse.points.referrals import pay_referral_bonus
from clearinghouse.points.schemas import PurchaseIn
from clearinghouse.points.tables import point_lots, purchases
from clearinghouse.rules.earning import Accrual, MemberContext, Purchase, compute_accrual
from clearinghouse.rules.policy import RuleSet, rule_set_at
from clearinghouse.rules.tiers import tier_for
from clearinghouse.settleable import Settleable
from partners import directory, rates
from partners.directory import Store, StoreNotFound
from partners.limits import issuance_legs
from partners.rates import Rates

FUTURE_TOLERANCE = timedelta(minutes=5)


class DuplicateTransaction(Conflict):
    code = "duplicate_transaction"
    title = "Transaction already reported with other details"


@dataclass(frozen=True)
class PurchaseReport:
    partner_txn_id: str
    member_id: str
    amount_fen: int
    occurred_at: datetime
    store_id: str | None = None
    currency: str = "CNY"


def report_of(body: PurchaseIn, store_id: str | None) -> PurchaseReport:
    """The purchase a request body reports, at `store_id` (the store the key acts for)."""
    return PurchaseReport(
        partner_txn_id=body.partner_txn_id,
        member_id=body.member_id,
        amount_fen=body.amount_fen,
        occurred_at=body.occurred_at,
        store_id=store_id,
        currency=body.currency,
    )


@dataclass(frozen=True)
class AccrualResult:
    purchase_id: int
    partner_txn_id: str
    member_id: str
    points: int
    debt_repaid: int
    breakdown: list[dict[str, Any]]
    rules_version: int
    rates_version: int
    issue_value_fen: int
    entry_id: int | None
    lot_expires_at: datetime | None
    tier: str
    review_case_id: str | None = None
    """Set when the points wait, pending, for a risk review."""


def _result(
    row: Any,
    debt_repaid: int,
    lot_expires_at: datetime | None,
    tier: str,
    review_case_id: str | None = None,
) -> AccrualResult:
    return AccrualResult(
        purchase_id=row.id,
        partner_txn_id=row.partner_txn_id,
        member_id=row.member_id,
        points=row.points,
        debt_repaid=debt_repaid,
        breakdown=row.breakdown,
        rules_version=row.rules_version,
        rates_version=row.rates_version,
        issue_value_fen=row.issue_value_fen,
        entry_id=row.entry_id,
        # One form whether computed now or read back on a replay.
        lot_expires_at=lot_expires_at.astimezone(UTC) if lot_expires_at else None,
        tier=tier,
        review_case_id=review_case_id,
    )


def check_reported_time(occurred_at: datetime, now: datetime, rules: RuleSet, what: str) -> None:
    """What a partner reports after the fact (a purchase, an offline redemption: `what`) did
    not happen in the future, nor longer ago than the policy lets it be reported."""
    if occurred_at.tzinfo is None:
        raise InvalidRequest("occurred_at must carry a time zone offset")
    if occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidRequest("occurred_at is in the future")
    if occurred_at < now - timedelta(days=rules.policy.max_backdate_days):
        raise InvalidRequest(
            f"{what} older than {rules.policy.max_backdate_days} days cannot be reported"
        )


def _validate(report: PurchaseReport, now: datetime, rules: RuleSet) -> None:
    if report.currency != "CNY":
        raise InvalidRequest("purchases are reported in CNY (amount in fen)")
    if report.amount_fen <= 0:
        raise InvalidRequest("amount_fen must be above zero")
    check_reported_time(report.occurred_at, now, rules, "purchases")


def _replay(tx: Tx, report: PurchaseReport, purchase_id: int) -> AccrualResult:
    """The first result for a transaction reported again: the same details, or a refusal."""
    session = tx.session
    row = session.execute(select(purchases).where(purchases.c.id == purchase_id)).one()
    same = (
        row.member_id == report.member_id
        and row.amount_fen == report.amount_fen
        and row.occurred_at == report.occurred_at
        and row.store_id == report.store_id
    )
    if not same:
        raise DuplicateTransaction(
            f"transaction {report.partner_txn_id} was already reported with other details"
        )
    lot_expiry = session.execute(
        select(func.min(point_lots.c.expires_at)).where(point_lots.c.entry_id == row.entry_id)
    ).scalar_one_or_none()
    case_id = None if row.entry_id is None else fraud.case_of_entry(session, row.entry_id)
    return _result(
        row, row.debt_repaid, lot_expiry, wallet.current_tier(session, row.member_id), case_id
    )


def _attempt_of(partner_id: str, report: PurchaseReport, points: int) -> fraud.Attempt:
    return fraud.Attempt(
        operation="accrual",
        partner_id=partner_id,
        member_id=report.member_id,
        occurred_at=report.occurred_at,
        points=points,
        amount_fen=report.amount_fen,
        store_id=report.store_id,
    )


@dataclass(frozen=True)
class _Windows:
    """The periods an accrual's figures are summed over, from the purchase's local time."""

    month_start: datetime
    month_end: datetime
    day_start: datetime
    day_end: datetime

    @classmethod
    def of(cls, occurred_at: datetime, zone: ZoneInfo) -> _Windows:
        local = occurred_at.astimezone(zone)
        month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(
            month_start,
            (month_start + timedelta(days=32)).replace(day=1),
            day_start,
            day_start + timedelta(days=1),
        )


_CONTEXT = (
    "SELECT * FROM accrual_context(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    + fraud.GATHERING_PARAMETERS
    + ")"
)
_RECORD = (
    "SELECT * FROM record_purchase("
    + ledger.ENTRY_PARAMETERS
    + ", %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)"
)


def accrue(db: Session | Tx, partner_id: str, report: PurchaseReport) -> AccrualResult:
    """Record a purchase and credit its points. Reporting the same transaction again with the
    same details returns the first result; with other details it is refused.

    Two statements: `accrual_context` locks the member and reads every figure the earning and
    risk rules need; `record_purchase` writes the entry, lot, purchase and tier change."""
    tx = Tx.of(db)
    now = clock.now()
    store, missing_store = directory.store_or_refusal(tx, partner_id, report.store_id)
    return operation.run(
        tx,
        _Report(
            partner_id,
            report,
            now,
            get_settings().zone,
            store,
            missing_store,
            rules=rule_set_at(tx, report.occurred_at),
            rules_now=rule_set_at(tx, now),
        ),
    )


@dataclass(frozen=True)
class _Report:
    """A purchase reported, as `operation.run` takes it."""

    partner_id: str
    report: PurchaseReport
    now: datetime
    zone: ZoneInfo
    store: Store | None
    missing_store: StoreNotFound | None
    rules: RuleSet
    """In force when the purchase was made: it earns under these."""
    rules_now: RuleSet

    @property
    def tier_at(self) -> datetime:
        """The tier at the time of the purchase gives its multiplier; the tier now, with this
        purchase counted, is the one recorded, so a back-dated till roll never writes a change
        that did not happen."""
        return max(self.now, self.report.occurred_at)

    @property
    def tier_from(self) -> datetime:
        return self.tier_at - timedelta(days=self.rules_now.policy.tier_window_days)

    def lock(self, tx: Tx, screening: fraud.Screening) -> Any:
        report = self.report
        windows = _Windows.of(report.occurred_at, self.zone)
        gathering = screening.gathering(_attempt_of(self.partner_id, report, 0), self.store)
        context = tx.one(
            _CONTEXT,
            (
                self.partner_id,
                report.member_id,
                report.partner_txn_id,
                windows.month_start,
                windows.month_end,
                windows.day_start,
                windows.day_end,
                report.occurred_at - timedelta(days=self.rules.policy.tier_window_days),
                report.occurred_at,
                self.tier_from,
                self.tier_at,
                wallet.debt_account(report.member_id),
                *gathering.params(),
            ),
        )
        if not context.linked:
            raise MemberNotFound(f"no member {report.member_id}")
        if self.missing_store is not None:
            raise self.missing_store
        return context

    def replay(self, tx: Tx, context: Any) -> AccrualResult | None:
        return None if context.replay_id is None else _replay(tx, self.report, context.replay_id)

    def plan(self, tx: Tx, context: Any) -> _Earning:
        report = self.report
        _validate(report, self.now, self.rules)
        partner_rates = rates.rates_at(tx, self.partner_id, report.occurred_at)
        accrual = compute_accrual(
            Purchase(
                amount_fen=report.amount_fen,
                occurred_at=report.occurred_at,
                partner_id=self.partner_id,
                store_id=report.store_id,
            ),
            MemberContext(
                tier=tier_for(context.qualifying_then, self.rules.earning).tier,
                month_spend_fen_including_this=context.month_spend_fen + report.amount_fen,
                birthday_month=context.birth_month,
                occurred_month=report.occurred_at.astimezone(self.zone).month,
                first_purchase_at_partner=not context.bought_here,
                points_earned_today_at_partner=context.points_today_here,
            ),
            partner_rates.earn_rate,
            self.rules.earning,
        )
        return _Earning(
            self,
            context,
            partner_rates,
            accrual,
            attempt=_attempt_of(self.partner_id, report, accrual.points),
            history=fraud.History.of(self.store, context.risk),
        )


@dataclass(frozen=True)
class _Earning:
    """What a purchase earns, before the screening says whether it waits for a review."""

    purchase: _Report
    context: Any
    rates: Rates
    accrual: Accrual
    attempt: fraud.Attempt
    history: fraud.History

    def post(self, tx: Tx, decision: fraud.Decision) -> operation.Posted[AccrualResult]:
        purchase, context, partner_rates = self.purchase, self.context, self.rates
        report, partner_id, rules = purchase.report, purchase.partner_id, purchase.rules
        points = self.accrual.points
        value = fen_half_even(partner_rates.issue_price * points)
        # Under review, the points wait in the member's pending account: not spendable, no lot.
        review = decision.action == "review" and points > 0
        member_id = report.member_id
        repaid = 0 if review else min(points, max(-context.debt, 0))
        destination = wallet.pending_account if review else wallet.available_account
        entry: ledger.Arguments = (None,) * 10
        lot_points: int | None = None
        lot_expires_at: datetime | None = None
        if points:
            legs = [
                ledger.Posting(str(ledger.Address.partner(partner_id, "issued")), -points),
                ledger.Posting(destination(member_id), points - repaid),
                ledger.Posting(wallet.debt_account(member_id), repaid),
            ]
            if value:
                legs += issuance_legs(partner_id, value)
            entry = ledger.arguments(
                ledger.Entry(
                    kind="accrual",
                    origin=f"partner:{partner_id}",
                    idempotency_key=f"purchase:{report.partner_txn_id}",
                    postings=[leg for leg in legs if leg.amount],
                    occurred_at=report.occurred_at,
                    metadata={
                        **Settleable(partner_id, value).to_metadata(),
                        "partner_txn_id": report.partner_txn_id,
                        "member_id": member_id,
                        "store_id": report.store_id,
                        "amount_fen": report.amount_fen,
                        "rules_version": rules.version,
                        "rates_version": partner_rates.version,
                        "earn_rate": partner_rates.earn_rate,
                        "issue_price": partner_rates.issue_price,
                    },
                )
            )
            if points - repaid and not review:
                lot_points = points - repaid
                lot_expires_at = lots.expiry_for(
                    report.occurred_at, rules.policy.expiry_months, purchase.zone
                )
        counted = purchase.tier_from < report.occurred_at <= purchase.tier_at
        status = tier_for(
            context.qualifying_now + (points if counted else 0), purchase.rules_now.earning
        )
        changed = status.tier != context.tier
        breakdown = [line.model_dump(mode="json") for line in self.accrual.breakdown]
        written = tx.one(
            _RECORD,
            (
                *entry,
                partner_id,
                report.partner_txn_id,
                member_id,
                report.store_id,
                report.amount_fen,
                report.currency,
                report.occurred_at,
                points,
                rules.version,
                partner_rates.version,
                json.dumps(breakdown),
                value,
                lot_points,
                lot_expires_at,
                context.tier if changed else None,
                status.tier if changed else None,
                status.qualifying_points if changed else None,
                purchase.rules_now.version if changed else None,
            ),
        )
        if points:
            events.earned(
                tx,
                member_id=member_id,
                partner_id=partner_id,
                reason="purchase",
                points=points,
                debt_repaid=repaid,
                pending=review,
                entry_id=written.new_entry_id,
                lot_expires_at=lot_expires_at,
                occurred_at=report.occurred_at,
                partner_txn_id=report.partner_txn_id,
                store_id=report.store_id,
            )
        if changed:
            events.tier_changed(
                tx,
                member_id=member_id,
                from_tier=context.tier,
                to_tier=status.tier,
                qualifying_points=status.qualifying_points,
            )
        if not review and context.referral_pending:
            pay_referral_bonus(tx.session, member_id, rules)
        return operation.Posted(
            lambda case_id: AccrualResult(
                purchase_id=written.new_purchase_id,
                partner_txn_id=report.partner_txn_id,
                member_id=member_id,
                points=points,
                debt_repaid=repaid,
                breakdown=breakdown,
                rules_version=rules.version,
                rates_version=partner_rates.version,
                issue_value_fen=value,
                entry_id=written.new_entry_id,
                lot_expires_at=lot_expires_at.astimezone(UTC) if lot_expires_at else None,
                tier=status.tier,
                review_case_id=case_id,
            ),
            entry_id=written.new_entry_id,
        )
