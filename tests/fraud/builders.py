"""Typed builders for the fraud tests: partners with stores where they are on the map, staff with
bearer tokens, thresholds published per partner, the signed requests that move points, the
operators' review queue, and the reads the checks need (cases, wallets, the books)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.tables import fraud_cases
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.members.tables import member_links
from clearinghouse.points import lots, wallet
from clearinghouse.points.tables import holds, purchases
from clearinghouse.users.service import create_user
from partners import directory, keys, limits
from partners.client import PartnerClient, ProblemError
from partners.tables import partner_rates
from tests.api.builders import ApiPartner, SigningKey, unique_id
from tests.points.builders import DEFAULT_LIMIT_FEN, enrol, purchase_body

# Two stores 1,068 km apart, and places a short ride apart in one city.
SHANGHAI = (31.2304, 121.4737)
BEIJING = (39.9042, 116.4074)
SHANGHAI_EAST = (31.2397, 121.4998)  # Lujiazui, 2.6 km from People's Square
SHANGHAI_WEST = (31.2243, 121.4450)  # Jing'an, 2.8 km the other way


@dataclass(frozen=True)
class Staff:
    """A user of the clearing house with a bearer token."""

    id: str
    role: str
    headers: dict[str, str]


def staff(sessions: sessionmaker[Session], role: str) -> Staff:
    user_id = unique_id("u")
    with sessions() as session, session.begin():
        _, token = create_user(session, user_id, role)
    return Staff(user_id, role, {"Authorization": f"Bearer {token}"})


def add_store(
    sessions: sessionmaker[Session],
    partner_id: str,
    *,
    channel: directory.Channel = "offline",
    city: str | None = "Shanghai",
    at: tuple[float, float] | None = None,
) -> str:
    """A new store of the partner, on the map when `at` is given; committed."""
    store_id = unique_id("s")
    latitude, longitude = at if at is not None else (None, None)
    with sessions() as session, session.begin():
        directory.add_store(
            session,
            partner_id,
            store_id,
            name=f"Store {store_id}",
            channel=channel,
            city=city,
            latitude=latitude,
            longitude=longitude,
        )
    return store_id


def publish(sessions: sessionmaker[Session], partner_id: str, **settings: Any) -> int:
    """A new version of the partner's own thresholds; returns its number."""
    with sessions() as session, session.begin():
        return fraud.publish_thresholds(session, partner_id, settings)


def programme_partner(sessions: sessionmaker[Session], *, exchange_rate: str = "1") -> ApiPartner:
    """A partner programme (its own points are a ledger asset) with a key, rates that carry an
    exchange rate, in effect for a day, and a generous issuance limit; committed."""
    partner_id = unique_id("g")
    store_id = unique_id("s")
    private_key = Ed25519PrivateKey.generate()
    with sessions() as session, session.begin():
        directory.create_partner(session, partner_id, f"Programme {partner_id}", "programme")
        key_id = keys.register_key(session, partner_id, private_key.public_key()).id
        started = session.execute(select(func.now())).scalar_one() - timedelta(days=1)
        session.execute(
            partner_rates.insert().values(
                partner_id=partner_id,
                version=1,
                effective_from=started,
                earn_rate=Decimal(1),
                issue_price=Decimal(1),
                redemption_value=Decimal(1),
                exchange_rate=Decimal(exchange_rate),
            )
        )
        limits.set_issuance_limit(session, partner_id, DEFAULT_LIMIT_FEN)
        directory.add_store(session, partner_id, store_id, name="Counter", channel="online")
    return ApiPartner(partner_id, SigningKey(key_id, private_key), store_id)


# --- signed partner requests ------------------------------------------------------------------


def accrue(
    client: PartnerClient,
    member_id: str,
    amount_fen: int,
    *,
    store_id: str | None = None,
    occurred_at: datetime | None = None,
    txn: str | None = None,
) -> dict[str, Any]:
    """POST /v1/purchases; returns the accrual."""
    body = purchase_body(member_id, amount_fen, store_id=store_id, occurred_at=occurred_at, txn=txn)
    accrual: dict[str, Any] = client.post("/v1/purchases", body)
    return accrual


def hold(
    client: PartnerClient, member_id: str, points: int, *, store_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"member_id": member_id, "points": points}
    if store_id is not None:
        body["store_id"] = store_id
    placed: dict[str, Any] = client.post("/v1/holds", body)
    return placed


def redeem(
    client: PartnerClient, member_id: str, points: int, *, store_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"member_id": member_id, "points": points}
    if store_id is not None:
        body["store_id"] = store_id
    redeemed: dict[str, Any] = client.post("/v1/redemptions", body)
    return redeemed


def capture(client: PartnerClient, hold_id: str) -> dict[str, Any]:
    captured: dict[str, Any] = client.post(f"/v1/holds/{hold_id}/capture", {})
    return captured


