"""Daily settlement: for a business date in the coalition's time zone, every settleable entry
recorded before that date's cut-off and not yet settled is valued at the amount recorded on the
entry itself, netted per partner into one amount payable to (positive) or receivable from
(negative) the clearing house, and posted as CNY ledger entries.

Exactly once: runs are serialised by an advisory lock; a date has at most one live run (a
unique index is the run key); re-running a settled date returns it unchanged; missed dates are
settled in order first; each date is computed in one transaction, so a failure leaves nothing.
An entry recorded after its date was settled falls into the next open date."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import Conflict, DomainError, NotFound
from clearinghouse.ledger.tables import accounts, journal_entries, postings
from clearinghouse.points import lots
from clearinghouse.users.service import User, require_role
from partners.directory import exposure_account, headroom_account
from settlement.tables import (
    reconciliations,
    settlement_approvals,
    settlement_events,
    settlement_items,
    settlement_lines,
    settlement_runs,
)

log = logging.getLogger(__name__)

CLEARING = "coalition:clearing"
BANK = "coalition:bank"
APPROVERS_NEEDED = 2

# What each kind of entry is, for the partner named on it, and the sign of its value in the
# partner's net (positive: the partner pays).
CATEGORIES: dict[str, tuple[str, int]] = {
    "accrual": ("issued", 1),
    "referral_bonus": ("issued", 1),
    "refund": ("reversed", -1),
    "fraud_reversal": ("reversed", -1),
    "capture": ("redeemed", -1),
    "redemption_refund": ("redemption_refunded", 1),
    "exchange_in": ("exchange_in", 1),
    "exchange_out": ("exchange_out", -1),
}
# The partner account whose posting gives an entry's points.
POINTS_ACCOUNT = {
    "issued": "issued",
    "reversed": "issued",
    "exchange_in": "issued",
    "redeemed": "redeemed",
    "redemption_refunded": "redeemed",
    "exchange_out": "redeemed",
}


class SettlementNotFound(NotFound):
    code = "settlement_not_found"
    title = "No settlement for that date"


class FourEyes(Conflict):
    code = "four_eyes"
    title = "A second, different person must approve"


class WrongState(Conflict):
    code = "settlement_state"
    title = "Not allowed in the settlement's state"


class SelfCheckFailed(DomainError):
    code = "self_check_failed"
    status = 500
    title = "Ledger self-check failed"


@dataclass
class Line:
    partner_id: str
    issued_points: int = 0
    issued_fen: int = 0
    reversed_points: int = 0
    reversed_fen: int = 0
    redeemed_points: int = 0
    redeemed_fen: int = 0
    redemption_refunded_points: int = 0
    redemption_refunded_fen: int = 0
    exchange_in_points: int = 0
    exchange_in_fen: int = 0
    exchange_out_points: int = 0
    exchange_out_fen: int = 0

    @property
    def net_fen(self) -> int:
        return (
            self.issued_fen
            - self.reversed_fen
            - self.redeemed_fen
            + self.redemption_refunded_fen
            + self.exchange_in_fen
            - self.exchange_out_fen
        )

    def add(self, category: str, points: int, fen: int) -> None:
        setattr(self, f"{category}_points", getattr(self, f"{category}_points") + points)
        setattr(self, f"{category}_fen", getattr(self, f"{category}_fen") + fen)


@dataclass
class Run:
    id: int
    business_date: date
    attempt: int
    cutoff: datetime
    state: str
    bank_reference: str | None
    entries: int
    lines: list[Line] = field(default_factory=list)

    @property
    def partners_net_fen(self) -> int:
        return sum(line.net_fen for line in self.lines)

    @property
    def partners_pay_fen(self) -> int:
        """What the partners with a positive net pay the coalition."""
        return sum(max(line.net_fen, 0) for line in self.lines)

    @property
    def partners_receive_fen(self) -> int:
        """What the coalition pays the partners with a negative net."""
        return sum(-min(line.net_fen, 0) for line in self.lines)

    clearing_fen: int = 0
    """The coalition's leg of the posted settlement entry (what it receives, negated)."""

    @property
    def coalition_fen(self) -> int:
        """The coalition's revenue for the day (spread, fees): what it keeps, as posted."""
        return -self.clearing_fen

    @property
    def zero_sum(self) -> bool:
        """The partners' nets and the coalition's revenue, as posted, cancel to the fen."""
        return self.partners_net_fen - self.coalition_fen == 0


