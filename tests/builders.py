"""Typed builders for test data. Each call makes fresh owners, so tests sharing a database never
touch each other's accounts."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.types import ASGIApp

from clearinghouse import ledger

_counter = itertools.count(1)


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}{next(_counter)}"


def key() -> str:
    return uuid.uuid4().hex


def now() -> datetime:
    return datetime.now(UTC)


def member(session: Session) -> str:
    """A new member's available-points account address."""
    address = str(ledger.Address.member(unique_id("m")))
    ledger.open_account(session, address)
    return address


def partner(session: Session) -> str:
    """A new partner's (sharded) issuance account address."""
    address = str(ledger.Address.partner(unique_id("p"), "issued"))
    ledger.open_account(session, address)
    return address


def accrue(session: Session, source: str, destination: str, amount: int) -> ledger.PostedEntry:
    return ledger.post(
        session,
        ledger.transfer(
            kind="accrual",
            origin="test",
            idempotency_key=key(),
            source=source,
            destination=destination,
            amount=amount,
            occurred_at=now(),
        ),
    )


def funded_member(session: Session, points: int) -> str:
    """A member holding `points`, issued by a fresh partner; committed."""
    with session.begin():
        address = member(session)
        accrue(session, partner(session), address, points)
    return address


def store(session: Session, asset: str = "PTS", kind: str = "till") -> str:
    """A new store's (single-row, unguarded) account address holding `asset`."""
    address = str(ledger.Address.store(unique_id("s"), kind))
    ledger.open_account(session, address, asset)
    return address


def cny_account(session: Session) -> str:
    """A new partner's (sharded) CNY payable account address."""
    address = str(ledger.Address.partner(unique_id("p"), "payable"))
    ledger.open_account(session, address, "CNY")
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


def own_client(app: ASGIApp, address: str | None = None, **options: Any) -> TestClient:
    """A TestClient with an address of its own (unless given one), as every real client has:
    the failed authentications of one test never count against another's rate limit."""
    return TestClient(
        app,
        raise_server_exceptions=False,
        client=(address or unique_id("client-"), 50000),
        **options,
    )
