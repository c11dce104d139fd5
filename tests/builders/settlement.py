"""Settlement's inputs and outputs: a day of traffic between two merchants, an accrual written
back-dated as raw journal rows (what the services could never write), a date settled once it is
over, and reads of what settlement wrote (entries by kind, the entries a run covers, postings per
address)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.ledger.tables import journal_entries, postings
from partners.directory import exposure_account, headroom_account
from settlement import netting, schedule
from settlement.netting import CATEGORIES
from settlement.runs import Run
from settlement.tables import settlement_items
from tests.builders.databases import World
from tests.builders.partners import ApiPartner
from tests.builders.points import accrue, hold_and_capture, new_member


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
    hold = hold_and_capture(world.sessions, receiver.id, member_id, 300, 300)
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


@contextmanager
def after_cutoff(business_date: date) -> Iterator[clock.Manual]:
    """The clock at `business_date`'s cut-off for the block, so that the date is over and may be
    settled, as it is for the server's job just after midnight. The database stamps an entry's
    `recorded_at` by its own clock, so a test writes today's traffic now and settles today from
    here; nothing signed may be sent meanwhile (its signature would be from the future)."""
    with clock.use(clock.Manual(netting.cutoff(business_date))) as manual:
        yield manual


def computed_early(sessions: sessionmaker[Session], business_date: date) -> None:
    """A run of `business_date` computed by the clock now, before its cut-off, as `settle`
    computed them before the day boundary refused it (data from then)."""
    with sessions() as session, session.begin():
        netting.compute(session, business_date, None)


def settle_after_cutoff(sessions: sessionmaker[Session], business_date: date) -> list[Run]:
    """`schedule.settle` of `business_date`, at its cut-off (`after_cutoff`)."""
    with after_cutoff(business_date):
        return schedule.settle(sessions, business_date)


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


def run_entries(sessions: sessionmaker[Session], run_id: int) -> set[int]:
    """The ids of the entries a settlement run covers."""
    with sessions() as session:
        return set(
            session.execute(
                select(settlement_items.c.entry_id).where(settlement_items.c.run_id == run_id)
            ).scalars()
        )
