"""The approval of a computed run, its state machine: `computed` -> `approved` (four eyes: two
different people with the role `finance` or `approver`) -> `paid` (each partner's payable
cleared against the coalition's bank account, with the bank reference), or `rejected` (its
settlement entry reversed and its entries awaiting settlement again, so that the next run of the
date computes it anew). Every change is recorded in the run's history. A run computed before
its date's cut-off (which the day boundary refuses now; such runs exist from before it) is
neither approved nor paid until that cut-off has passed (`DayNotOver`); it may be rejected."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import Conflict
from clearinghouse.users.service import User, require_role
from settlement.events import announce
from settlement.netting import cutoff
from settlement.runs import (
    CLEARING,
    Run,
    SettlementNotFound,
    load_run,
    open_breaks,
    record_event,
    run_of,
)
from settlement.schedule import refuse_open
from settlement.tables import settlement_approvals, settlement_runs

BANK = "coalition:bank"
APPROVERS_NEEDED = 2


class FourEyes(Conflict):
    code = "four_eyes"
    title = "A second, different person must approve"


class WrongState(Conflict):
    code = "settlement_state"
    title = "Not allowed in the settlement's state"


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


def _refuse_before_cutoff(row: Any, action: str) -> None:
    """Refuse (`DayNotOver`) a run computed early, while its date is not over. A run computed at
    or after its cut-off is of a date that was over by the clock then."""
    if row.computed_at < row.cutoff:
        refuse_open(row.business_date, action)


def _set_state(
    session: Session, row: Any, after: str, user: User | None, note: str, **values: Any
) -> None:
    session.execute(
        update(settlement_runs).where(settlement_runs.c.id == row.id).values(state=after, **values)
    )
    record_event(session, row.id, row.state, after, user, note)


def warnings(session: Session, run: Run) -> list[str]:
    """What an approver is warned of before approving the run, and told again with the answer:
    reconciliation breaks open for its date, and a run computed before its cut-off."""
    found = []
    breaks = open_breaks(session, run.business_date)
    if breaks:
        found.append(f"{breaks} reconciliation breaks are open for this date")
    if run.computed_early:
        zone = get_settings().zone
        found.append(
            f"computed early, at {run.computed_at.astimezone(zone).isoformat()}, before its"
            f" cut-off, {run.cutoff.astimezone(zone).isoformat()}: entries recorded on this"
            " date after it are settled in a later date's run"
        )
    return found


def approve(session: Session, business_date: date, user: User) -> tuple[Run, list[str]]:
    """Record the user's approval; the second approval by another person approves the run.
    Returns the run and its `warnings`. A run computed early is refused while its date is not
    over (`DayNotOver`)."""
    require_role(user, "finance", "approver")
    row = _lock_run(session, business_date, ("computed",))
    _refuse_before_cutoff(row, "approved")
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
    if len(done) + 1 < APPROVERS_NEEDED:
        record_event(session, row.id, "computed", "computed", user, "first approval")
        run = load_run(session, business_date)
        return run, warnings(session, run)
    _set_state(session, row, "approved", user, "second approval")
    run = load_run(session, business_date)
    announce(session, run, "settlement.approved")
    return run, warnings(session, run)


def reject(session: Session, business_date: date, user: User, reason: str) -> Run:
    """Reject a computed or approved run: its payables are reversed and its entries become
    unsettled again, held for the date's next attempt, which computes them anew; no run of
    another date takes them. The issuance limit it freed stays freed (the partner may already
    have used it); the next run does not free it twice."""
    require_role(user, "finance", "approver")
    row = _lock_run(session, business_date, ("computed", "approved"))
    _set_state(session, row, "rejected", user, reason)
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
    # Its entries await settlement again, as they were recorded, their issue value freed, held
    # for the date's next attempt: no run of another date takes them.
    session.execute(
        text(
            "INSERT INTO unsettled_entries (entry_id, recorded_at, held_for)"
            " SELECT e.id, e.recorded_at, :business_date FROM settlement_items AS i"
            " JOIN journal_entries AS e ON e.id = i.entry_id WHERE i.run_id = :run"
        ),
        {"run": row.id, "business_date": business_date},
    )
    rejected = session.execute(select(settlement_runs).where(settlement_runs.c.id == row.id)).one()
    return run_of(session, rejected)


def mark_paid(session: Session, business_date: date, user: User, bank_reference: str) -> Run:
    """Record that the approved run's money moved: each partner's payable is cleared against
    the coalition's bank account. A run computed early is refused while its date is not over
    (`DayNotOver`)."""
    require_role(user, "finance", "approver")
    if not bank_reference.strip():
        raise WrongState("a bank reference is required")
    row = _lock_run(session, business_date, ("approved",))
    _refuse_before_cutoff(row, "paid")
    _set_state(session, row, "paid", user, bank_reference, bank_reference=bank_reference.strip())
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
                occurred_at=clock.now().astimezone(get_settings().zone),
                metadata={"business_date": business_date.isoformat(), "bank": bank_reference},
            ),
        )
    announce(session, run, "settlement.paid")
    return run
