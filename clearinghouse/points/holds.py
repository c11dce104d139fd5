"""Redemption, points as cash (seed 001/002: 100 points = 1 yuan, usable from 100 points):
hold (reserve) -> capture (all or part) or void; holds left open expire. The redeeming
partner's `redeemed` account is credited at capture. Points leave the member's lots, oldest
expiry first, when they are held; what is not captured goes back to the same lots."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.fraud import service as fraud
from clearinghouse.members.service import linked_member
from clearinghouse.numbers import money
from clearinghouse.points import lots, wallet
from clearinghouse.points.policy import rule_set_at
from clearinghouse.points.tables import holds
from partners import directory, rates

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class HoldNotFound(NotFound):
    code = "hold_not_found"
    title = "Unknown hold"


class HoldClosed(Conflict):
    code = "hold_closed"
    title = "The hold is no longer open"


@dataclass(frozen=True)
class Hold:
    id: str
    partner_id: str
    member_id: str
    store_id: str | None
    partner_ref: str | None
    amount: int
    captured: int
    refunded: int
    state: str
    value_fen: int
    rates_version: int
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None


def _hold(row: Row[tuple[object, ...]]) -> Hold:
    values = row._asdict()
    for internal in ("hold_entry_id", "close_entry_id"):
        values.pop(internal)
    return Hold(**values)


def _value(points: int, redemption_value: Decimal) -> int:
    return money(redemption_value * points)


def place_hold(
    session: Session,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    store_id: str | None = None,
    partner_ref: str | None = None,
    minutes: int | None = None,
) -> Hold:
    """Reserve `points` of the member's available points for a redemption at this partner."""
    linked_member(session, partner_id, member_id)
    if store_id is not None:
        directory.get_store(session, partner_id, store_id)
    now = datetime.now(UTC)
    policy = rule_set_at(session, now).policy
    if points < policy.min_redeem_points:
        raise InvalidRequest(f"redemptions start at {policy.min_redeem_points} points")
    ttl = minutes if minutes is not None else policy.hold_minutes
    if not 1 <= ttl <= 7 * 24 * 60:
        raise InvalidRequest("a hold lasts 1 minute to 7 days")
    partner_rates = rates.rates_at(session, partner_id, now)
    wallet.lock_member(session, member_id)
    earlier = ledger.find_entry(session, f"partner:{partner_id}", f"hold:{key}")
    if earlier is not None:
        # A retry whose first answer was lost: the first hold, whatever the clock says now.
        return _hold(session.execute(select(holds).where(holds.c.hold_entry_id == earlier)).one())
    attempt = fraud.Attempt(
        operation="hold",
        partner_id=partner_id,
        member_id=member_id,
        occurred_at=now,
        points=points,
        store_id=store_id,
    )
    decision = fraud.screen(session, attempt)
    posted = ledger.post(
        session,
        ledger.transfer(
            kind="hold",
            origin=f"partner:{partner_id}",
            idempotency_key=f"hold:{key}",
            source=wallet.available_account(member_id),
            destination=wallet.held_account(member_id),
            amount=points,
            occurred_at=now,
            metadata={"member_id": member_id, "store_id": store_id, "partner_ref": partner_ref},
        ),
    )
    lots.consume(session, member_id, points, posted.id)
    hold_id = "H" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(15))
    row = session.execute(
        holds.insert()
        .values(
            id=hold_id,
            partner_id=partner_id,
            member_id=member_id,
            store_id=store_id,
            partner_ref=partner_ref,
            amount=points,
            value_fen=_value(points, partner_rates.redemption_value),
            rates_version=partner_rates.version,
            expires_at=now + timedelta(minutes=ttl),
            hold_entry_id=posted.id,
        )
        .returning(holds)
    ).one()
    if decision.action == "review":
        # The points stay reserved; capture waits for an operator's decision.
        fraud.open_case(session, attempt, decision, hold_id=hold_id)
    return _hold(row)


def lock_hold(session: Session, partner_id: str | None, hold_id: str) -> Row[tuple[object, ...]]:
    """The hold, with its member locked first and then the hold row (the lock order of every
    member write)."""
    query = select(holds.c.member_id).where(holds.c.id == hold_id)
    if partner_id is not None:
        query = query.where(holds.c.partner_id == partner_id)
    member_id = session.execute(query).scalar_one_or_none()
    if member_id is None:
        raise HoldNotFound(f"no hold {hold_id}")
    wallet.lock_member(session, member_id)
    return session.execute(
        select(holds).where(holds.c.id == hold_id).with_for_update(key_share=True)
    ).one()


