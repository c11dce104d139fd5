"""Model-based test: random sequences of accruals, holds, captures, voids, refunds, offline
redemptions (within the store's offline allowance or beyond it) and expiry runs through the
service functions keep the books, the lots and a simple model of each member's wallet in
agreement after every step."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import DomainError, InvalidRequest
from clearinghouse.ledger.tables import account_balances, accounts
from clearinghouse.members import service as members
from clearinghouse.points import accrual, holds, lots, offline, refunds, wallet
from clearinghouse.points.expiry import expire_lots
from tests.builders.ids import unique_id
from tests.builders.partners import make_partner, set_offline_allowance

T = TypeVar("T")
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
OFFLINE_ALLOWANCE = 2_500
_keys = itertools.count(1)


@dataclass
class Wallet:
    available: int = 0
    held: int = 0
    debt: int = 0


@dataclass
class PurchaseModel:
    txn: str
    member_id: str
    amount_fen: int
    points: int
    refunded_fen: int = 0
    refunded_points: int = 0


@dataclass
class HoldModel:
    id: str
    member_id: str
    amount: int
    state: str = "held"
    captured: int = 0
    refunded: int = 0
    owed: int = 0
    """Points an offline redemption took from the member's debt: refunds give them back first."""


class PointsMachine(RuleBasedStateMachine):
    sessions: ClassVar[sessionmaker[Session]]

    def __init__(self) -> None:
        super().__init__()
        partner = make_partner(self.sessions, key=False)
        self.partner_id, self.store_id = partner.id, partner.store_id
        set_offline_allowance(self.sessions, self.store_id, OFFLINE_ALLOWANCE)
        self.redeemed_offline: dict[tuple[str, object], int] = {}
        with self.sessions() as session, session.begin():
            self.members = [
                members.link_member(session, self.partner_id, unique_id("c"))[0].member_id
                for _ in range(2)
            ]
        self.wallets = {member_id: Wallet() for member_id in self.members}
        self.purchases: list[PurchaseModel] = []
        self.holds: list[HoldModel] = []

    def _do(self, operation: Callable[[Session], T]) -> T:
        with self.sessions() as session, session.begin():
            return operation(session)

    def _refused(self, operation: Callable[[Session], object]) -> DomainError:
        with pytest.raises(DomainError) as refused:
            self._do(operation)
        return refused.value

    def _open_holds(self) -> list[HoldModel]:
        return [hold for hold in self.holds if hold.state == "held"]

    # --- operations -------------------------------------------------------------------------

    @rule(
        who=st.integers(0, 1),
        amount_fen=st.integers(1, 150_000),
        days_ago=st.integers(0, 29),
    )
    def accrue(self, who: int, amount_fen: int, days_ago: int) -> None:
        member_id = self.members[who % len(self.members)]
        report = accrual.PurchaseReport(
            partner_txn_id=unique_id("t"),
            member_id=member_id,
            amount_fen=amount_fen,
            occurred_at=datetime.now(UTC) - timedelta(days=days_ago, minutes=1),
        )
        result = self._do(lambda s: accrual.accrue(s, self.partner_id, report))
        model = self.wallets[member_id]
        repaid = min(result.points, model.debt)
        assert result.debt_repaid == repaid
        model.debt -= repaid
        model.available += result.points - repaid
        self.purchases.append(
            PurchaseModel(report.partner_txn_id, member_id, amount_fen, result.points)
        )

    @rule(who=st.integers(0, 1), points=st.integers(50, 3_000))
    def hold(self, who: int, points: int) -> None:
        member_id = self.members[who % len(self.members)]
        model = self.wallets[member_id]

        def place(session: Session) -> holds.Hold:
            return holds.place_hold(
                session, self.partner_id, member_id, points, key=f"model-{next(_keys)}"
            )

        if points < 100:
            assert isinstance(self._refused(place), InvalidRequest)
        elif points > model.available:
            assert isinstance(self._refused(place), ledger.InsufficientFunds)
        else:
            placed = self._do(place)
            model.available -= points
            model.held += points
            self.holds.append(HoldModel(placed.id, member_id, points))

    @rule(who=st.integers(0, 1), points=st.integers(100, 2_000))
    def redeem_offline(self, who: int, points: int) -> None:
        member_id = self.members[who % len(self.members)]
        model = self.wallets[member_id]
        at = datetime.now(UTC)
        day = (member_id, at.astimezone(get_settings().zone).date())
        within = self.redeemed_offline.get(day, 0) + points <= OFFLINE_ALLOWANCE

        def redeem(session: Session) -> offline.OfflineRedemption:
            return offline.redeem_offline(
                session,
                self.partner_id,
                member_id,
                points,
                key=f"model-{next(_keys)}",
                store_id=self.store_id,
                occurred_at=at,
            )

        if not within and points > model.available:
            assert isinstance(self._refused(redeem), ledger.InsufficientFunds)
            return
        done = self._do(redeem)
        owed = max(points - model.available, 0) if within else 0
        assert done.debt_incurred == owed
        self.redeemed_offline[day] = self.redeemed_offline.get(day, 0) + points
        model.available -= points - owed
        model.debt += owed
        if done.state == "held":  # beyond the allowance, a review holds it as any redemption
            assert not within
            assert done.review_case_id is not None
            model.held += points
            self.holds.append(HoldModel(done.id, member_id, points))
            return
        assert (done.state, done.captured) == ("captured", points)
        self.holds.append(HoldModel(done.id, member_id, points, "captured", points, owed=owed))

    @precondition(lambda self: bool(self._open_holds()))
    @rule(pick=st.integers(0, 10**6), part=st.one_of(st.none(), st.floats(0.001, 1.0)))
    def capture(self, pick: int, part: float | None) -> None:
        target = self._open_holds()[pick % len(self._open_holds())]
        points = None if part is None else max(1, int(target.amount * part))
        closed = self._do(lambda s: holds.capture(s, self.partner_id, target.id, points))
        captured = target.amount if points is None else points
        assert (closed.state, closed.captured) == ("captured", captured)
        model = self.wallets[target.member_id]
        model.held -= target.amount
        model.available += target.amount - captured
        target.state, target.captured = "captured", captured

    @precondition(lambda self: bool(self._open_holds()))
    @rule(pick=st.integers(0, 10**6))
    def void(self, pick: int) -> None:
        target = self._open_holds()[pick % len(self._open_holds())]
        self._do(lambda s: holds.void(s, self.partner_id, target.id))
        model = self.wallets[target.member_id]
        model.held -= target.amount
        model.available += target.amount
        target.state = "voided"

    @precondition(lambda self: bool(self._open_holds()))
    @rule(pick=st.integers(0, 10**6))
    def let_a_hold_expire(self, pick: int) -> None:
        target = self._open_holds()[pick % len(self._open_holds())]

        def expire(session: Session) -> int:
            session.execute(
                text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
                {"id": target.id},
            )
            return holds.release_expired(session)

        assert self._do(expire) >= 1
        model = self.wallets[target.member_id]
        model.held -= target.amount
        model.available += target.amount
        target.state = "expired"

    @precondition(lambda self: any(h.state != "held" for h in self.holds))
    @rule(pick=st.integers(0, 10**6))
    def capture_a_closed_hold(self, pick: int) -> None:
        closed = [hold for hold in self.holds if hold.state != "held"]
        target = closed[pick % len(closed)]
        refused = self._refused(lambda s: holds.capture(s, self.partner_id, target.id))
        assert isinstance(refused, holds.HoldClosed)

    @precondition(lambda self: bool(self.purchases))
    @rule(pick=st.integers(0, 10**6), part=st.floats(0.0, 1.2))
    def refund_purchase(self, pick: int, part: float) -> None:
        target = self.purchases[pick % len(self.purchases)]
        amount = max(1, int(target.amount_fen * part))

        def refund(session: Session) -> refunds.PurchaseRefund:
            return refunds.refund_purchase(
                session, self.partner_id, target.txn, unique_id("r"), amount
            )

        if target.refunded_fen + amount > target.amount_fen:
            assert isinstance(self._refused(refund), refunds.RefundExceedsPurchase)
            return
        result = self._do(refund)
        after = target.refunded_fen + amount
        clawed = target.points * after // target.amount_fen - target.refunded_points
        model = self.wallets[target.member_id]
        from_available = min(clawed, model.available)
        assert (result.points, result.from_available, result.to_debt) == (
            clawed,
            from_available,
            clawed - from_available,
        )
        model.available -= from_available
        model.debt += clawed - from_available
        target.refunded_fen, target.refunded_points = after, target.refunded_points + clawed

    @precondition(lambda self: any(h.state == "captured" for h in self.holds))
    @rule(pick=st.integers(0, 10**6), part=st.floats(0.0, 1.2))
    def refund_redemption(self, pick: int, part: float) -> None:
        captured = [hold for hold in self.holds if hold.state == "captured"]
        target = captured[pick % len(captured)]
        points = max(1, int(target.captured * part))

        def refund(session: Session) -> refunds.RedemptionRefund:
            return refunds.refund_redemption(
                session, self.partner_id, target.id, points, key=unique_id("k")
            )

        if target.refunded + points > target.captured:
            assert isinstance(self._refused(refund), refunds.RefundExceedsPurchase)
            return
        assert self._do(refund).refunded_total == target.refunded + points
        model = self.wallets[target.member_id]
        # What it left owing comes back first: to the debt while the member still owes it.
        to_debt = min(points, max(target.owed - target.refunded, 0), model.debt)
        target.refunded += points
        model.debt -= to_debt
        model.available += points - to_debt

    @rule(far=st.booleans())
    def run_expiry(self, far: bool) -> None:
        # Every lot expires within about 25 months: far in the future all of it goes; today none.
        expire_lots(self.sessions, now=FAR_FUTURE if far else datetime.now(UTC))
        if far:
            for model in self.wallets.values():
                model.available = 0

    # --- what must hold after every step ----------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        with self.sessions() as session:
            assert lots.check_lots(session) == []
            assert ledger.check_consistency(session) == []
            assert all(line.net == 0 for line in ledger.trial_balance(session))
            negative = session.execute(
                select(func.count())
                .select_from(account_balances.join(accounts))
                .where(
                    accounts.c.owner_type == "member",
                    accounts.c.kind.in_(("available", "held")),
                    account_balances.c.balance < 0,
                )
            ).scalar_one()
            assert negative == 0
            for member_id, model in self.wallets.items():
                found = Wallet(
                    ledger.balance(session, wallet.available_account(member_id)),
                    ledger.balance(session, wallet.held_account(member_id)),
                    -ledger.balance(session, wallet.debt_account(member_id)),
                )
                assert found == model, member_id
                open_holds = sum(h.amount for h in self._open_holds() if h.member_id == member_id)
                assert model.held == open_holds
                assert sum(lot.remaining for lot in lots.open_lots(session, member_id)) == (
                    model.available
                )


def test_the_books_lots_and_a_model_of_each_wallet_agree(
    sessions: sessionmaker[Session],
) -> None:
    machine = type("Machine", (PointsMachine,), {"sessions": sessions})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
