"""Redemption, points as cash (seed 001/002: 100 points = 1 yuan, usable from 100 points):
hold (reserve) -> capture (all or part) or void; holds left open expire. The redeeming
partner's `redeemed` account is credited at capture. Points leave the member's lots, oldest
expiry first, when they are held; what is not captured goes back to the same lots."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.fraud import service as fraud
from clearinghouse.ids import new_id
from clearinghouse.numbers import fen_half_even
from clearinghouse.points import events, operation, wallet
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.settleable import Settleable
from partners import directory, rates
from partners.auth import PARTNER_WIDE, KeyScope
from partners.directory import Store
from partners.rates import Rates


class HoldNotFound(NotFound):
    code = "hold_not_found"
    title = "Unknown hold"


class HoldClosed(Conflict):
    code = "hold_closed"
    title = "The hold is no longer open"


@dataclass(frozen=True)
class Hold:
    id: str
    partner_id: str
    member_id: str
    store_id: str | None
    partner_ref: str | None
    amount: int
    captured: int
    refunded: int
    state: str
    value_fen: int
    rates_version: int
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None
    review_case_id: str | None
    """The open risk case the hold waits for, if any (capture answers 409 until it is decided)."""


def _hold(row: Any, review_case_id: str | None) -> Hold:
    values = row._asdict()
    for internal in ("hold_entry_id", "close_entry_id", "open_case_id", "purpose"):
        values.pop(internal, None)
    return Hold(**values, review_case_id=review_case_id)


def _value(points: int, redemption_value: Decimal) -> int:
    return fen_half_even(redemption_value * points)


_RECORD = (
    "SELECT * FROM record_hold("
    + ledger.ENTRY_PARAMETERS
    + ", %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_FOR_UPDATE = "SELECT * FROM hold_for_update(%s, %s)"
_CLOSE = "SELECT * FROM close_hold(" + ledger.ENTRY_PARAMETERS + ", %s, %s, %s, %s, %s, %s)"
_OPEN_CASE = (
    "(SELECT c.id FROM fraud_cases c WHERE c.hold_id = h.id AND c.state = 'open') AS open_case_id"
)


@dataclass(frozen=True)
class _Placed:
    row: Any
    review_case_id: str | None


@dataclass(frozen=True)
class _HoldRequest:
    """A hold asked for, as `operation.run` takes it: operation_context locks the member and
    reads what the risk rules need, record_hold posts the hold, takes its points from the lots
    and records it."""

    partner_id: str
    member_id: str
    points: int
    key: str
    store_id: str | None
    partner_ref: str | None
    minutes: int | None
    now: datetime = field(default_factory=clock.now)
    approved_at: datetime | None = None
    """When a till approved the redemption while it was offline (clearinghouse.points.offline):
    the time it happened. None: it happens now."""

    @property
    def entry_key(self) -> str:
        return f"hold:{self.key}"

    @property
    def occurred_at(self) -> datetime:
        return self.now if self.approved_at is None else self.approved_at

    @property
    def attempt(self) -> fraud.Attempt:
        return fraud.Attempt(
            operation="hold" if self.approved_at is None else "redemption",
            partner_id=self.partner_id,
            member_id=self.member_id,
            occurred_at=self.occurred_at,
            points=self.points,
            store_id=self.store_id,
        )

    def lock(self, tx: Tx, screening: fraud.Screening) -> _HoldTerms:
        """The member locked, then what the hold must meet, retried or not."""
        store, missing_store = directory.store_or_refusal(tx, self.partner_id, self.store_id)
        locked = wallet.lock_for_operation(
            tx,
            self.partner_id,
            self.member_id,
            f"partner:{self.partner_id}",
            self.entry_key,
            screening.gathering(self.attempt, store),
        )
        if missing_store is not None:
            raise missing_store
        policy = rule_set_at(tx, self.now).policy
        if self.points < policy.min_redeem_points:
            raise InvalidRequest(f"redemptions start at {policy.min_redeem_points} points")
        ttl = self.minutes if self.minutes is not None else policy.hold_minutes
        if not 1 <= ttl <= 7 * 24 * 60:
            raise InvalidRequest("a hold lasts 1 minute to 7 days")
        return _HoldTerms(self, store, locked, ttl, rates.rates_at(tx, self.partner_id, self.now))

    def replay(self, tx: Tx, terms: _HoldTerms) -> _Placed | None:
        if terms.locked.replay_entry_id is None:
            return None
        # A retry whose first answer was lost: the first hold, whatever the clock says now.
        hold_id = tx.scalar(
            "SELECT id FROM holds WHERE hold_entry_id = %s", (terms.locked.replay_entry_id,)
        )
        earlier = _locked(tx, self.partner_id, hold_id)
        return _Placed(earlier, earlier.open_case_id)

    def plan(self, tx: Tx, terms: _HoldTerms) -> _HoldTerms:
        return terms


@dataclass(frozen=True)
class Overdraw:
    """An offline redemption within its store's offline allowance: applied even where the
    member's available points do not cover it."""

    owed: int
    """The points the available points do not cover: the member's debt account gives them."""
    debt_after: int
    """The member's points debt once they are owed."""


