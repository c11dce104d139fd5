"""Offline redemptions: points a store's till let a member spend while it was offline, reported
later, alone or in a batch. The goods are gone by then.

A store may have an offline allowance: the points a member may redeem there in a business day
(the coalition's time zone, of the time the till approved it) beyond what the member has. While
the member's offline redemptions at the store that day, this one included, stay within it, the
redemption is applied whatever the member's available points: they (and their lots) give what
they cover and the member's debt account the rest, which later accruals repay first. The
partner's `redeemed` account is credited all the points and the settlement value is theirs, as
for any redemption. The risk rules cannot refuse such a redemption; a review opens a case for an
operator to look at the member, and holds nothing back. Beyond the allowance (or with none) it
is a one-step redemption like any other, refused if the member's points do not cover it.

A redemption is a hold captured at once (clearinghouse.points.holds), taken through
`operation.run` with its key: a retry returns the first answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, time, timedelta

from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.points import operation, wallet
from clearinghouse.points.accrual import check_reported_time
from clearinghouse.points.holds import (
    Hold,
    Overdraw,
    _HoldRequest,
    _HoldTerms,
    _Placed,
    captured_at_once,
)
from clearinghouse.rules.policy import rule_set_at


@dataclass(frozen=True)
class OfflineRedemption(Hold):
    debt_incurred: int
    """Points the member's available points did not cover: owed now, repaid by later accruals."""
    allowance_left: int
    """What the store's offline allowance leaves the member for the rest of that business day."""


@dataclass(frozen=True)
class _Recorded:
    """An offline redemption as written, before its capture."""

    placed: _Placed
    debt_incurred: int
    allowance_left: int
    overdrawn: bool


# Under the member's lock: what the member has and owes, and what the member redeemed offline
# at the store in the business day.
_STANDING = """
SELECT (SELECT coalesce(sum(b.balance), 0)::bigint
          FROM accounts a JOIN account_balances b ON b.account_id = a.id
         WHERE a.address = %s) AS available,
       (SELECT -coalesce(sum(b.balance), 0)::bigint
          FROM accounts a JOIN account_balances b ON b.account_id = a.id
         WHERE a.address = %s) AS debt,
       (SELECT coalesce(sum(o.points), 0)::bigint FROM offline_redemptions o
         WHERE o.member_id = %s AND o.store_id = %s
           AND o.occurred_at >= %s AND o.occurred_at < %s) AS redeemed_that_day
"""
_RECORD = (
    "INSERT INTO offline_redemptions"
    " (hold_id, member_id, store_id, occurred_at, points, debt, allowance_left)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class _OfflineRequest:
    """An offline redemption, as `operation.run` takes it: a hold's request and lock, then its
    plan judged against the store's allowance."""

    hold: _HoldRequest

    @property
    def partner_id(self) -> str:
        return self.hold.partner_id

    def lock(self, tx: Tx, screening: fraud.Screening) -> _HoldTerms:
        return self.hold.lock(tx, screening)

    def replay(self, tx: Tx, terms: _HoldTerms) -> _Recorded | None:
        earlier = self.hold.replay(tx, terms)
        if earlier is None:
            return None
        found = tx.first(
            "SELECT debt, allowance_left FROM offline_redemptions WHERE hold_id = %s",
            (earlier.row.id,),
        )
        if found is None:
            raise Conflict(f"key {self.hold.key} was used for a redemption that was not offline")
        return _Recorded(earlier, found.debt, found.allowance_left, overdrawn=False)

    def plan(self, tx: Tx, terms: _HoldTerms) -> _Offline:
        hold = self.hold
        occurred_at = hold.occurred_at
        check_reported_time(occurred_at, hold.now, rule_set_at(tx, occurred_at), "redemptions")
        assert terms.store is not None  # redeem_offline refuses a redemption without one
        zone = get_settings().zone
        start = datetime.combine(occurred_at.astimezone(zone).date(), time(), tzinfo=zone)
        standing = tx.one(
            _STANDING,
            (
                wallet.available_account(hold.member_id),
                wallet.debt_account(hold.member_id),
                hold.member_id,
                terms.store.id,
                start,
                start + timedelta(days=1),
            ),
        )
        allowance = terms.store.offline_allowance
        redeemed = standing.redeemed_that_day + hold.points
        if redeemed > allowance:
            return _Offline(terms, debt_incurred=0, allowance_left=0)
        owed = max(hold.points - standing.available, 0)
        overdraw = Overdraw(owed, standing.debt + owed)
        return _Offline(
            replace(terms, overdraw=overdraw),
            debt_incurred=owed,
            allowance_left=allowance - redeemed,
        )


@dataclass(frozen=True)
class _Offline:
    """An offline redemption's hold, within the allowance (its terms overdraw) or not, and
    what it leaves of the allowance."""

    terms: _HoldTerms
    debt_incurred: int
    allowance_left: int

    @property
    def attempt(self) -> fraud.Attempt:
        return self.terms.attempt

    @property
    def history(self) -> fraud.History:
        return self.terms.history

    def post(self, tx: Tx, decision: fraud.Decision) -> operation.Posted[_Recorded]:
        posted = self.terms.post(tx, decision)
        hold = self.terms.request
        tx.execute(
            _RECORD,
            (
                posted.hold_id,
                hold.member_id,
                hold.store_id,
                hold.occurred_at,
                hold.points,
                self.debt_incurred,
                self.allowance_left,
            ),
        )
        overdrawn = self.terms.overdraw is not None
        return operation.Posted(
            lambda case_id: _Recorded(
                posted.answer(case_id), self.debt_incurred, self.allowance_left, overdrawn
            ),
            hold_id=posted.hold_id,
        )


def redeem_offline(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    store_id: str | None,
    occurred_at: datetime,
    partner_ref: str | None = None,
) -> OfflineRedemption:
    """Apply a redemption that the till of `store_id` approved at `occurred_at` while it was
    offline: within the store's offline allowance even beyond the member's available points
    (the rest becomes points debt), else as a one-step redemption. A retry with the same `key`
    returns the first answer."""
    if store_id is None:
        raise InvalidRequest("an offline redemption names the store whose till approved it")
    if occurred_at.tzinfo is None:
        raise InvalidRequest("occurred_at must carry a time zone offset")
    tx = Tx.of(db)
    recorded = operation.run(
        tx,
        _OfflineRequest(
            _HoldRequest(
                partner_id,
                member_id,
                points,
                key,
                store_id,
                partner_ref,
                None,
                clock.now(),
                occurred_at,
            )
        ),
    )
    hold = captured_at_once(tx, recorded.placed, overdrawn=recorded.overdrawn)
    return OfflineRedemption(
        **asdict(hold),
        debt_incurred=recorded.debt_incurred,
        allowance_left=recorded.allowance_left,
    )
