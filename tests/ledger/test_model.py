"""Model-based tests: an in-memory model of the books, driven by the same random operations as the
ledger, must agree with the database after every step (TigerBeetle's auditor, pgledger's property
tests).

Each example opens fresh accounts (three members, two partners, a partner's CNY payable and a
store's CNY till) and runs a random sequence of valid and invalid entries against them. The model
is a dict address -> balance plus a dict (origin, key) -> (content, entry id); it decides the
outcome of every entry on its own, and the ledger must reach the same decision.

A multi-leg entry may name one account more than once; the model judges a member's floor on the
entry's net effect (see also test_posting_order.py)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.ledger.tables import account_balances, accounts, journal_entries
from tests.builders import ledger as b

Content = tuple[str, datetime, tuple[tuple[str, str, int], ...], tuple[tuple[str, Any], ...]]

MEMBERS = 3
PARTNERS = 2
PTS_ACCOUNTS = MEMBERS + PARTNERS
amounts = st.integers(min_value=1, max_value=60)


def content(entry: ledger.Entry) -> Content:
    """What makes two requests the same request: everything but the order of the postings."""
    return (
        entry.kind,
        entry.occurred_at,
        tuple(sorted((p.account, p.asset, p.amount) for p in entry.postings)),
        tuple(sorted(entry.metadata.items())),
    )


@dataclass(frozen=True)
class Recorded:
    entry: ledger.Entry
    entry_id: int


@dataclass(frozen=True)
class Replayed:
    entry_id: int


Outcome = Replayed | type[Exception] | None


class LedgerModel(RuleBasedStateMachine):
    """The books of one example, kept by hand next to the real ledger."""

    sessions: ClassVar[sessionmaker[Session]]
    seen: ClassVar[Counter[str]] = Counter()  # outcomes over all examples of a run

    def __init__(self) -> None:
        super().__init__()
        self.session = self.sessions()
        self.origins = (b.unique_id("origin"), b.unique_id("origin"))
        with self.session.begin():
            s = self.session
            self.members = [b.member_account(s) for _ in range(MEMBERS)]
            self.partners = [b.partner_account(s) for _ in range(PARTNERS)]
            self.cny = [b.cny_account(s), b.store_account(s, "CNY")]
            self.entry_count = self._entry_count()
        self.pts = self.members + self.partners
        self.asset = {a: "PTS" for a in self.pts} | {a: "CNY" for a in self.cny}
        self.balances: dict[str, int] = dict.fromkeys(self.asset, 0)
        self.keys: dict[tuple[str, str], Recorded] = {}
        self.history: list[tuple[datetime, dict[str, int]]] = []
        self.history_checked = 0
        self.refused: Counter[str] = Counter()

    def teardown(self) -> None:
        self.session.close()

    def _balances(self) -> dict[str, int]:
        """Every account's balance now, in one query: the sum of its balance rows (shards)."""
        rows = self.session.execute(
            select(accounts.c.address, func.sum(account_balances.c.balance))
            .join(account_balances, account_balances.c.account_id == accounts.c.id)
            .where(accounts.c.address.in_(list(self.asset)))
            .group_by(accounts.c.address)
        ).all()
        return {address: int(total) for address, total in rows}

    def _entry_count(self) -> int:
        return self.session.execute(select(func.count()).select_from(journal_entries)).scalar_one()

    def _entry(
        self,
        legs: list[tuple[str, int, str]],
        key: str | None = None,
        kind: str = "test",
        origin: int = 0,
    ) -> ledger.Entry:
        return b.entry(
            *legs, kind=kind, origin=self.origins[origin], idempotency_key=key or b.key()
        )

    # The model's judgement of an entry, in the order the ledger checks things.

    def expected(self, entry: ledger.Entry) -> Outcome:
        sums: dict[str, int] = defaultdict(int)
        for p in entry.postings:
            sums[p.asset] += p.amount
        if any(sums.values()):
            return ledger.UnbalancedEntry
        first = self.keys.get((entry.origin, entry.idempotency_key))
        if first is not None:
            if content(first.entry) == content(entry):
                return Replayed(first.entry_id)
            return ledger.IdempotencyConflict
        if any(p.account not in self.asset for p in entry.postings):
            return ledger.UnknownAccount
        if any(self.asset[p.account] != p.asset for p in entry.postings):
            return ledger.AssetMismatch
        if self.overdrawn(entry):
            return ledger.InsufficientFunds
        return None

    def overdrawn(self, entry: ledger.Entry) -> set[str]:
        after = dict(self.balances)
        for p in entry.postings:
            after[p.account] += p.amount
        return {a for a in self.members if after[a] < 0}

    def submit(self, entry: ledger.Entry) -> None:
        """Post `entry` to the ledger and check it meets the model's judgement."""
        expected = self.expected(entry)
        outcome: ledger.PostedEntry | Exception
        try:
            with self.session.begin():
                outcome = ledger.post(self.session, entry)
        except (ledger.LedgerError, ledger.UnknownAccount, ledger.IdempotencyConflict) as exc:
            outcome = exc
        if isinstance(expected, Replayed):
            assert isinstance(outcome, ledger.PostedEntry), outcome
            assert outcome.replayed
            assert outcome.id == expected.entry_id
            self.seen["Replayed"] += 1
            return
        if expected is not None:
            assert type(outcome) is expected, f"expected {expected.__name__}, got {outcome!r}"
            self.refused[expected.__name__] += 1
            self.seen[expected.__name__] += 1
            if isinstance(outcome, ledger.InsufficientFunds):
                assert outcome.account in self.overdrawn(entry)
            if isinstance(outcome, ledger.IdempotencyConflict):
                first = self.keys[entry.origin, entry.idempotency_key]
                assert outcome.first_entry_id == first.entry_id
            return
        assert isinstance(outcome, ledger.PostedEntry), outcome
        assert not outcome.replayed
        for p in entry.postings:
            self.balances[p.account] += p.amount
        self.keys[entry.origin, entry.idempotency_key] = Recorded(entry, outcome.id)
        self.entry_count += 1
        self.history.append((outcome.recorded_at, dict(self.balances)))
        self.seen["Posted"] += 1

    # Operations.

    @initialize(amount=st.integers(min_value=0, max_value=100))
    def fund(self, amount: int) -> None:
        """Start the first member with some points, so that debits are not all refused."""
        if amount:
            self.submit(
                self._entry([(self.partners[0], -amount, "PTS"), (self.members[0], amount, "PTS")])
            )

    @rule(
        source=st.integers(0, PTS_ACCOUNTS - 1),
        offset=st.integers(1, PTS_ACCOUNTS - 1),
        amount=amounts,
    )
    def transfer(self, source: int, offset: int, amount: int) -> None:
        """Points between two accounts; a member as the source may be overdrawn."""
        src, dst = self.pts[source], self.pts[(source + offset) % PTS_ACCOUNTS]
        self.submit(self._entry([(src, -amount, "PTS"), (dst, amount, "PTS")], kind="transfer"))

    @rule(amount=amounts, forward=st.booleans())
    def cny_transfer(self, amount: int, forward: bool) -> None:
        src, dst = self.cny if forward else self.cny[::-1]
        self.submit(self._entry([(src, -amount, "CNY"), (dst, amount, "CNY")], kind="payment"))

    @rule(
        accounts=st.lists(st.integers(0, PTS_ACCOUNTS - 1), min_size=3, max_size=PTS_ACCOUNTS),
        legs=st.lists(st.integers(-60, 60).filter(bool), min_size=PTS_ACCOUNTS - 1),
    )
    def multi_leg(self, accounts: list[int], legs: list[int]) -> None:
        """Three or more legs, on any accounts (repeats too); the last leg balances the others."""
        amounts = legs[: len(accounts) - 1]
        rest = -sum(amounts)
        if rest == 0:
            amounts[0] += 1 if amounts[0] > 0 else -1
            rest = -sum(amounts)
        postings = [
            (self.pts[i], a, "PTS") for i, a in zip(accounts, [*amounts, rest], strict=True)
        ]
        self.submit(self._entry(postings, kind="split"))

    @rule(member=st.integers(0, MEMBERS - 1), points=amounts, money=amounts)
    def redeem_for_money(self, member: int, points: int, money: int) -> None:
        """Two assets in one entry: a member's points to a partner, the partner's money to a
        store. Each asset balances on its own."""
        self.submit(
            self._entry(
                [
                    (self.members[member], -points, "PTS"),
                    (self.partners[1], points, "PTS"),
                    (self.cny[0], -money, "CNY"),
                    (self.cny[1], money, "CNY"),
                ],
                kind="redemption",
            )
        )

    @rule(
        accounts=st.lists(st.integers(0, PTS_ACCOUNTS - 1), min_size=2, max_size=3, unique=True),
        amount=amounts,
        error=st.integers(-5, 5).filter(bool),
    )
    def unbalanced(self, accounts: list[int], amount: int, error: int) -> None:
        legs = [(self.pts[i], amount, "PTS") for i in accounts[1:]]
        last = (-amount * len(legs) + error) or error  # off by `error`, or by 2 * `error`
        legs.append((self.pts[accounts[0]], last, "PTS"))
        self.submit(self._entry(legs, kind="broken"))

    @rule(account=st.integers(0, PTS_ACCOUNTS - 1), amount=amounts, outgoing=st.booleans())
    def unknown_account(self, account: int, amount: int, outgoing: bool) -> None:
        ghost = str(ledger.Address.member(b.unique_id("ghost")))
        known = self.pts[account]
        src, dst = (ghost, known) if outgoing else (known, ghost)
        self.submit(self._entry([(src, -amount, "PTS"), (dst, amount, "PTS")]))

    @rule(
        source=st.integers(0, PTS_ACCOUNTS - 1),
        offset=st.integers(1, PTS_ACCOUNTS - 1),
        amount=amounts,
        cny_side=st.booleans(),
    )
    def wrong_asset(self, source: int, offset: int, amount: int, cny_side: bool) -> None:
        """A balanced entry in an asset its accounts do not hold."""
        if cny_side:
            legs = [(self.cny[0], -amount, "PTS"), (self.cny[1], amount, "PTS")]
        else:
            src, dst = self.pts[source], self.pts[(source + offset) % PTS_ACCOUNTS]
            legs = [(src, -amount, "CNY"), (dst, amount, "CNY")]
        self.submit(self._entry(legs))

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), reorder=st.booleans())
    def repeat_key_same_content(self, data: st.DataObject, reorder: bool) -> None:
        """A retry: the same request again, its postings possibly in another order."""
        first = self.keys[data.draw(st.sampled_from(list(self.keys)))].entry
        postings = tuple(reversed(first.postings)) if reorder else first.postings
        self.submit(replace(first, postings=postings))

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), change=st.sampled_from(["amounts", "kind", "occurred_at", "metadata"]))
    def repeat_key_other_content(self, data: st.DataObject, change: str) -> None:
        """A reused key: another (still valid) request under the key of a posted one."""
        first = self.keys[data.draw(st.sampled_from(list(self.keys)))].entry
        match change:
            case "amounts":
                other = replace(
                    first, postings=tuple(replace(p, amount=p.amount * 2) for p in first.postings)
                )
            case "kind":
                other = replace(first, kind=first.kind + "_again")
            case "occurred_at":
                other = replace(first, occurred_at=first.occurred_at + timedelta(microseconds=1))
            case _:
                other = replace(first, metadata={"attempt": 2})
        self.submit(other)

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), member=st.integers(0, MEMBERS - 1), amount=amounts)
    def repeat_key_in_other_origin(self, data: st.DataObject, member: int, amount: int) -> None:
        """A key is unique per origin only: another origin may use it for its own entry."""
        origin, key = data.draw(st.sampled_from(list(self.keys)))
        other = 1 - self.origins.index(origin)
        legs = [(self.partners[0], -amount, "PTS"), (self.members[member], amount, "PTS")]
        self.submit(self._entry(legs, key=key, origin=other))

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def balance_as_of_a_past_instant(self, data: st.DataObject) -> None:
        recorded_at, balances = data.draw(st.sampled_from(self.history))
        with self.session.begin():
            for address, expected in balances.items():
                assert ledger.balance(self.session, address, as_of=recorded_at) == expected
            before = recorded_at - timedelta(microseconds=1)
            earlier = [bal for t, bal in self.history if t <= before]
            expected_before = earlier[-1] if earlier else dict.fromkeys(balances, 0)
            for address, expected in expected_before.items():
                assert ledger.balance(self.session, address, as_of=before) == expected

    # What must hold after every step.

    @invariant()
    def books_agree_with_the_model(self) -> None:
        with self.session.begin():
            actual = self._balances()
            assert actual == self.balances
            # And through the API, for one account a step.
            address = self.pts[len(self.history) % PTS_ACCOUNTS]
            assert ledger.balance(self.session, address) == self.balances[address]
            per_asset: dict[str, int] = defaultdict(int)
            for address, bal in actual.items():
                per_asset[self.asset[address]] += bal
            assert per_asset == {"PTS": 0, "CNY": 0}
            assert all(actual[m] >= 0 for m in self.members)
            assert self._entry_count() == self.entry_count
            assert ledger.check_consistency(self.session) == []
            assert all(line.net == 0 for line in ledger.trial_balance(self.session))

    @invariant()
    def latest_instant_matches(self) -> None:
        """The books as of the last entry's instant (checked once per new entry)."""
        if len(self.history) == self.history_checked:
            return
        self.history_checked = len(self.history)
        recorded_at, balances = self.history[-1]
        with self.session.begin():
            as_of = {a: ledger.balance(self.session, a, as_of=recorded_at) for a in balances}
        assert as_of == balances


