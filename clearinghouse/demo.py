"""A small coalition day on the ledger: two partners issue points, a member spends points earned
at one partner at the other, and an expired remainder goes to breakage.

Every entry has a fixed idempotency key, so running the demo again replays it and posts nothing
twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from clearinghouse import ledger

PARTNERS = {"teahouse": "Teahouse (online shop)", "bookchain": "Book chain (offline stores)"}
MEMBERS = ("alice", "bob")
DAY = datetime(2026, 11, 24, tzinfo=UTC)


@dataclass(frozen=True)
class DemoResult:
    posted: int
    replayed: int


def chart_of_accounts() -> list[ledger.AccountSpec]:
    specs = [ledger.AccountSpec(str(ledger.Address.member(m))) for m in MEMBERS]
    for partner in PARTNERS:
        specs.append(ledger.AccountSpec(str(ledger.Address.partner(partner, "issued"))))
        specs.append(ledger.AccountSpec(str(ledger.Address.partner(partner, "redeemed"))))
    return specs


def _entries() -> list[ledger.Entry]:
    def move(
        key: str, kind: str, source: str, destination: str, amount: int, hour: int
    ) -> ledger.Entry:
        return ledger.transfer(
            kind=kind,
            origin="demo",
            idempotency_key=key,
            source=source,
            destination=destination,
            amount=amount,
            occurred_at=DAY.replace(hour=hour),
        )

    tea_issued, tea_redeemed = "partner:teahouse:issued", "partner:teahouse:redeemed"
    book_issued, book_redeemed = "partner:bookchain:issued", "partner:bookchain:redeemed"
    alice, bob = "member:alice:available", "member:bob:available"
    return [
        move("accrual-1", "accrual", tea_issued, alice, 520, 2),
        move("accrual-2", "accrual", book_issued, alice, 180, 3),
        move("accrual-3", "accrual", book_issued, bob, 300, 4),
        move("redemption-1", "redemption", alice, book_redeemed, 600, 6),
        move("redemption-2", "redemption", bob, tea_redeemed, 250, 7),
        move("expiry-1", "expiry", bob, "coalition:breakage", 50, 15),
    ]


def run(session: Session) -> DemoResult:
    """Open the demo's accounts and post its day, in the session's transaction."""
    ledger.open_accounts(session, chart_of_accounts())
    results = [ledger.post(session, entry) for entry in _entries()]
    replayed = sum(r.replayed for r in results)
    return DemoResult(posted=len(results) - replayed, replayed=replayed)
