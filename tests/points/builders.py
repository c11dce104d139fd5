"""Typed builders for the points lifecycle through the signed API: partners ready to accrue
(rates and an issuance limit), members, purchases, and the ledger reads the checks need."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.points import wallet
from partners import limits
from partners.client import PartnerClient
from partners.tables import partner_rates
from tests.api.builders import ApiPartner, create_partner, unique_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_LIMIT_FEN = 10**12


@dataclass(frozen=True)
class Isolated:
    """A database of one test's own, and a partner's client on it."""

    sessions: sessionmaker[Session]
    client: PartnerClient


def points_partner(
    sessions: sessionmaker[Session],
    *,
    earn_rate: str = "1",
    issue_price: str = "1",
    redemption_value: str = "1.0",
    limit_fen: int = DEFAULT_LIMIT_FEN,
    rates_since: timedelta = timedelta(days=60),
) -> ApiPartner:
    """A partner with one store and a key whose rates (version 1) took effect `rates_since` ago,
    so that back-dated purchases find them, and with an issuance limit; committed.

    The first version is written as the onboarding would have written it then: set_rates only
    takes effect now or later."""
    partner = create_partner(sessions, with_rates=False)
    with sessions() as session, session.begin():
        started = session.execute(select(func.now())).scalar_one() - rates_since
        session.execute(
            partner_rates.insert().values(
                partner_id=partner.id,
                version=1,
                effective_from=started,
                earn_rate=Decimal(earn_rate),
                issue_price=Decimal(issue_price),
                redemption_value=Decimal(redemption_value),
            )
        )
        if limit_fen:
            limits.set_issuance_limit(session, partner.id, limit_fen)
    return partner


def set_limit(sessions: sessionmaker[Session], partner_id: str, limit_fen: int) -> None:
    with sessions() as session, session.begin():
        limits.set_issuance_limit(session, partner_id, limit_fen)


def enrol(client: PartnerClient, *, birth_month: int | None = None) -> str:
    """A new coalition member linked to the client's partner; returns the member id."""
    body: dict[str, Any] = {"customer_ref": unique_id("c")}
    if birth_month is not None:
        body["birth_month"] = birth_month
    member_id: str = client.post("/v1/members", body)["member_id"]
    return member_id


def link(client: PartnerClient, member_id: str) -> None:
    """Link an existing member to the client's partner."""
    client.post("/v1/members", {"customer_ref": unique_id("c"), "member_id": member_id})


def purchase_body(
    member_id: str,
    amount_fen: int,
    *,
    occurred_at: datetime | None = None,
    txn: str | None = None,
    store_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partner_txn_id": txn or unique_id("txn"),
        "member_id": member_id,
        "amount_fen": amount_fen,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
    }
    if store_id is not None:
        body["store_id"] = store_id
    return body


def buy(
    client: PartnerClient,
    member_id: str,
    amount_fen: int,
    *,
    occurred_at: datetime | None = None,
    txn: str | None = None,
) -> dict[str, Any]:
    """POST /v1/purchases; returns the accrual."""
    accrual: dict[str, Any] = client.post(
        "/v1/purchases", purchase_body(member_id, amount_fen, occurred_at=occurred_at, txn=txn)
    )
    return accrual


def view(client: PartnerClient, member_id: str) -> dict[str, Any]:
    member: dict[str, Any] = client.get(f"/v1/members/{member_id}")
    return member


def lines(accrual: dict[str, Any]) -> list[tuple[str, Decimal]]:
    """The breakdown as (rule, points) pairs."""
    return [(line["rule"], Decimal(line["points"])) for line in accrual["breakdown"]]


def balance(sessions: sessionmaker[Session], address: str) -> int:
    with sessions() as session:
        return ledger.balance(session, address)


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


def earlier_month(now: datetime) -> datetime:
    """An instant that a partner may still report (within 30 days) in an earlier calendar month
    (Asia/Shanghai) than `now`, when there is one: only on the 31st is the previous month out of
    reach, and then the instant falls on the 1st of this month."""
    month_start = now.astimezone(SHANGHAI).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    candidate = month_start - timedelta(hours=1)
    if now - candidate < timedelta(days=29):
        return candidate
    return now - timedelta(days=29)


def end_of_month_after(instant: datetime, months: int) -> datetime:
    """The end of the calendar month (Asia/Shanghai) `months` after the one of `instant`, as the
    first instant of the month that follows it; written out independently of the code."""
    local = instant.astimezone(SHANGHAI)
    year, month = local.year, local.month + months + 1
    while month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=SHANGHAI)


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)
