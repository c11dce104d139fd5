"""Screening a points movement against the rules, recording every decision as a case, and the
operators' review of the cases that need a person."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, DomainError, InvalidRequest, NotFound
from clearinghouse.fraud.rules import (
    GATHERING_PARAMETERS,
    RULES,
    SEVERITY,
    Action,
    Attempt,
    Gathering,
    History,
    Thresholds,
    Verdict,
)
from clearinghouse.fraud.tables import fraud_actions, fraud_cases, fraud_thresholds
from clearinghouse.ids import new_id
from clearinghouse.reference import Reference
from clearinghouse.users.service import User, require_role
from partners.directory import Store

__all__ = [
    "GATHERING_PARAMETERS",
    "Attempt",
    "Decision",
    "FraudBlocked",
    "History",
    "Screening",
    "UnderReview",
    "open_case",
    "screen",
    "screening",
]


class FraudBlocked(DomainError):
    code = "fraud_blocked"
    status = 403
    title = "Refused by risk control"

    def __init__(self, case: dict[str, Any], reason: str) -> None:
        super().__init__(f"refused by risk control: {reason}", case_id=case["id"])
        self.case_id: str = case["id"]
        self.case = case

    def keep(self, tx: Tx) -> None:
        """The blocked attempt stays on record as a case, although nothing else of it does."""
        tx.session.execute(fraud_cases.insert().values(**self.case))


class CaseNotFound(NotFound):
    code = "case_not_found"
    title = "Unknown case"


class UnderReview(Conflict):
    code = "under_review"
    title = "Waiting for a risk review"

    def __init__(self, detail: str, *, case_id: str) -> None:
        super().__init__(detail, case_id=case_id)


@dataclass(frozen=True)
class Decision:
    action: Action
    verdicts: list[Verdict]
    versions: dict[str, int]

    def reasons(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self.verdicts]


@dataclass(frozen=True)
class _Version:
    version: int
    effective_from: datetime
    settings: dict[str, Any]


def _load_thresholds(tx: Tx) -> dict[str | None, list[_Version]]:
    """Each scope's versions (None: the coalition's), newest first."""
    book: dict[str | None, list[_Version]] = {}
    for row in tx.all("SELECT * FROM fraud_thresholds ORDER BY version DESC"):
        book.setdefault(row.partner_id, []).append(
            _Version(row.version, row.effective_from, row.settings)
        )
    return book


_threshold_book: Reference[dict[str | None, list[_Version]]] = Reference(
    ("fraud_thresholds",), _load_thresholds
)


@functools.lru_cache(maxsize=256)
def _validated(settings: str) -> Thresholds:
    return Thresholds.model_validate_json(settings)


def thresholds_for(
    db: Session | Tx, partner_id: str, at: datetime
) -> tuple[Thresholds, dict[str, int]]:
    """The coalition defaults in effect, overridden by the partner's own version, if any."""
    book = _threshold_book.get(Tx.of(db))
    settings: dict[str, Any] = {}
    versions: dict[str, int] = {}
    for scope in (None, partner_id):
        found = next((v for v in book.get(scope, []) if v.effective_from <= at), None)
        if found is not None:
            settings |= found.settings
            versions["coalition" if scope is None else scope] = found.version
    return _validated(json.dumps(settings, sort_keys=True)), versions


@dataclass(frozen=True)
class Screening:
    """The thresholds in force for a partner's attempts, and their versions."""

    thresholds: Thresholds
    versions: dict[str, int]

    def gathering(self, attempt: Attempt, store: Store | None) -> Gathering:
        return Gathering.of(attempt, self.thresholds, store)


def screening(db: Session | Tx, partner_id: str) -> Screening:
    return Screening(*thresholds_for(db, partner_id, clock.now()))


def gather(tx: Tx, gathering: Gathering) -> dict[str, Any]:
    """The rules' inputs for an attempt, read now (for operations without a statement of their
    own that gathers them)."""
    gathered: dict[str, Any] = tx.scalar(
        "SELECT risk_history(" + GATHERING_PARAMETERS + ")", gathering.params()
    )
    return gathered


def evaluate(screening: Screening, attempt: Attempt, history: History) -> Decision:
    thresholds = screening.thresholds
    verdicts = [v for rule in RULES if (v := rule(attempt, thresholds, history)) is not None]
    verdicts = [v for v in verdicts if v.action != "allow"]
    action: Action = max((v.action for v in verdicts), key=SEVERITY.__getitem__, default="allow")
    return Decision(action, verdicts, screening.versions)


def _new_id() -> str:
    return new_id("C", 15)


def _case_values(attempt: Attempt, decision: Decision, state: str) -> dict[str, Any]:
    return {
        "id": _new_id(),
        "partner_id": attempt.partner_id,
        "member_id": attempt.member_id,
        "operation": attempt.operation,
        "decision": decision.action,
        "state": state,
        "verdicts": {"rules": decision.reasons(), "versions": decision.versions},
        "attempt": {
            **asdict(attempt),
            "occurred_at": attempt.occurred_at.isoformat(),
        },
    }


