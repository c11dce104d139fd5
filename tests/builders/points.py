"""The points lifecycle through the domain services, without HTTP, one committed transaction a
step: members linked to partners (new_member, the one member maker below the API), purchases
accrued (accrue), refunded, redeemed (a hold then its capture or void), redemptions refunded,
programme points exchanged, offline redemptions reported; and the wallet as the ledger holds
it. For the same steps as a partner makes them, signed, see calls."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.members.service import create_member, link_member
from clearinghouse.points import accrual, exchange, holds, offline, refunds, wallet
from clearinghouse.points.tables import purchases
from tests.builders.ids import unique_id


def new_member(sessions: sessionmaker[Session], partner_ids: list[str]) -> str:
    """A coalition member linked to every partner given."""
    with sessions() as session, session.begin():
        member_id = create_member(session)
        for partner_id in partner_ids:
            link_member(session, partner_id, unique_id("c"), member_id)
    return member_id


def accrue(
    sessions: sessionmaker[Session],
    partner_id: str,
    member_id: str,
    amount_fen: int,
    occurred_at: datetime | None = None,
) -> accrual.AccrualResult:
    """A purchase reported now that happened at `occurred_at` (now by default): its lot is
    earned then."""
    with sessions() as session, session.begin():
        return accrual.accrue(
            session,
            partner_id,
            accrual.PurchaseReport(
                partner_txn_id=unique_id("t"),
                member_id=member_id,
                amount_fen=amount_fen,
                occurred_at=occurred_at or datetime.now(UTC),
            ),
        )


def refund_purchase(
    sessions: sessionmaker[Session], partner_id: str, txn_id: str, amount_fen: int
) -> refunds.PurchaseRefund:
    with sessions() as session, session.begin():
        return refunds.refund_purchase(session, partner_id, txn_id, unique_id("r"), amount_fen)


def hold_and_capture(
    sessions: sessionmaker[Session], partner_id: str, member_id: str, points: int, captured: int
) -> holds.Hold:
    """A hold of `points` at the partner, then a capture of `captured` of them."""
    with sessions() as session, session.begin():
        hold = holds.place_hold(session, partner_id, member_id, points, key=str(uuid.uuid4()))
    with sessions() as session, session.begin():
        return holds.capture(session, partner_id, hold.id, captured)


def hold_and_void(
    sessions: sessionmaker[Session], partner_id: str, member_id: str, points: int
) -> None:
    """A hold of `points` at the partner, then voided."""
    with sessions() as session, session.begin():
        hold = holds.place_hold(session, partner_id, member_id, points, key=str(uuid.uuid4()))
    with sessions() as session, session.begin():
        holds.void(session, partner_id, hold.id)


def redeem_offline(
    sessions: sessionmaker[Session],
    partner_id: str,
    member_id: str,
    points: int,
    *,
    store_id: str,
    occurred_at: datetime | None = None,
    key: str | None = None,
) -> offline.OfflineRedemption:
    """A redemption the store's till approved while offline at `occurred_at` (now by default),
    reported now as `key` (a fresh one unless given)."""
    with sessions() as session, session.begin():
        return offline.redeem_offline(
            session,
            partner_id,
            member_id,
            points,
            key=key or str(uuid.uuid4()),
            store_id=store_id,
            occurred_at=occurred_at or datetime.now(UTC),
        )


def refund_redemption(
    sessions: sessionmaker[Session], partner_id: str, hold_id: str, points: int
) -> refunds.RedemptionRefund:
    with sessions() as session, session.begin():
        return refunds.refund_redemption(
            session, partner_id, hold_id, points, key=str(uuid.uuid4())
        )


def exchange_points(
    sessions: sessionmaker[Session],
    partner_id: str,
    member_id: str,
    direction: exchange.Direction,
    points: int,
) -> exchange.Exchange:
    with sessions() as session, session.begin():
        return exchange.exchange(
            session, partner_id, member_id, direction, points, key=str(uuid.uuid4())
        )


def available(sessions: sessionmaker[Session], member_id: str) -> int:
    with sessions() as session:
        return ledger.balance(session, wallet.available_account(member_id))


def pending(sessions: sessionmaker[Session], member_id: str) -> int:
    with sessions() as session:
        return ledger.balance(session, wallet.pending_account(member_id))


def wallet_of(sessions: sessionmaker[Session], member_id: str) -> tuple[int, int, int]:
    """(available, held, debt) straight from the ledger; debt as a positive number."""
    with sessions() as session:
        return (
            ledger.balance(session, wallet.available_account(member_id)),
            ledger.balance(session, wallet.held_account(member_id)),
            -ledger.balance(session, wallet.debt_account(member_id)),
        )


def redeemed_account(partner_id: str) -> str:
    return str(ledger.Address.partner(partner_id, "redeemed"))


def partner_trail(sessions: sessionmaker[Session], partner_id: str) -> tuple[int, int]:
    """(journal entries the partner originated, purchases it reported)."""
    with sessions() as session:
        entries = session.execute(
            select(func.count()).where(journal_entries.c.origin == f"partner:{partner_id}")
        ).scalar_one()
        bought = session.execute(
            select(func.count()).where(purchases.c.partner_id == partner_id)
        ).scalar_one()
    return int(entries), int(bought)