def refund(client: PartnerClient, txn: str, amount_fen: int) -> dict[str, Any]:
    refunded: dict[str, Any] = client.post(
        f"/v1/purchases/{txn}/refunds", {"refund_id": unique_id("r"), "amount_fen": amount_fen}
    )
    return refunded


def exchange(client: PartnerClient, member_id: str, direction: str, points: int) -> dict[str, Any]:
    done: dict[str, Any] = client.post(
        "/v1/exchanges", {"member_id": member_id, "direction": direction, "points": points}
    )
    return done


def refused(status: int, code: str, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a signed request that must be refused with this status and code; its problem."""
    with pytest.raises(ProblemError) as caught:
        call(*args, **kwargs)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value.problem
    return caught.value.problem


def member_with_points(client: PartnerClient, amount_fen: int = 52_000) -> tuple[str, int]:
    """A new member of the client's partner with the points of one online purchase (52,000 fen
    earn 1,540 points, first-purchase bonus included); (member id, points)."""
    member_id = enrol(client)
    return member_id, int(accrue(client, member_id, amount_fen)["points"])


def partner_case(client: PartnerClient, case_id: str) -> dict[str, Any]:
    """GET /v1/cases/{id}, signed."""
    found: dict[str, Any] = client.get(f"/v1/cases/{case_id}")
    return found


# --- the operators' queue ---------------------------------------------------------------------


def operator_case(http: TestClient, operator: Staff, case_id: str) -> dict[str, Any]:
    response = http.get(f"/operator/cases/{case_id}", headers=operator.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def open_case_ids(http: TestClient, operator: Staff, state: str = "open") -> list[str]:
    """The ids GET /operator/cases lists (open cases unless another state is asked for)."""
    response = http.get(
        "/operator/cases", params={"state": state, "limit": 500}, headers=operator.headers
    )
    assert response.status_code == 200, response.text
    return [case["id"] for case in response.json()]


def decide(
    http: TestClient, operator: Staff, case_id: str, verdict: str, note: str | None = None
) -> httpx.Response:
    """POST /operator/cases/{id}/approve or /reject."""
    response: httpx.Response = http.post(
        f"/operator/cases/{case_id}/{verdict}", json={"note": note}, headers=operator.headers
    )
    return response


def decided(
    http: TestClient, operator: Staff, case_id: str, verdict: str, note: str | None = None
) -> dict[str, Any]:
    response = decide(http, operator, case_id, verdict, note)
    assert response.status_code == 200, response.text
    case: dict[str, Any] = response.json()
    return case


# --- reads ------------------------------------------------------------------------------------


def cases_of(sessions: sessionmaker[Session], member_id: str) -> list[Any]:
    """Every case on the member, oldest first."""
    with sessions() as session:
        return list(
            session.execute(
                select(fraud_cases)
                .where(fraud_cases.c.member_id == member_id)
                .order_by(fraud_cases.c.created_at, fraud_cases.c.id)
            )
        )


def cases_at(sessions: sessionmaker[Session], partner_ids: list[str]) -> list[Any]:
    with sessions() as session:
        return list(
            session.execute(select(fraud_cases).where(fraud_cases.c.partner_id.in_(partner_ids)))
        )


def rule_names(case: dict[str, Any] | Any) -> list[str]:
    verdicts = case["verdicts"] if isinstance(case, dict) else case.verdicts
    return [rule["rule"] for rule in verdicts["rules"]]


def the_rule(case: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in case["verdicts"]["rules"] if r["rule"] == name]
    assert len(found) == 1, case["verdicts"]
    return found[0]


def pending(sessions: sessionmaker[Session], member_id: str) -> int:
    with sessions() as session:
        return ledger.balance(session, wallet.pending_account(member_id))


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


def entries_reversing(sessions: sessionmaker[Session], entry_id: int) -> list[Any]:
    with sessions() as session:
        return list(
            session.execute(
                select(journal_entries).where(journal_entries.c.reverses_id == entry_id)
            )
        )


def hold_state(sessions: sessionmaker[Session], hold_id: str) -> str:
    with sessions() as session:
        state: str = session.execute(
            select(holds.c.state).where(holds.c.id == hold_id)
        ).scalar_one()
    return state


def link_aged(sessions: sessionmaker[Session], member_id: str, age: timedelta) -> None:
    """Pretend the member joined `age` ago (test set-up: the link is not a ledger record)."""
    with sessions() as session, session.begin():
        session.execute(
            member_links.update()
            .where(member_links.c.member_id == member_id)
            .values(linked_at=func.now() - age)
        )


def assert_books_balanced(sessions: sessionmaker[Session]) -> None:
    """Every materialised balance matches its postings, every member's lots add up to the
    available balance, and every asset's trial balance nets to zero."""
    with sessions() as session:
        assert ledger.check_consistency(session) == []
        assert lots.check_lots(session) == []
        assert all(line.net == 0 for line in ledger.trial_balance(session))
