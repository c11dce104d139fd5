"""post(): balanced, atomic, idempotent entries."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.ledger.tables import journal_entries
from tests.builders import ledger as b


def test_accrual_moves_points_and_balances(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
        posted = b.post_transfer(session, partner, member, 250)
    assert not posted.replayed
    assert ledger.balance(session, member) == 250
    assert ledger.balance(session, partner) == -250


def test_same_key_same_content_returns_first_entry(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    entry = ledger.transfer(
        kind="accrual",
        origin="partner:x",
        idempotency_key=b.key(),
        source=partner,
        destination=member,
        amount=40,
        occurred_at=b.now(),
    )
    with session.begin():
        first = ledger.post(session, entry)
    with session.begin():
        again = ledger.post(session, entry)
    assert again.replayed
    assert (again.id, again.recorded_at) == (first.id, first.recorded_at)
    assert ledger.balance(session, member) == 40


def test_posting_order_does_not_change_content(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    entry = ledger.transfer(
        kind="accrual",
        origin="partner:x",
        idempotency_key=b.key(),
        source=partner,
        destination=member,
        amount=7,
        occurred_at=b.now(),
    )
    with session.begin():
        first = ledger.post(session, entry)
    swapped = ledger.Entry(
        kind=entry.kind,
        origin=entry.origin,
        idempotency_key=entry.idempotency_key,
        postings=tuple(reversed(entry.postings)),
        occurred_at=entry.occurred_at,
    )
    with session.begin():
        assert ledger.post(session, swapped).id == first.id


def test_same_key_other_content_conflicts_and_writes_nothing(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    key = b.key()

    def entry(amount: int) -> ledger.Entry:
        return ledger.transfer(
            kind="accrual",
            origin="partner:x",
            idempotency_key=key,
            source=partner,
            destination=member,
            amount=amount,
            occurred_at=b.now(),
        )

    with session.begin():
        first = ledger.post(session, entry(10))
    with session.begin():
        count_before = session.execute(select(func.count()).select_from(journal_entries)).scalar()
    with pytest.raises(ledger.IdempotencyConflict) as caught, session.begin():
        ledger.post(session, entry(11))
    assert caught.value.first_entry_id == first.id
    with session.begin():
        assert ledger.balance(session, member) == 10
        count_after = session.execute(select(func.count()).select_from(journal_entries)).scalar()
    assert count_after == count_before


def test_same_key_in_another_origin_is_another_entry(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    key = b.key()
    with session.begin():
        ids = {
            ledger.post(
                session,
                ledger.transfer(
                    kind="accrual",
                    origin=origin,
                    idempotency_key=key,
                    source=partner,
                    destination=member,
                    amount=5,
                    occurred_at=b.now(),
                ),
            ).id
            for origin in ("partner:a", "partner:b")
        }
    assert len(ids) == 2
    assert ledger.balance(session, member) == 10


@pytest.mark.parametrize(
    ("postings", "error"),
    [
        ([("A", 5), ("B", -4)], ledger.UnbalancedEntry),
        ([("A", 5)], ledger.UnbalancedEntry),
        ([("A", 0), ("B", 0)], ledger.InvalidEntry),
        ([("A", 1.0), ("B", -1.0)], ledger.InvalidEntry),
        ([("A", True), ("B", -1)], ledger.InvalidEntry),
        ([("A", 2**63), ("B", -(2**63))], ledger.InvalidEntry),
    ],
)
def test_malformed_entries_are_refused_before_the_database(
    session: Session, postings: list[tuple[str, object]], error: type[Exception]
) -> None:
    with session.begin():
        names = {"A": b.member_account(session), "B": b.partner_account(session)}
    entry = ledger.Entry(
        kind="accrual",
        origin="test",
        idempotency_key=b.key(),
        postings=[ledger.Posting(names[n], amount) for n, amount in postings],  # type: ignore[arg-type]
        occurred_at=b.now(),
    )
    with pytest.raises(error):
        ledger.post(session, entry)


def test_entry_balances_per_asset_not_in_total(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
        cny = ledger.open_account(session, f"partner:{b.unique_id()}:payable", "CNY")
    entry = ledger.Entry(
        kind="mixed",
        origin="test",
        idempotency_key=b.key(),
        postings=[
            ledger.Posting(member, 10),
            ledger.Posting(cny.address, -10, "CNY"),
            ledger.Posting(partner, 0 - 0 + 1),
        ],
        occurred_at=b.now(),
    )
    with pytest.raises(ledger.UnbalancedEntry, match="CNY sums to -10"):
        ledger.post(session, entry)


def test_unknown_account_and_wrong_asset_are_refused(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    with pytest.raises(ledger.UnknownAccount), session.begin():
        b.post_transfer(session, partner, "member:nobody-here:available", 1)
    entry = ledger.Entry(
        kind="accrual",
        origin="test",
        idempotency_key=b.key(),
        postings=[ledger.Posting(member, 1, "CNY"), ledger.Posting(partner, -1, "CNY")],
        occurred_at=b.now(),
    )
    with pytest.raises(ledger.AssetMismatch), session.begin():
        ledger.post(session, entry)


def test_member_cannot_go_below_zero(session: Session) -> None:
    member = b.funded_member_account(session, 10)
    with session.begin():
        other = b.member_account(session)
    with pytest.raises(ledger.InsufficientFunds) as caught, session.begin():
        b.post_transfer(session, member, other, 11)
    assert caught.value.account == member
    with session.begin():
        assert ledger.balance(session, member) == 10
        b.post_transfer(session, member, other, 10)
        assert ledger.balance(session, member) == 0


def test_naive_occurred_at_is_refused(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    entry = ledger.transfer(
        kind="accrual",
        origin="test",
        idempotency_key=b.key(),
        source=partner,
        destination=member,
        amount=1,
        occurred_at=b.now().replace(tzinfo=None),
    )
    with pytest.raises(ledger.InvalidEntry):
        ledger.post(session, entry)