def _close(
    session: Session, hold: Row[tuple[object, ...]], captured: int, state: str, now: datetime
) -> Hold:
    """Capture `captured` points of an open hold and give the rest back."""
    member_id, partner_id = hold.member_id, hold.partner_id
    released = hold.amount - captured
    legs = [ledger.Posting(wallet.held_account(member_id), -hold.amount)]
    if captured:
        legs.append(ledger.Posting(str(ledger.Address.partner(partner_id, "redeemed")), captured))
    if released:
        legs.append(ledger.Posting(wallet.available_account(member_id), released))
    value = _value(
        captured, rates.rates_version(session, partner_id, hold.rates_version).redemption_value
    )
    posted = ledger.post(
        session,
        ledger.Entry(
            kind={"captured": "capture", "voided": "void", "expired": "hold_expiry"}[state],
            origin=f"partner:{partner_id}",
            idempotency_key=f"close:{hold.id}",
            postings=legs,
            occurred_at=now,
            metadata={
                "partner_id": partner_id,
                "value_fen": value,
                "hold_id": hold.id,
                "member_id": member_id,
                "captured": captured,
            },
        ),
    )
    if released:
        lots.restore(session, lots.movements_of(session, hold.hold_entry_id), released, posted.id)
    row = session.execute(
        update(holds)
        .where(holds.c.id == hold.id)
        .values(
            state=state,
            captured=captured,
            value_fen=value,
            close_entry_id=posted.id,
            closed_at=func.now(),
        )
        .returning(holds)
    ).one()
    return _hold(row)


def _open(hold: Row[tuple[object, ...]], now: datetime) -> None:
    if hold.state != "held":
        raise HoldClosed(f"hold {hold.id} is {hold.state}")
    if hold.expires_at <= now:
        raise HoldClosed(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")


def capture(session: Session, partner_id: str, hold_id: str, points: int | None = None) -> Hold:
    """Capture all of the hold, or `points` of it (the rest returns to the member)."""
    hold = lock_hold(session, partner_id, hold_id)
    now = datetime.now(UTC)
    _open(hold, now)
    case_id = fraud.open_case_on_hold(session, hold_id)
    if case_id is not None:
        raise fraud.UnderReview(
            f"hold {hold_id} waits for risk review (case {case_id})", case_id=case_id
        )
    amount = hold.amount if points is None else points
    if not 1 <= amount <= hold.amount:
        raise InvalidRequest(f"capture 1 to {hold.amount} points of hold {hold_id}")
    return _close(session, hold, amount, "captured", now)


def void(session: Session, partner_id: str, hold_id: str) -> Hold:
    hold = lock_hold(session, partner_id, hold_id)
    now = datetime.now(UTC)
    if hold.state != "held":
        raise HoldClosed(f"hold {hold_id} is {hold.state}")
    return _close(session, hold, 0, "voided", now)


def get_hold(session: Session, partner_id: str, hold_id: str) -> Hold:
    row = session.execute(
        select(holds).where(holds.c.id == hold_id, holds.c.partner_id == partner_id)
    ).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}")
    return _hold(row)


def release_expired(session: Session, now: datetime | None = None, limit: int = 500) -> int:
    """Give back the points of holds past their expiry; returns how many were released. Safe
    to run twice or at once: each hold is closed once, under its lock."""
    moment = now or datetime.now(UTC)
    due = session.execute(
        select(holds.c.id)
        .where(holds.c.state == "held", holds.c.expires_at <= moment)
        .order_by(holds.c.expires_at)
        .limit(limit)
    ).scalars()
    released = 0
    for hold_id in list(due):
        hold = lock_hold(session, None, hold_id)
        if hold.state == "held":
            _close(session, hold, 0, "expired", moment)
            released += 1
    return released


def redeem(
    session: Session,
    partner_id: str,
    member_id: str,
    points: int,
    *,
    key: str,
    store_id: str | None = None,
    partner_ref: str | None = None,
) -> Hold:
    """One-step redemption: hold and capture at once; under risk review, the hold stays open
    until an operator decides."""
    hold = place_hold(
        session,
        partner_id,
        member_id,
        points,
        key=key,
        store_id=store_id,
        partner_ref=partner_ref,
    )
    if hold.state != "held" or fraud.open_case_on_hold(session, hold.id) is not None:
        return hold
    return capture(session, partner_id, hold.id)