def cutoff(business_date: date) -> datetime:
    """The end of the business date in the coalition's time zone."""
    return datetime.combine(business_date + timedelta(days=1), time(0), get_settings().zone)


def business_date_of(instant: datetime) -> date:
    return instant.astimezone(get_settings().zone).date()


_live_run = and_(
    settlement_items.c.run_id == settlement_runs.c.id, settlement_runs.c.state != "rejected"
)


def _unsettled(before: datetime) -> Any:
    return (
        select(journal_entries.c.id, journal_entries.c.kind, journal_entries.c.metadata)
        .where(
            journal_entries.c.recorded_at < before,
            journal_entries.c.kind.in_(CATEGORIES),
            journal_entries.c.metadata.has_key("value_fen"),
            journal_entries.c.metadata.has_key("partner_id"),
            ~exists().where(settlement_items.c.entry_id == journal_entries.c.id).where(_live_run),
        )
        .order_by(journal_entries.c.id)
    )


def _entry_points(session: Session, entry_ids: list[int]) -> dict[tuple[int, str], int]:
    """Per entry, the partner accounts' postings: (entry id, address) -> amount."""
    if not entry_ids:
        return {}
    rows = session.execute(
        select(postings.c.entry_id, accounts.c.address, postings.c.amount)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id.in_(entry_ids), accounts.c.owner_type == "partner")
    )
    return {(r.entry_id, r.address): r.amount for r in rows}


def compute_lines(
    session: Session, entries: Sequence[Any], freed: frozenset[int] = frozenset()
) -> tuple[list[Line], dict[str, int]]:
    """Lines per partner, and per partner the issue value to give back to its headroom (less
    that of the `freed` entries, whose limit an earlier, rejected run already gave back)."""
    amounts = _entry_points(session, [e.id for e in entries])
    lines: dict[str, Line] = {}
    restored: dict[str, int] = defaultdict(int)
    for entry in entries:
        partner_id = entry.metadata["partner_id"]
        category, _sign = CATEGORIES[entry.kind]
        address = f"partner:{partner_id}:{POINTS_ACCOUNT[category]}"
        points = abs(amounts.get((entry.id, address), 0))
        line = lines.setdefault(partner_id, Line(partner_id))
        line.add(category, points, int(entry.metadata["value_fen"]))
        if entry.id not in freed:
            restored[partner_id] += amounts.get((entry.id, exposure_account(partner_id)), 0)
    return sorted(lines.values(), key=lambda line: line.partner_id), dict(restored)


def _lock(session: Session) -> None:
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("settlement"))))


def _live(session: Session, business_date: date) -> Any:
    return session.execute(
        select(settlement_runs).where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
    ).first()


def _event(
    session: Session, run_id: int, before: str | None, after: str, user: User | None, note: str
) -> None:
    session.execute(
        settlement_events.insert().values(
            run_id=run_id,
            from_state=before,
            to_state=after,
            user_id=user.id if user else None,
            note=note,
        )
    )


def load_run(session: Session, business_date: date) -> Run:
    row = _live(session, business_date)
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    return _run(session, row)


def _run(session: Session, row: Any) -> Run:
    lines = [
        Line(**{k: v for k, v in r._asdict().items() if k not in ("run_id", "net_fen")})
        for r in session.execute(
            select(settlement_lines)
            .where(settlement_lines.c.run_id == row.id)
            .order_by(settlement_lines.c.partner_id)
        )
    ]
    count = session.execute(
        select(func.count()).where(settlement_items.c.run_id == row.id)
    ).scalar_one()
    clearing = 0
    if row.entry_id is not None:
        clearing = sum(
            p.amount for p in ledger.entry_postings(session, row.entry_id) if p.address == CLEARING
        )
    return Run(
        row.id,
        row.business_date,
        row.attempt,
        row.cutoff,
        row.state,
        row.bank_reference,
        count,
        lines,
        clearing,
    )


