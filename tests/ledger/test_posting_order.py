"""The order in which an entry lists its postings is not part of its content: the request hash
ignores it (see test_post.py), so the ledger's verdict on the entry must not depend on it either.

An entry may credit and debit the same member, e.g. points accrued and spent in one purchase.
The floor applies to the member's balance once the entry is written, not to a half-written entry."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy.orm import Session

from clearinghouse import ledger
from tests.builders import ledger as b

Legs = list[tuple[str, int]]


def accrue_and_spend(session: Session) -> tuple[str, Legs]:
    """A member at zero earns 10 points from a partner and spends 4 at a store, in one entry."""
    with session.begin():
        member, partner, store = (
            b.member_account(session),
            b.partner_account(session),
            b.store_account(session),
        )
    return member, [(partner, -10), (member, 10), (member, -4), (store, 4)]


def outcome(session: Session, legs: Legs) -> str:
    try:
        with session.begin():
            ledger.post(session, b.entry(*legs, kind="purchase"))
    except ledger.InsufficientFunds:
        return "refused"
    return "posted"


@pytest.mark.parametrize("credit_first", [True, False], ids=["credit_first", "debit_first"])
def test_member_credited_and_debited_in_one_entry_is_judged_on_the_net(
    session: Session, credit_first: bool
) -> None:
    member, legs = accrue_and_spend(session)
    if not credit_first:
        legs = [legs[2], legs[3], legs[0], legs[1]]
    assert outcome(session, legs) == "posted"
    assert ledger.balance(session, member) == 6
    assert ledger.check_consistency(session) == []


def test_verdict_does_not_depend_on_the_order_of_postings(session: Session) -> None:
    verdicts: dict[tuple[int, ...], str] = {}
    for order in itertools.permutations(range(4)):
        _, legs = accrue_and_spend(session)
        verdicts[order] = outcome(session, [legs[i] for i in order])
    refused = sorted(order for order, verdict in verdicts.items() if verdict == "refused")
    assert refused == [], f"{len(refused)} of 24 orders of the same entry were refused: {refused}"


def test_entry_leaving_a_member_below_zero_is_refused_in_every_order(session: Session) -> None:
    for order in itertools.permutations(range(4)):
        with session.begin():
            member, partner, store = (
                b.member_account(session),
                b.partner_account(session),
                b.store_account(session),
            )
        legs = [(partner, -4), (member, 4), (member, -5), (store, 5)]
        assert outcome(session, [legs[i] for i in order]) == "refused", order
        with session.begin():
            assert ledger.balance(session, member) == 0