@dataclass(frozen=True)
class _HoldTerms:
    """A hold's terms, read under the member's lock: its plan, as they are all it needs."""

    request: _HoldRequest
    store: Store | None
    locked: wallet.Locked
    minutes: int
    rates: Rates
    overdraw: Overdraw | None = None

    @property
    def attempt(self) -> fraud.Attempt:
        if self.overdraw is None:
            return self.request.attempt
        return replace(self.request.attempt, offline=True, debt_after=self.overdraw.debt_after)

    @property
    def history(self) -> fraud.History:
        return self.locked.history(self.store)

    def post(self, tx: Tx, decision: fraud.Decision) -> operation.Posted[_Placed]:
        """Under review, the points stay reserved; capture waits for an operator's decision."""
        request = self.request
        hold_id = new_id("H", 15)
        owed = 0 if self.overdraw is None else self.overdraw.owed
        legs = [
            ledger.Posting(wallet.available_account(request.member_id), owed - request.points),
            ledger.Posting(wallet.debt_account(request.member_id), -owed),
            ledger.Posting(wallet.held_account(request.member_id), request.points),
        ]
        entry = ledger.Entry(
            kind="hold",
            origin=f"partner:{request.partner_id}",
            idempotency_key=request.entry_key,
            postings=[leg for leg in legs if leg.amount],
            occurred_at=request.occurred_at,
            metadata={
                "member_id": request.member_id,
                "store_id": request.store_id,
                "partner_ref": request.partner_ref,
            },
        )
        row = tx.one(
            _RECORD,
            (
                *ledger.arguments(entry),
                hold_id,
                request.partner_id,
                request.member_id,
                request.store_id,
                request.partner_ref,
                request.points,
                _value(request.points, self.rates.redemption_value),
                self.rates.version,
                request.now + timedelta(minutes=self.minutes),
                request.points - owed,
            ),
        )
        return operation.Posted(partial(_Placed, row), hold_id=hold_id)


def place_hold(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    store_id: str | None = None,
    partner_ref: str | None = None,
    minutes: int | None = None,
) -> Hold:
    """Reserve `points` of the member's available points for a redemption at this partner."""
    placed = operation.run(
        Tx.of(db),
        _HoldRequest(partner_id, member_id, points, key, store_id, partner_ref, minutes),
    )
    return _hold(placed.row, placed.review_case_id)


def _visible(row: Any, hold_id: str, scope: KeyScope) -> Any:
    """The hold's row, if there is one and the key's `scope` sees it (else HoldNotFound)."""
    if row is None or not scope.sees(row.store_id):
        raise HoldNotFound(f"no hold {hold_id}")
    return row


def _locked(tx: Tx, partner_id: str | None, hold_id: str, scope: KeyScope = PARTNER_WIDE) -> Any:
    return _visible(tx.first(_FOR_UPDATE, (partner_id, hold_id)), hold_id, scope)