def _first_open_date(session: Session) -> date | None:
    last = session.execute(
        select(func.max(settlement_runs.c.business_date)).where(
            settlement_runs.c.state != "rejected"
        )
    ).scalar_one()
    if last is not None:
        return last + timedelta(days=1)  # type: ignore[no-any-return]
    oldest = session.execute(
        select(func.min(journal_entries.c.recorded_at)).where(
            journal_entries.c.kind.in_(CATEGORIES)
        )
    ).scalar_one()
    return None if oldest is None else business_date_of(oldest)


def _compute(session: Session, business_date: date) -> Run:
    cut = cutoff(business_date)
    entries = session.execute(_unsettled(cut)).all()
    freed = frozenset(
        session.execute(
            select(settlement_items.c.entry_id)
            .join(settlement_runs, settlement_runs.c.id == settlement_items.c.run_id)
            .where(
                settlement_runs.c.state == "rejected",
                settlement_items.c.entry_id.in_([e.id for e in entries]),
            )
        ).scalars()
    )
    lines, restored = compute_lines(session, entries, freed)
    attempt = (
        1
        + session.execute(
            select(func.count()).where(settlement_runs.c.business_date == business_date)
        ).scalar_one()
    )
    run_id = session.execute(
        settlement_runs.insert()
        .values(business_date=business_date, attempt=attempt, cutoff=cut, state="computed")
        .returning(settlement_runs.c.id)
    ).scalar_one()
    if entries:
        session.execute(
            settlement_items.insert(), [{"entry_id": e.id, "run_id": run_id} for e in entries]
        )
    if lines:
        session.execute(
            settlement_lines.insert(),
            [{"run_id": run_id, **asdict(line), "net_fen": line.net_fen} for line in lines],
        )
    entry_id = _post(session, business_date, attempt, lines, restored)
    session.execute(
        update(settlement_runs).where(settlement_runs.c.id == run_id).values(entry_id=entry_id)
    )
    _event(session, run_id, None, "computed", None, f"{len(entries)} entries")
    run = _run(
        session,
        session.execute(select(settlement_runs).where(settlement_runs.c.id == run_id)).one(),
    )
    self_check(session, run)
    log.info(
        "settlement computed",
        extra={"date": business_date.isoformat(), "entries": len(entries), "run": run_id},
    )
    return run


def _post(
    session: Session,
    business_date: date,
    attempt: int,
    lines: list[Line],
    restored: dict[str, int],
) -> int | None:
    """One CNY entry: each partner's net to its payable account against the clearing account,
    and the settled issue value back from exposure to headroom."""
    legs: list[ledger.Posting] = []
    for line in lines:
        payable = str(ledger.Address.partner(line.partner_id, "payable"))
        ledger.open_accounts(session, [ledger.AccountSpec(payable, "CNY", shards=1)])
        legs += [
            ledger.Posting(payable, line.net_fen, "CNY"),
            ledger.Posting(CLEARING, -line.net_fen, "CNY"),
        ]
    for partner_id, value in restored.items():
        legs += [
            ledger.Posting(exposure_account(partner_id), -value, "CNY"),
            ledger.Posting(headroom_account(partner_id), value, "CNY"),
        ]
    legs = [leg for leg in legs if leg.amount]
    if not legs:
        return None
    posted = ledger.post(
        session,
        ledger.Entry(
            kind="settlement",
            origin="job:settlement",
            idempotency_key=f"{business_date.isoformat()}:{attempt}",
            postings=legs,
            occurred_at=cutoff(business_date),
            metadata={"business_date": business_date.isoformat(), "attempt": attempt},
        ),
    )
    return posted.id


