"""Typed builders for settlement tests. Settlement is global (it settles every unsettled entry of
the database up to a cut-off), so every test works on a throwaway migrated database of its own
(`own_world`), with partners, members and traffic written through the domain services or the
signed API, and finance users with bearer tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import Table, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.app import create_app
from clearinghouse.database import libpq_url, make_engine, session_factory
from clearinghouse.ledger.tables import journal_entries, postings
from clearinghouse.members.service import create_member, link_member
from clearinghouse.points import accrual, exchange, holds, refunds, wallet
from clearinghouse.users.service import create_user
from partners import directory, limits
from partners.client import PartnerClient
from partners.directory import exposure_account, headroom_account
from partners.tables import partner_rates
from settlement.netting import CATEGORIES
from settlement.tables import settlement_items
from tests.api.builders import ApiPartner, client_for, unique_id
from tests.builders import own_client
from tests.conftest import Databases
from tests.points.builders import DEFAULT_LIMIT_FEN, points_partner

SHANGHAI = ZoneInfo("Asia/Shanghai")


def business_today() -> date:
    """The current business date in the coalition's time zone."""
    return datetime.now(SHANGHAI).date()


@dataclass(frozen=True)
class World:
    """A throwaway migrated database with the API on it."""

    url: str
    sessions: sessionmaker[Session]
    http: TestClient

    def merchant(
        self, *, issue_price: str = "1", redemption_value: str = "1", earn_rate: str = "1"
    ) -> ApiPartner:
        """An online merchant with a store, a key, rates (version 1, in effect for 60 days) and
        a generous issuance limit."""
        return points_partner(
            self.sessions,
            earn_rate=earn_rate,
            issue_price=issue_price,
            redemption_value=redemption_value,
        )

    def client(self, partner: ApiPartner) -> PartnerClient:
        return client_for(partner, self.http)

    def finance(self, role: str = "finance") -> tuple[str, dict[str, str]]:
        """A new user of the role: its id and the headers that carry its token."""
        user_id = unique_id("u")
        with self.sessions() as session, session.begin():
            _, token = create_user(session, user_id, role)
        return user_id, {"Authorization": f"Bearer {token}"}