def lock_hold(
    db: Session | Tx, partner_id: str | None, hold_id: str, scope: KeyScope = PARTNER_WIDE
) -> Any:
    """The hold (with `open_case_id`), with its member locked first and then the hold row (the
    lock order of every member write); a hold the key's `scope` does not see is not found."""
    return _locked(Tx.of(db), partner_id, hold_id, scope)


@dataclass(frozen=True)
class OrderSettlement:
    """Where a reward order's captured points go: its supplier's `redeemed` account, settled
    with the supplier at the order's value (not the redeeming partner's rates)."""

    order_id: str
    supplier_id: str
    value_fen: int


def _close(
    tx: Tx,
    hold: Any,
    captured: int,
    state: str,
    now: datetime,
    order: OrderSettlement | None = None,
) -> Hold:
    """Capture `captured` points of an open hold and give the rest back: to the partner that
    placed it, or to the supplier of the order it is for."""
    member_id, partner_id = hold.member_id, hold.partner_id
    recipient = partner_id if order is None else order.supplier_id
    released = hold.amount - captured
    legs = [ledger.Posting(wallet.held_account(member_id), -hold.amount)]
    if captured:
        legs.append(ledger.Posting(str(ledger.Address.partner(recipient, "redeemed")), captured))
    if released:
        legs.append(ledger.Posting(wallet.available_account(member_id), released))
    if order is None:
        value = _value(
            captured, rates.rates_version(tx, partner_id, hold.rates_version).redemption_value
        )
    else:
        value = order.value_fen if captured else 0
    kind = {"captured": "capture", "voided": "void", "expired": "hold_expiry"}[state]
    metadata: dict[str, object] = {
        **Settleable(recipient, value).to_metadata(),
        "hold_id": hold.id,
        "member_id": member_id,
        "captured": captured,
    }
    if order is None:
        # The rates that valued it, as an accrual records its own (a settlement's drill-down).
        metadata["rates_version"] = hold.rates_version
    else:
        kind = "reward_order" if captured else kind
        metadata["order_id"] = order.order_id
    entry = ledger.Entry(
        kind=kind,
        origin=f"partner:{partner_id}",
        idempotency_key=f"close:{hold.id}",
        postings=legs,
        occurred_at=now,
        metadata=metadata,
    )
    with ledger.refused_as_domain_errors():
        row = tx.one(
            _CLOSE,
            (
                *ledger.arguments(entry),
                hold.id,
                hold.hold_entry_id,
                state,
                captured,
                released,
                value,
            ),
        )
    if captured:
        events.redeemed(
            tx,
            member_id=member_id,
            partner_id=recipient,
            points=captured,
            entry_id=row.close_entry_id,
            hold_id=hold.id,
            partner_ref=hold.partner_ref,
            store_id=hold.store_id,
            value_fen=value,
        )
    return _hold(row, getattr(hold, "open_case_id", None))


