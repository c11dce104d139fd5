"""The steps of every points operation a partner asks for that fraud screens (an accrual, a
purchase's refund, a hold, an exchange), defined once: `run(tx, operation)` takes them in this
order, and each operation supplies only its own parts (an `Operation`, and the `Plan` it makes):

1. `lock`: one statement takes the member's lock (the lock order of every member write), looks
   for an earlier attempt with the same partner transaction or key, and gathers what the risk
   rules read of the past (`screening.gathering`); the checks a retry must meet too follow it.
2. `replay`: an earlier attempt's answer is given again, and nothing else is done.
3. `plan`: the operation's own rules compute what it moves, and the attempt to screen.
4. The screening (`fraud.service.screen`): a block is raised, with its case; a review goes on.
5. `post`: the ledger entry with what it is for, written under the decision (a review may hold
   points back), and what follows it. The partner's issuance-limit headroom is a ledger account
   that may not go negative, so an entry that would issue beyond it is refused by the statement
   that writes it: that refusal is raised as `IssuanceLimitExceeded`.
6. A review opens its case on what was posted: the entry, or the hold.
7. The answer, given the case's id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from clearinghouse import ledger
from clearinghouse.database import Tx
from clearinghouse.fraud import service as fraud
from partners.directory import headroom_account

Context = TypeVar("Context")
Answer = TypeVar("Answer")
Answer_co = TypeVar("Answer_co", covariant=True)


class IssuanceLimitExceeded(ledger.LedgerError):
    code = "issuance_limit_exceeded"
    status = 422
    title = "Issuance limit exceeded"


@contextmanager
def within_issuance_limit(partner_id: str | None, what: str) -> Iterator[None]:
    """The ledger's refusal to take issue value from `partner_id`'s headroom, raised as
    `IssuanceLimitExceeded` saying that `what` would exceed the limit; any other refusal as it
    is. With no partner (the coalition issues), every refusal is as it is."""
    try:
        yield
    except ledger.InsufficientFunds as exc:
        if partner_id is None or exc.account != headroom_account(partner_id):
            raise
        raise IssuanceLimitExceeded(
            f"{what} would exceed partner {partner_id}'s issuance limit"
        ) from exc


@dataclass(frozen=True)
class Posted(Generic[Answer_co]):
    """What an operation wrote: what a review case holds back (its entry, or its hold), and its
    answer once the case, if one was opened, has its id."""

    answer: Callable[[str | None], Answer_co]
    entry_id: int | None = None
    hold_id: str | None = None


class Plan(Protocol[Answer_co]):
    """What an operation moves, computed under the member's lock before it is screened."""

    @property
    def attempt(self) -> fraud.Attempt: ...

    @property
    def history(self) -> fraud.History:
        """What the risk rules know of the attempt's past (gathered by `lock`)."""
        ...

    def post(self, tx: Tx, decision: fraud.Decision) -> Posted[Answer_co]:
        """Write the entry (none when nothing moves) with what it is for, and what follows."""
        ...


class Operation(Protocol[Context, Answer_co]):
    """An operation as `run` takes it: the request, and what was read before the lock."""

    @property
    def partner_id(self) -> str: ...

    def lock(self, tx: Tx, screening: fraud.Screening) -> Context:
        """One statement: the member locked, an earlier attempt looked for, the risk rules'
        inputs gathered (with `screening.gathering`). Then the checks a retry must meet too."""
        ...

    def replay(self, tx: Tx, context: Context) -> Answer_co | None:
        """The earlier attempt's answer, or None when there was none."""
        ...

    def plan(self, tx: Tx, context: Context) -> Plan[Answer_co]: ...


def run(tx: Tx, operation: Operation[Context, Answer]) -> Answer:
    """Take the operation's steps, in the order above, in the caller's transaction."""
    screening = fraud.screening(tx, operation.partner_id)
    context = operation.lock(tx, screening)
    earlier = operation.replay(tx, context)
    if earlier is not None:
        return earlier
    plan = operation.plan(tx, context)
    decision = fraud.screen(screening, plan.attempt, plan.history)
    what = f"the {plan.attempt.operation} of {plan.attempt.points} points"
    with (
        within_issuance_limit(operation.partner_id, what),
        ledger.refused_as_domain_errors(),
    ):
        posted = plan.post(tx, decision)
    case_id = None
    # Nothing posted (no points moved): nothing to hold back, so no case.
    if decision.action == "review" and (posted.entry_id is not None or posted.hold_id is not None):
        case_id = fraud.open_case(
            tx.session, plan.attempt, decision, entry_id=posted.entry_id, hold_id=posted.hold_id
        )
    return posted.answer(case_id)