def self_check(session: Session, run: Run) -> None:
    """Balances equal postings, lots equal balances, and the run's lines equal the entries it
    covers; raises (so nothing of the run is kept) otherwise."""
    problems: list[str] = []
    mismatches = ledger.check_consistency(session)
    if mismatches:
        problems.append(f"{len(mismatches)} balances differ from their postings")
    lot_mismatches = lots.check_lots(session)
    if lot_mismatches:
        problems.append(f"{len(lot_mismatches)} members' lots differ from their balance")
    covered = session.execute(
        select(journal_entries.c.id, journal_entries.c.kind, journal_entries.c.metadata)
        .join(settlement_items, settlement_items.c.entry_id == journal_entries.c.id)
        .where(settlement_items.c.run_id == run.id)
        .order_by(journal_entries.c.id)
    ).all()
    again, _ = compute_lines(session, covered)
    if [asdict(x) for x in again] != [asdict(x) for x in run.lines]:
        problems.append("the run's lines differ from the entries it covers")
    if not run.zero_sum:
        problems.append("partner nets and the coalition's posted revenue do not cancel")
    if problems:
        log.error("settlement self-check failed", extra={"problems": problems})
        raise SelfCheckFailed("; ".join(problems))


def settle(sessions: sessionmaker[Session], business_date: date) -> list[Run]:
    """Settle `business_date`, after any earlier open dates, in order. A date already settled is
    returned as it is."""
    results: list[Run] = []
    while True:
        with sessions() as session, session.begin():
            _lock(session)
            existing = _live(session, business_date)
            if existing is not None:
                results.append(_run(session, existing))
                return results
            first = _first_open_date(session)
            target = business_date if first is None or first > business_date else first
            results.append(_compute(session, target))
            if target == business_date:
                return results


def _lock_run(session: Session, business_date: date, allowed: tuple[str, ...]) -> Any:
    """The date's live run, locked, provided it is in one of the `allowed` states."""
    row = session.execute(
        select(settlement_runs)
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
        .with_for_update()
    ).first()
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    if row.state not in allowed:
        raise WrongState(f"the settlement of {business_date.isoformat()} is {row.state}")
    return row


def _set_state(
    session: Session, row: Any, after: str, user: User | None, note: str, **values: Any
) -> None:
    session.execute(
        update(settlement_runs).where(settlement_runs.c.id == row.id).values(state=after, **values)
    )
    _event(session, row.id, row.state, after, user, note)


def _transition(
    session: Session,
    business_date: date,
    allowed: tuple[str, ...],
    after: str,
    user: User | None,
    note: str,
    **values: Any,
) -> Any:
    row = _lock_run(session, business_date, allowed)
    _set_state(session, row, after, user, note, **values)
    return row


def open_breaks(session: Session, business_date: date) -> int:
    count = session.execute(
        select(func.coalesce(func.sum(reconciliations.c.break_count), 0)).where(
            reconciliations.c.business_date == business_date,
            reconciliations.c.resolved_at.is_(None),
        )
    ).scalar_one()
    return int(count)


def approve(session: Session, business_date: date, user: User) -> tuple[Run, list[str]]:
    """Record the user's approval; the second approval by another person approves the run.
    Returns the run and warnings (open reconciliation breaks)."""
    require_role(user, "finance", "approver")
    row = _lock_run(session, business_date, ("computed",))
    done = (
        session.execute(
            select(settlement_approvals.c.user_id).where(settlement_approvals.c.run_id == row.id)
        )
        .scalars()
        .all()
    )
    if user.id in done:
        raise FourEyes(f"{user.id} has already approved; another person must approve")
    session.execute(settlement_approvals.insert().values(run_id=row.id, user_id=user.id))
    warnings = []
    breaks = open_breaks(session, business_date)
    if breaks:
        warnings.append(f"{breaks} reconciliation breaks are open for this date")
    if len(done) + 1 >= APPROVERS_NEEDED:
        _set_state(session, row, "approved", user, "second approval")
    else:
        _event(session, row.id, "computed", "computed", user, "first approval")
    return load_run(session, business_date), warnings