def test_ledger_agrees_with_a_model_of_the_books(sessions: sessionmaker[Session]) -> None:
    LedgerModel.sessions = sessions
    LedgerModel.seen = Counter()
    run_state_machine_as_test(
        LedgerModel,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    # The run exercised every kind of outcome, not only the easy ones.
    assert set(LedgerModel.seen) == {
        "Posted",
        "Replayed",
        "InsufficientFunds",
        "UnbalancedEntry",
        "UnknownAccount",
        "AssetMismatch",
        "IdempotencyConflict",
    }, LedgerModel.seen


def test_a_fixed_walk_through_the_model(sessions: sessionmaker[Session]) -> None:
    """A few steps by hand, so that a broken model shows up without hypothesis in the way."""
    LedgerModel.sessions = sessions
    machine = LedgerModel()
    try:
        machine.fund(5)
        machine.transfer(source=0, offset=1, amount=6)
        machine.transfer(source=0, offset=1, amount=5)
        machine.multi_leg(accounts=[1, 2, 3], legs=[-3, 2, 9, 9])
        machine.unbalanced(accounts=[3, 0], amount=4, error=1)
        machine.unknown_account(account=3, amount=1, outgoing=True)
        machine.wrong_asset(source=3, offset=1, amount=2, cny_side=False)
        machine.redeem_for_money(member=2, points=1, money=9)
        machine.multi_leg(accounts=[0, 0, 3], legs=[-4, 5, 9, 9])  # earn 5, spend 4 at once
        machine.books_agree_with_the_model()
        machine.latest_instant_matches()
        assert machine.balances[machine.members[1]] == 5 - 3
        assert machine.balances[machine.members[2]] == 2 - 1
        assert machine.balances[machine.members[0]] == 5 - 5 + 1
        assert machine.refused == Counter(
            InsufficientFunds=1, UnbalancedEntry=1, UnknownAccount=1, AssetMismatch=1
        )
    finally:
        machine.teardown()
