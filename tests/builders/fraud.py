"""The fraud checks' side: places on the map (stores go there with partners.add_store), a
partner's own thresholds published, the case a partner reads, the operators' review queue, and
the reads the checks need (cases, the partner's trail, reversals, the books' balance)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.tables import fraud_cases
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.members.tables import member_links
from clearinghouse.points import lots
from partners.client import PartnerClient
from tests.builders.users import Staff

# Two stores 1,068 km apart, and places a short ride apart in one city.
SHANGHAI = (31.2304, 121.4737)
BEIJING = (39.9042, 116.4074)
SHANGHAI_EAST = (31.2397, 121.4998)  # Lujiazui, 2.6 km from People's Square
SHANGHAI_WEST = (31.2243, 121.4450)  # Jing'an, 2.8 km the other way


def publish(sessions: sessionmaker[Session], partner_id: str, **settings: Any) -> int:
    """A new version of the partner's own thresholds; returns its number."""
    with sessions() as session, session.begin():
        return fraud.publish_thresholds(session, partner_id, settings)


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


def entries_reversing(sessions: sessionmaker[Session], entry_id: int) -> list[Any]:
    with sessions() as session:
        return list(
            session.execute(
                select(journal_entries).where(journal_entries.c.reverses_id == entry_id)
            )
        )


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