def screen(screening: Screening, attempt: Attempt, history: History) -> Decision:
    """Run the rules. A block is raised, carrying its case: the request is rolled back, so
    nothing is posted, and the case is recorded with the refusal (`FraudBlocked.keep`); a
    review is returned for the caller to hold the points back and open a case with
    `open_case`. An offline attempt (`Attempt.offline`) is never refused: its block is
    returned as a review."""
    decision = evaluate(screening, attempt, history)
    if decision.action == "block" and attempt.offline:
        # Carried out at the till already: there is nothing left to refuse, only to look at.
        return replace(decision, action="review")
    if decision.action == "block":
        values = _case_values(attempt, decision, "blocked")
        raise FraudBlocked(values, "; ".join(v.reason for v in decision.verdicts))
    return decision


def open_case(
    session: Session,
    attempt: Attempt,
    decision: Decision,
    *,
    entry_id: int | None = None,
    hold_id: str | None = None,
) -> str:
    values = _case_values(attempt, decision, "open")
    session.execute(fraud_cases.insert().values(**values, entry_id=entry_id, hold_id=hold_id))
    return str(values["id"])


@dataclass(frozen=True)
class Case:
    id: str
    partner_id: str
    member_id: str | None
    operation: str
    decision: str
    state: str
    verdicts: dict[str, Any]
    attempt: dict[str, Any]
    entry_id: int | None
    hold_id: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None


def case_of_entry(session: Session, entry_id: int) -> str | None:
    """The id of the case opened on the entry, if one was."""
    case_id: str | None = session.execute(
        select(fraud_cases.c.id).where(fraud_cases.c.entry_id == entry_id)
    ).scalar_one_or_none()
    return case_id


def held_back_accruals() -> Select[tuple[int]]:
    """The entries of accruals whose points a case holds back (open) or took back (rejected),
    for another domain's query to leave out."""
    return select(fraud_cases.c.entry_id).where(
        fraud_cases.c.operation == "accrual",
        fraud_cases.c.state.in_(("open", "rejected")),
        fraud_cases.c.entry_id.is_not(None),
    )


def get_case(session: Session, case_id: str, partner_id: str | None = None) -> Case:
    query = select(fraud_cases).where(fraud_cases.c.id == case_id)
    if partner_id is not None:
        query = query.where(fraud_cases.c.partner_id == partner_id)
    row = session.execute(query).first()
    if row is None:
        raise CaseNotFound(f"no case {case_id}")
    return Case(**row._asdict())


def list_cases(session: Session, state: str | None = "open", limit: int = 100) -> list[Case]:
    query = select(fraud_cases).order_by(fraud_cases.c.created_at).limit(limit)
    if state is not None:
        query = query.where(fraud_cases.c.state == state)
    return [Case(**row._asdict()) for row in session.execute(query)]


def case_actions(session: Session, case_id: str) -> list[dict[str, Any]]:
    """What operators did on the case, in order."""
    return [
        {"action": r.action, "user": r.user_id, "note": r.note, "at": r.at}
        for r in session.execute(
            select(fraud_actions)
            .where(fraud_actions.c.case_id == case_id)
            .order_by(fraud_actions.c.id)
        )
    ]


@dataclass(frozen=True)
class ReviewedCase(Case):
    """A case with what operators did on it, in order."""

    actions: list[dict[str, Any]]


def with_actions(session: Session, case: Case) -> ReviewedCase:
    return ReviewedCase(**asdict(case), actions=case_actions(session, case.id))


def decide(
    session: Session,
    case_id: str,
    user: User,
    state: Literal["approved", "rejected"],
    note: str | None,
) -> Any:
    """Record an operator's decision on an open case (locked), and return the case as it was.
    What the decision releases or reverses is the points' to do (clearinghouse.points.review)."""
    require_role(user, "operator")
    row = session.execute(
        select(fraud_cases).where(fraud_cases.c.id == case_id).with_for_update()
    ).first()
    if row is None:
        raise CaseNotFound(f"no case {case_id}")
    if row.state != "open":
        raise Conflict(f"case {case_id} is {row.state}")
    session.execute(
        update(fraud_cases)
        .where(fraud_cases.c.id == case_id)
        .values(state=state, decided_at=func.now(), decided_by=user.id)
    )
    session.execute(
        fraud_actions.insert().values(case_id=case_id, action=state, user_id=user.id, note=note)
    )
    return row


def publish_thresholds(session: Session, partner_id: str | None, settings: dict[str, Any]) -> int:
    """A new version of the thresholds for a partner (or the coalition's defaults)."""
    try:
        Thresholds.model_validate(settings)
    except ValueError as exc:
        raise InvalidRequest(f"invalid thresholds: {exc}") from exc
    latest = session.execute(
        select(func.max(fraud_thresholds.c.version)).where(
            fraud_thresholds.c.partner_id.is_(None)
            if partner_id is None
            else fraud_thresholds.c.partner_id == partner_id
        )
    ).scalar_one()
    version = (latest or 0) + 1
    session.execute(
        fraud_thresholds.insert().values(
            partner_id=partner_id,
            version=version,
            effective_from=clock.now(),
            settings=settings,
        )
    )
    return version
