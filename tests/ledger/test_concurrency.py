"""Concurrent writers on real parallel connections: each thread posts in a session of its own;
a barrier releases them together."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.database import RETRYABLE_STATES
from clearinghouse.ledger.accounts import HOT_ACCOUNT_SHARDS
from clearinghouse.ledger.tables import account_balances, journal_entries
from tests.builders import ledger as b

Result = ledger.PostedEntry | Exception


# Times a transaction that lost a race runs again, in a test that allows it (the request path
# does, see `clearinghouse.database.run_in_transaction`).
RACE_ATTEMPTS = 10


def run_together(
    sessions: sessionmaker[Session],
    count: int,
    work: Callable[[Session, int], ledger.PostedEntry],
    *,
    attempts: int = 1,
) -> list[Result]:
    """Run `work(session, i)` for i in range(count), each in its own thread, session and
    transaction; return what each returned or raised, in order of i. A transaction that lost a
    race (deadlock, serialization failure) runs again, up to `attempts` times in all."""
    barrier = threading.Barrier(count)
    results: list[Result | None] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError as exc:
            results[i] = exc
            return
        for attempt in range(1, attempts + 1):
            try:
                with sessions() as session, session.begin():
                    results[i] = work(session, i)
                return
            except Exception as exc:
                results[i] = exc
                cause = exc.orig if isinstance(exc, DBAPIError) else exc
                if attempt == attempts or getattr(cause, "sqlstate", None) not in RETRYABLE_STATES:
                    return

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def kinds(results: list[Result]) -> Counter[str]:
    return Counter(type(result).__name__ for result in results)


def test_concurrent_debits_never_overdraw_a_member(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    member = b.funded_member_account(session, 10)
    with session.begin():
        shop = b.partner_account(session)

    def spend_one(s: Session, i: int) -> ledger.PostedEntry:
        return ledger.post(
            s,
            ledger.transfer(
                kind="redemption",
                origin="test",
                idempotency_key=b.key(),
                source=member,
                destination=shop,
                amount=1,
                occurred_at=b.now(),
            ),
        )

    results = run_together(sessions, 50, spend_one)

    assert kinds(results) == Counter(PostedEntry=10, InsufficientFunds=40), results
    refusals = [r for r in results if isinstance(r, ledger.InsufficientFunds)]
    assert {r.account for r in refusals} == {member}
    with session.begin():
        assert ledger.balance(session, member) == 0
        assert ledger.balance(session, shop) == 10
        assert ledger.check_consistency(session) == []


def test_concurrent_accruals_from_one_hot_partner_spread_over_shards(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    with session.begin():
        partner = b.partner_account(session)
        members = [b.member_account(session) for _ in range(40)]

    def accrue(s: Session, i: int) -> ledger.PostedEntry:
        return b.post_transfer(s, partner, members[i], i + 1)

    results = run_together(sessions, 40, accrue)

    assert kinds(results) == Counter(PostedEntry=40), results
    total = sum(range(1, 41))
    with session.begin():
        assert ledger.balance(session, partner) == -total
        assert [ledger.balance(session, m) for m in members] == list(range(1, 41))
        partner_id = ledger.get_account(session, partner).id
        shards = session.execute(
            select(account_balances.c.shard, account_balances.c.balance).where(
                account_balances.c.account_id == partner_id
            )
        ).all()
        assert len(shards) == HOT_ACCOUNT_SHARDS
        assert sum(row.balance for row in shards) == -total
        assert sum(1 for row in shards if row.balance != 0) >= 2
        assert ledger.check_consistency(session) == []


def test_concurrent_debits_of_a_sharded_floor_pay_exactly_what_it_holds(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    """A partner's issuance headroom: a floor kept in shards. Funded in one entry (so in one
    shard), then spent by more writers than it can pay: each debit takes a shard that can pay
    it, or all shards at once; exactly what it held is paid, nothing more."""
    with session.begin():
        headroom = str(ledger.Address.partner(b.unique_id("p"), "headroom"))
        (account,) = ledger.open_accounts(
            session, [ledger.AccountSpec(headroom, "CNY", non_negative=True)]
        )
        assert (account.non_negative, account.shards) == (True, HOT_ACCOUNT_SHARDS)
        credit_lines = b.cny_account(session)
        ledger.post(
            session,
            ledger.transfer(
                kind="issuance_limit",
                origin="test",
                idempotency_key=b.key(),
                source=credit_lines,
                destination=headroom,
                amount=1_000,
                asset="CNY",
                occurred_at=b.now(),
            ),
        )
        spent = b.cny_account(session)

    def spend(s: Session, i: int) -> ledger.PostedEntry:
        return ledger.post(
            s,
            ledger.transfer(
                kind="accrual",
                origin="test",
                idempotency_key=b.key(),
                source=headroom,
                destination=spent,
                amount=20,
                asset="CNY",
                occurred_at=b.now(),
            ),
        )

    # A debit whose shard was drawn down while it took it fails with a serialization failure
    # rather than wait for the other shards holding it (two such would deadlock): it runs again.
    results = run_together(sessions, 60, spend, attempts=RACE_ATTEMPTS)

    assert kinds(results) == Counter(PostedEntry=50, InsufficientFunds=10), results
    with session.begin():
        assert ledger.balance(session, headroom) == 0
        assert ledger.balance(session, spent) == 1_000
        shards = session.execute(
            select(account_balances.c.balance).where(account_balances.c.account_id == account.id)
        ).scalars()
        assert all(balance >= 0 for balance in shards)
        assert ledger.check_consistency(session) == []


def test_one_key_posted_concurrently_with_the_same_content_makes_one_entry(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    entry = ledger.transfer(
        kind="accrual",
        origin=b.unique_id("origin"),
        idempotency_key=b.key(),
        source=partner,
        destination=member,
        amount=25,
        occurred_at=b.now(),
    )

    results = run_together(sessions, 10, lambda s, i: ledger.post(s, entry))

    assert kinds(results) == Counter(PostedEntry=10), results
    posted = [r for r in results if isinstance(r, ledger.PostedEntry)]
    assert len({r.id for r in posted}) == 1
    assert len({r.recorded_at for r in posted}) == 1
    assert sum(not r.replayed for r in posted) == 1
    with session.begin():
        assert ledger.balance(session, member) == 25
        entries = session.execute(
            select(func.count())
            .select_from(journal_entries)
            .where(journal_entries.c.origin == entry.origin)
        ).scalar_one()
        assert entries == 1


def test_one_key_posted_concurrently_with_other_contents_makes_one_entry(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    origin, key = b.unique_id("origin"), b.key()

    def post_amount(s: Session, i: int) -> ledger.PostedEntry:
        return ledger.post(
            s,
            ledger.transfer(
                kind="accrual",
                origin=origin,
                idempotency_key=key,
                source=partner,
                destination=member,
                amount=i + 1,
                occurred_at=b.now(),
            ),
        )

    results = run_together(sessions, 10, post_amount)

    assert kinds(results) == Counter(PostedEntry=1, IdempotencyConflict=9), results
    (winner,) = (i for i, r in enumerate(results) if isinstance(r, ledger.PostedEntry))
    first = results[winner]
    assert isinstance(first, ledger.PostedEntry)
    assert not first.replayed
    assert {r.first_entry_id for r in results if isinstance(r, ledger.IdempotencyConflict)} == {
        first.id
    }
    with session.begin():
        assert ledger.balance(session, member) == winner + 1
        assert ledger.balance(session, partner) == -(winner + 1)


def test_transfers_both_ways_between_two_members_do_not_deadlock(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    alice = b.funded_member_account(session, 100)
    bob = b.funded_member_account(session, 100)

    def move(s: Session, i: int) -> ledger.PostedEntry:
        source, destination = (alice, bob) if i % 2 else (bob, alice)
        return ledger.post(
            s,
            ledger.transfer(
                kind="gift",
                origin="test",
                idempotency_key=b.key(),
                source=source,
                destination=destination,
                amount=1 + i % 3,
                occurred_at=b.now(),
            ),
        )

    results = run_together(sessions, 40, move)

    assert kinds(results) == Counter(PostedEntry=40), [
        r for r in results if isinstance(r, Exception)
    ]
    to_bob = sum(1 + i % 3 for i in range(40) if i % 2)
    to_alice = sum(1 + i % 3 for i in range(40) if not i % 2)
    with session.begin():
        assert ledger.balance(session, alice) == 100 - to_bob + to_alice
        assert ledger.balance(session, bob) == 100 + to_bob - to_alice
        assert ledger.check_consistency(session) == []