def reject(session: Session, business_date: date, user: User, reason: str) -> Run:
    """Reject a computed or approved run: its payables are reversed and its entries become
    unsettled again, to be computed anew. The issuance limit it freed stays freed (the partner
    may already have used it); the next run does not free it twice."""
    require_role(user, "finance", "approver")
    row = _transition(session, business_date, ("computed", "approved"), "rejected", user, reason)
    reversal = [
        ledger.Posting(p.address, -p.amount, p.asset)
        for p in (ledger.entry_postings(session, row.entry_id) if row.entry_id else [])
        if p.address == CLEARING or p.address.endswith(":payable")
    ]
    if reversal:
        ledger.post(
            session,
            ledger.Entry(
                kind="settlement_reversal",
                origin="job:settlement",
                idempotency_key=f"reject:{row.id}",
                postings=reversal,
                occurred_at=cutoff(business_date),
                metadata={"business_date": business_date.isoformat(), "reason": reason},
                reverses=row.entry_id,
            ),
        )
    rejected = session.execute(select(settlement_runs).where(settlement_runs.c.id == row.id)).one()
    return _run(session, rejected)


def mark_paid(session: Session, business_date: date, user: User, bank_reference: str) -> Run:
    """Record that the approved run's money moved: each partner's payable is cleared against
    the coalition's bank account."""
    require_role(user, "finance", "approver")
    if not bank_reference.strip():
        raise WrongState("a bank reference is required")
    row = _transition(
        session,
        business_date,
        ("approved",),
        "paid",
        user,
        bank_reference,
        bank_reference=bank_reference.strip(),
    )
    run = load_run(session, business_date)
    legs: list[ledger.Posting] = []
    for line in run.lines:
        payable = str(ledger.Address.partner(line.partner_id, "payable"))
        legs += [
            ledger.Posting(payable, -line.net_fen, "CNY"),
            ledger.Posting(BANK, line.net_fen, "CNY"),
        ]
    legs = [leg for leg in legs if leg.amount]
    if legs:
        ledger.post(
            session,
            ledger.Entry(
                kind="settlement_payment",
                origin="job:settlement",
                idempotency_key=f"paid:{row.id}",
                postings=legs,
                occurred_at=datetime.now(get_settings().zone),
                metadata={"business_date": business_date.isoformat(), "bank": bank_reference},
            ),
        )
    return run


def history(session: Session, business_date: date) -> list[dict[str, Any]]:
    rows = session.execute(
        select(settlement_events, settlement_runs.c.attempt)
        .join(settlement_runs, settlement_runs.c.id == settlement_events.c.run_id)
        .where(settlement_runs.c.business_date == business_date)
        .order_by(settlement_events.c.id)
    )
    return [
        {
            "attempt": r.attempt,
            "from": r.from_state,
            "to": r.to_state,
            "user": r.user_id,
            "note": r.note,
            "at": r.at,
        }
        for r in rows
    ]


def approvals(session: Session, business_date: date) -> list[dict[str, Any]]:
    rows = session.execute(
        select(settlement_approvals.c.user_id, settlement_approvals.c.at)
        .join(settlement_runs, settlement_runs.c.id == settlement_approvals.c.run_id)
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
        .order_by(settlement_approvals.c.at)
    )
    return [{"user": r.user_id, "at": r.at} for r in rows]


def list_runs(session: Session, limit: int = 60, before: date | None = None) -> list[Run]:
    """The live runs, newest date first; only those before the date `before`, if given."""
    query = select(settlement_runs).where(settlement_runs.c.state != "rejected")
    if before is not None:
        query = query.where(settlement_runs.c.business_date < before)
    rows = session.execute(
        query.order_by(settlement_runs.c.business_date.desc()).limit(limit)
    ).all()
    return [_run(session, row) for row in rows]


def settle_due(sessions: sessionmaker[Session]) -> list[Run]:
    """Settle yesterday (coalition time) and any open date before it; the server runs this
    every few minutes, so a date is settled soon after its cut-off. Safe to repeat."""
    yesterday = datetime.now(get_settings().zone).date() - timedelta(days=1)
    return settle(sessions, yesterday)