def _drop(databases: Databases, url: str) -> None:
    name = make_url(url).database
    assert name is not None
    with psycopg.connect(libpq_url(databases.server_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    databases.created.remove(name)


@contextmanager
def own_world(databases: Databases) -> Iterator[World]:
    """A fresh migrated database, its sessions and the app on it; dropped afterwards."""
    url = databases.create("ch_settle")
    engine = make_engine(url, pool_size=5)
    sessions = session_factory(engine)
    http = own_client(create_app(sessions))
    try:
        yield World(url, sessions, http)
    finally:
        http.close()
        engine.dispose()
        _drop(databases, url)


def programme(
    sessions: sessionmaker[Session],
    *,
    exchange_rate: Decimal,
    issue_price: Decimal,
    redemption_value: Decimal,
) -> str:
    """A partner programme (its own points are a ledger asset) with rates in effect for a day
    and a generous issuance limit; returns its id."""
    partner_id = unique_id("g")
    with sessions() as session, session.begin():
        directory.create_partner(session, partner_id, f"Programme {partner_id}", "programme")
        started = session.execute(select(func.now())).scalar_one() - timedelta(days=1)
        session.execute(
            partner_rates.insert().values(
                partner_id=partner_id,
                version=1,
                effective_from=started,
                earn_rate=Decimal(1),
                issue_price=issue_price,
                redemption_value=redemption_value,
                exchange_rate=exchange_rate,
            )
        )
        limits.set_issuance_limit(session, partner_id, DEFAULT_LIMIT_FEN)
    return partner_id


# --- the points lifecycle, through the domain services (one committed transaction each) -------


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


def refund(
    sessions: sessionmaker[Session], partner_id: str, txn_id: str, amount_fen: int
) -> refunds.PurchaseRefund:
    with sessions() as session, session.begin():
        return refunds.refund_purchase(session, partner_id, txn_id, unique_id("r"), amount_fen)


def redeem(
    sessions: sessionmaker[Session], partner_id: str, member_id: str, points: int, captured: int
) -> holds.Hold:
    """A hold of `points` at the partner, then a capture of `captured` of them."""
    with sessions() as session, session.begin():
        hold = holds.place_hold(session, partner_id, member_id, points, key=str(uuid.uuid4()))
    with sessions() as session, session.begin():
        return holds.capture(session, partner_id, hold.id, captured)


def void(sessions: sessionmaker[Session], partner_id: str, member_id: str, points: int) -> None:
    with sessions() as session, session.begin():
        hold = holds.place_hold(session, partner_id, member_id, points, key=str(uuid.uuid4()))
    with sessions() as session, session.begin():
        holds.void(session, partner_id, hold.id)


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


def balance(sessions: sessionmaker[Session], address: str) -> int:
    with sessions() as session:
        return ledger.balance(session, address)


# --- reading what settlement wrote ------------------------------------------------------------


def count(sessions: sessionmaker[Session], table: Table, *where: Any) -> int:
    with sessions() as session:
        return int(
            session.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        )


def entries_of_kind(sessions: sessionmaker[Session], kind: str) -> int:
    return count(sessions, journal_entries, journal_entries.c.kind == kind)


def settleable_entries(sessions: sessionmaker[Session]) -> list[Any]:
    """Every entry settlement should cover: (id, kind, metadata), in id order."""
    with sessions() as session:
        return list(
            session.execute(
                select(journal_entries.c.id, journal_entries.c.kind, journal_entries.c.metadata)
                .where(journal_entries.c.kind.in_(CATEGORIES))
                .order_by(journal_entries.c.id)
            ).all()
        )


def postings_by_address(sessions: sessionmaker[Session], entry_id: int) -> dict[str, list[int]]:
    with sessions() as session:
        legs: dict[str, list[int]] = {}
        for posting in ledger.entry_postings(session, entry_id):
            legs.setdefault(posting.address, []).append(posting.amount)
        return legs


@dataclass(frozen=True)
class Traffic:
    """A day of traffic: the payer issued points that a member spent at the receiver."""

    payer: ApiPartner
    receiver: ApiPartner
    member_id: str
    issued_fen: int
    redeemed_fen: int


def a_day_of_traffic(world: World) -> Traffic:
    """A member earns at the payer (issue price 1.2 fen a point) and spends 300 points at the
    receiver (redemption value 0.9 fen a point)."""
    payer = world.merchant(issue_price="1.2", redemption_value="1")
    receiver = world.merchant(issue_price="1", redemption_value="0.9")
    member_id = new_member(world.sessions, [payer.id, receiver.id])
    earned = accrue(world.sessions, payer.id, member_id, 52_000)
    hold = redeem(world.sessions, receiver.id, member_id, 300, 300)
    return Traffic(payer, receiver, member_id, earned.issue_value_fen, hold.value_fen)


def backdated_accrual(
    sessions: sessionmaker[Session],
    partner_id: str,
    at: datetime,
    *,
    points: int = 1_000,
    value_fen: int = 1_200,
    metadata: dict[str, Any] | None = None,
) -> int:
    """A balanced accrual-like entry recorded at `at`, written as raw rows (the journal takes
    inserts; the triggers keep the balances and queue it for settlement): the partner issues
    `points` (to coalition:bonus, so no member's lots are involved) and their value moves from
    its headroom to its exposure. `metadata` defaults to what settlement reads."""
    legs = [
        (str(ledger.Address.partner(partner_id, "issued")), -points),
        ("coalition:bonus", points),
        (headroom_account(partner_id), -value_fen),
        (exposure_account(partner_id), value_fen),
    ]
    with sessions() as session, session.begin():
        entry_id: int = session.execute(
            journal_entries.insert()
            .values(
                kind="accrual",
                origin=f"partner:{partner_id}",
                idempotency_key=f"backdated:{uuid.uuid4()}",
                request_hash=b"\x00",
                occurred_at=at,
                recorded_at=at,
                metadata=(
                    {"partner_id": partner_id, "value_fen": value_fen}
                    if metadata is None
                    else metadata
                ),
            )
            .returning(journal_entries.c.id)
        ).scalar_one()
        for address, amount in legs:
            account = ledger.get_account(session, address)
            session.execute(
                postings.insert().values(
                    entry_id=entry_id,
                    account_id=account.id,
                    asset=account.asset,
                    amount=amount,
                    recorded_at=at,
                )
            )
    return entry_id


def run_entries(sessions: sessionmaker[Session], run_id: int) -> set[int]:
    """The ids of the entries a settlement run covers."""
    with sessions() as session:
        return set(
            session.execute(
                select(settlement_items.c.entry_id).where(settlement_items.c.run_id == run_id)
            ).scalars()
        )