def _open(hold: Any, now: datetime) -> None:
    if hold.state != "held":
        raise HoldClosed(f"hold {hold.id} is {hold.state}")
    if hold.expires_at <= now:
        raise HoldClosed(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")


class HoldOfAnOrder(Conflict):
    code = "hold_of_an_order"
    title = "The hold is a reward order's"


def _partners_own(hold: Any) -> None:
    """A hold taken for a reward order is closed by the order alone."""
    if hold.purpose is not None:
        raise HoldOfAnOrder(f"hold {hold.id} is a reward order's: confirm or cancel the order")


def _capture(tx: Tx, hold: Any, points: int | None, order: OrderSettlement | None = None) -> Hold:
    now = clock.now()
    _open(hold, now)
    case_id = getattr(hold, "open_case_id", None)
    if case_id is not None:
        raise fraud.UnderReview(
            f"hold {hold.id} waits for risk review (case {case_id})", case_id=case_id
        )
    amount = hold.amount if points is None else points
    if not 1 <= amount <= hold.amount:
        raise InvalidRequest(f"capture 1 to {hold.amount} points of hold {hold.id}")
    return _close(tx, hold, amount, "captured", now, order)


def capture(
    db: Session | Tx,
    partner_id: str,
    hold_id: str,
    points: int | None = None,
    scope: KeyScope = PARTNER_WIDE,
) -> Hold:
    """Capture all of the hold, or `points` of it (the rest returns to the member)."""
    tx = Tx.of(db)
    hold = _locked(tx, partner_id, hold_id, scope)
    _partners_own(hold)
    return _capture(tx, hold, points)


def void(db: Session | Tx, partner_id: str, hold_id: str, scope: KeyScope = PARTNER_WIDE) -> Hold:
    tx = Tx.of(db)
    hold = _locked(tx, partner_id, hold_id, scope)
    _partners_own(hold)
    return _void(tx, hold)


def _void(tx: Tx, hold: Any) -> Hold:
    if hold.state != "held":
        raise HoldClosed(f"hold {hold.id} is {hold.state}")
    return _close(tx, hold, 0, "voided", clock.now())


def place_order_hold(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    order_id: str,
    store_id: str | None = None,
) -> Hold:
    """Reserve the member's points for a reward order through this partner's front end: a hold
    screened like any other, marked as the order's (`order_id` its reference), which only
    `close_order_hold` closes. The same `key` finds the same hold again."""
    tx = Tx.of(db)
    placed = operation.run(
        tx, _HoldRequest(partner_id, member_id, points, key, store_id, order_id, None)
    )
    tx.execute("UPDATE holds SET purpose = 'reward_order' WHERE id = %s", (placed.row.id,))
    return _hold(placed.row, placed.review_case_id)


def close_order_hold(db: Session | Tx, hold_id: str, order: OrderSettlement | None) -> Hold:
    """Close a reward order's hold: capture all of it to the order's supplier (`order`), or,
    for None, void it (the points go back to the member)."""
    tx = Tx.of(db)
    hold = _locked(tx, None, hold_id)
    if order is None:
        return _void(tx, hold)
    return _capture(tx, hold, None, order)


def get_hold(
    db: Session | Tx, partner_id: str, hold_id: str, scope: KeyScope = PARTNER_WIDE
) -> Hold:
    """The partner's hold (HoldNotFound if none, or if the key's `scope` does not see it)."""
    row = Tx.of(db).first(
        "SELECT h.*, " + _OPEN_CASE + " FROM holds h WHERE h.id = %s AND h.partner_id = %s",
        (hold_id, partner_id),
    )
    found = _visible(row, hold_id, scope)
    return _hold(found, found.open_case_id)


def release_expired(db: Session | Tx, now: datetime | None = None, limit: int = 500) -> int:
    """Give back the points of holds past their expiry; returns how many were released. Safe
    to run twice or at once: each hold is closed once, under its lock."""
    tx = Tx.of(db)
    moment = now or clock.now()
    due = tx.all(
        "SELECT id FROM holds WHERE state = 'held' AND expires_at <= %s"
        " ORDER BY expires_at LIMIT %s",
        (moment, limit),
    )
    released = 0
    for found in due:
        hold = _locked(tx, None, found.id)
        if hold.state == "held":
            _close(tx, hold, 0, "expired", moment)
            released += 1
    return released


def redeem(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    store_id: str | None = None,
    partner_ref: str | None = None,
) -> Hold:
    """One-step redemption: hold and capture at once; under risk review, the hold stays open
    until an operator decides."""
    tx = Tx.of(db)
    placed = operation.run(
        tx, _HoldRequest(partner_id, member_id, points, key, store_id, partner_ref, None)
    )
    return captured_at_once(tx, placed)


def captured_at_once(tx: Tx, placed: _Placed, *, overdrawn: bool = False) -> Hold:
    """A one-step redemption's hold, placed just now under the member's lock or found again
    under it, captured unless it waits for a risk review. An `overdrawn` one (within its
    store's offline allowance) never waits: it happened at the till already, and its case is
    for an operator to look at the member."""
    if placed.row.state != "held" or (placed.review_case_id is not None and not overdrawn):
        return _hold(placed.row, placed.review_case_id)
    return replace(_capture(tx, placed.row, None), review_case_id=placed.review_case_id)
