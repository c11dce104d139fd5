"""Accrual: a partner reports a purchase, the earning rules compute the points, and one ledger
entry moves them from the partner's issuance account to the member (repaying any points debt
first) together with their issue value against the partner's issuance limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import Conflict, InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.tables import fraud_cases
from clearinghouse.members.service import linked_member
from clearinghouse.numbers import money
from clearinghouse.points import lots, wallet
from clearinghouse.points.policy import RuleSet, rule_set_at
from clearinghouse.points.referrals import pay_referral_bonus
from clearinghouse.points.tables import point_lots, purchases
from clearinghouse.rules.earning import MemberContext, Purchase, compute_accrual
from partners import directory, rates
from partners.directory import exposure_account, headroom_account

FUTURE_TOLERANCE = timedelta(minutes=5)


class DuplicateTransaction(Conflict):
    code = "duplicate_transaction"
    title = "Transaction already reported with other details"


class IssuanceLimitExceeded(ledger.LedgerError):
    code = "issuance_limit_exceeded"
    status = 422
    title = "Issuance limit exceeded"


@dataclass(frozen=True)
class PurchaseReport:
    partner_txn_id: str
    member_id: str
    amount_fen: int
    occurred_at: datetime
    store_id: str | None = None
    currency: str = "CNY"


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
    row: Row[tuple[object, ...]],
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


def _validate(report: PurchaseReport, now: datetime, rules: RuleSet) -> None:
    if report.currency != "CNY":
        raise InvalidRequest("purchases are reported in CNY (amount in fen)")
    if report.amount_fen <= 0:
        raise InvalidRequest("amount_fen must be above zero")
    if report.occurred_at.tzinfo is None:
        raise InvalidRequest("occurred_at must carry a time zone offset")
    if report.occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidRequest("occurred_at is in the future")
    if report.occurred_at < now - timedelta(days=rules.policy.max_backdate_days):
        raise InvalidRequest(
            f"purchases older than {rules.policy.max_backdate_days} days cannot be reported"
        )


def _member_context(
    session: Session,
    partner_id: str,
    member: wallet.MemberRow,
    report: PurchaseReport,
    tier: str,
) -> MemberContext:
    zone = get_settings().zone
    local = report.occurred_at.astimezone(zone)
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = purchases.c.member_id == member.id
    month_spend = session.execute(
        select(func.coalesce(func.sum(purchases.c.amount_fen - purchases.c.refunded_fen), 0)).where(
            mine, purchases.c.occurred_at >= month_start, purchases.c.occurred_at < next_month
        )
    ).scalar_one()
    at_partner = mine & (purchases.c.partner_id == partner_id)
    earlier_here = session.execute(select(func.count()).where(at_partner)).scalar_one()
    today_here = session.execute(
        select(func.coalesce(func.sum(purchases.c.points), 0)).where(
            at_partner,
            purchases.c.occurred_at >= day_start,
            purchases.c.occurred_at < day_start + timedelta(days=1),
        )
    ).scalar_one()
    return MemberContext(
        tier=tier,
        month_spend_fen_including_this=int(month_spend) + report.amount_fen,
        birthday_month=member.birth_month,
        occurred_month=local.month,
        first_purchase_at_partner=earlier_here == 0,
        points_earned_today_at_partner=int(today_here),
    )


def _replay(session: Session, partner_id: str, report: PurchaseReport) -> AccrualResult | None:
    row = session.execute(
        select(purchases).where(
            purchases.c.partner_id == partner_id,
            purchases.c.partner_txn_id == report.partner_txn_id,
        )
    ).first()
    if row is None:
        return None
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
    debt_repaid = 0
    if row.entry_id is not None:
        debt = wallet.debt_account(row.member_id)
        debt_repaid = sum(
            p.amount for p in ledger.entry_postings(session, row.entry_id) if p.address == debt
        )
    case_id = None
    if row.entry_id is not None:
        case_id = session.execute(
            select(fraud_cases.c.id).where(fraud_cases.c.entry_id == row.entry_id)
        ).scalar_one_or_none()
    return _result(
        row, debt_repaid, lot_expiry, wallet.current_tier(session, row.member_id), case_id
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


def accrue(session: Session, partner_id: str, report: PurchaseReport) -> AccrualResult:
    """Record a purchase and credit its points. Reporting the same transaction again with the
    same details returns the first result; with other details it is refused."""
    linked_member(session, partner_id, report.member_id)
    if report.store_id is not None:
        directory.get_store(session, partner_id, report.store_id)
    member = wallet.lock_member(session, report.member_id)
    replay = _replay(session, partner_id, report)
    if replay is not None:
        return replay
    now = datetime.now(UTC)
    rules = rule_set_at(session, report.occurred_at)
    _validate(report, now, rules)
    partner_rates = rates.rates_at(session, partner_id, report.occurred_at)
    # The tier at the time of the purchase gives its multiplier; only the present is recorded,
    # so a back-dated till roll never writes a change that did not happen.
    tier = wallet.tier_status(session, member.id, report.occurred_at, rules).tier
    context = _member_context(session, partner_id, member, report, tier)
    accrual = compute_accrual(
        Purchase(
            amount_fen=report.amount_fen,
            occurred_at=report.occurred_at,
            partner_id=partner_id,
            store_id=report.store_id,
        ),
        context,
        partner_rates.earn_rate,
        rules.earning,
    )
    points = accrual.points
    value = money(partner_rates.issue_price * points)
    decision = fraud.screen(session, _attempt_of(partner_id, report, points))
    # Under review, the points wait in the member's pending account: not spendable, no lot.
    review = decision.action == "review" and points > 0
    owed = -ledger.balance(session, wallet.debt_account(member.id))
    repaid = 0 if review else min(points, max(owed, 0))
    destination = wallet.pending_account if review else wallet.available_account
    entry_id: int | None = None
    lot_expires_at: datetime | None = None
    if points:
        legs = [
            ledger.Posting(str(ledger.Address.partner(partner_id, "issued")), -points),
            ledger.Posting(destination(member.id), points - repaid),
            ledger.Posting(wallet.debt_account(member.id), repaid),
        ]
        if value:
            legs += [
                ledger.Posting(headroom_account(partner_id), -value, "CNY"),
                ledger.Posting(exposure_account(partner_id), value, "CNY"),
            ]
        try:
            posted = ledger.post(
                session,
                ledger.Entry(
                    kind="accrual",
                    origin=f"partner:{partner_id}",
                    idempotency_key=f"purchase:{report.partner_txn_id}",
                    postings=[leg for leg in legs if leg.amount],
                    occurred_at=report.occurred_at,
                    metadata={
                        "partner_id": partner_id,
                        "value_fen": value,
                        "partner_txn_id": report.partner_txn_id,
                        "member_id": member.id,
                        "store_id": report.store_id,
                        "amount_fen": report.amount_fen,
                        "rules_version": rules.version,
                        "rates_version": partner_rates.version,
                        "earn_rate": partner_rates.earn_rate,
                        "issue_price": partner_rates.issue_price,
                    },
                ),
            )
        except ledger.InsufficientFunds as exc:
            if exc.account == headroom_account(partner_id):
                raise IssuanceLimitExceeded(
                    f"issuing {points} points ({value} fen) would exceed partner "
                    f"{partner_id}'s issuance limit"
                ) from exc
            raise
        entry_id = posted.id
        if points - repaid and not review:
            lot_expires_at = lots.expiry_for(
                report.occurred_at, rules.policy.expiry_months, get_settings().zone
            )
            lots.create_lot(
                session,
                member_id=member.id,
                source="purchase",
                issuer_partner_id=partner_id,
                entry_id=posted.id,
                earned_at=report.occurred_at,
                expires_at=lot_expires_at,
                amount=points - repaid,
            )
    row = session.execute(
        purchases.insert()
        .values(
            partner_id=partner_id,
            partner_txn_id=report.partner_txn_id,
            member_id=member.id,
            store_id=report.store_id,
            amount_fen=report.amount_fen,
            currency=report.currency,
            occurred_at=report.occurred_at,
            points=points,
            entry_id=entry_id,
            rules_version=rules.version,
            rates_version=partner_rates.version,
            breakdown=[line.model_dump(mode="json") for line in accrual.breakdown],
            issue_value_fen=value,
        )
        .returning(purchases)
    ).one()
    status = wallet.update_tier(
        session, member.id, max(now, report.occurred_at), rule_set_at(session, now)
    )
    if not review:
        pay_referral_bonus(session, member.id, rules)
    case_id = None
    if review:
        case_id = fraud.open_case(
            session, _attempt_of(partner_id, report, points), decision, entry_id=entry_id
        )
    return _result(row, repaid, lot_expires_at, status.tier, case_id)
