"""The ledger on its own, below the points rules: accounts opened for fresh owners, entries
posted straight to the journal with ledger.post, and balance reads. For a purchase as the
coalition records it (rules, lots, issuance limit), use points.accrue or calls.buy instead.

The ledger tests reach everything through this module (`from tests.builders import ledger as
b`), the fresh keys, names and instants it builds with included."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from tests.builders.dates import now
from tests.builders.ids import key, unique_id

__all__ = [
    "balance",
    "cny_account",
    "entry",
    "funded_member_account",
    "key",
    "member_account",
    "now",
    "partner_account",
    "post_transfer",
    "store_account",
    "unique_id",
]


def member_account(session: Session) -> str:
    """A new member's available-points account address."""
    address = str(ledger.Address.member(unique_id("m")))
    ledger.open_account(session, address)
    return address


def partner_account(session: Session) -> str:
    """A new partner's (sharded) issuance account address."""
    address = str(ledger.Address.partner(unique_id("p"), "issued"))
    ledger.open_account(session, address)
    return address


def store_account(session: Session, asset: str = "PTS", kind: str = "till") -> str:
    """A new store's (single-row, unguarded) account address holding `asset`."""
    address = str(ledger.Address.store(unique_id("s"), kind))
    ledger.open_account(session, address, asset)
    return address


def cny_account(session: Session) -> str:
    """A new partner's (sharded) CNY payable account address."""
    address = str(ledger.Address.partner(unique_id("p"), "payable"))
    ledger.open_account(session, address, "CNY")
    return address


def post_transfer(
    session: Session, source: str, destination: str, amount: int, *, kind: str = "accrual"
) -> ledger.PostedEntry:
    """`amount` points from `source` to `destination`, posted with ledger.post as one entry of
    `kind` (an accrual unless told), in the caller's transaction."""
    return ledger.post(
        session,
        ledger.transfer(
            kind=kind,
            origin="test",
            idempotency_key=key(),
            source=source,
            destination=destination,
            amount=amount,
            occurred_at=now(),
        ),
    )


def funded_member_account(session: Session, points: int) -> str:
    """A member account holding `points`, issued by a fresh partner account; committed."""
    with session.begin():
        address = member_account(session)
        post_transfer(session, partner_account(session), address, points)
    return address


def entry(
    *legs: tuple[str, int] | tuple[str, int, str],
    kind: str = "test",
    origin: str = "test",
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
) -> ledger.Entry:
    """An entry with one posting per leg: (address, amount) in PTS or (address, amount, asset)."""
    return ledger.Entry(
        kind=kind,
        origin=origin,
        idempotency_key=idempotency_key or key(),
        postings=tuple(ledger.Posting(*leg) for leg in legs),
        occurred_at=occurred_at or now(),
    )


def balance(sessions: sessionmaker[Session], address: str) -> int:
    """The account's balance, read in a session of its own."""
    with sessions() as session:
        return ledger.balance(session, address)
