"""Risk review's event: an operator's decision on a case reaches the case's partner, signed, with
what became of the points the case held back (released, reversed, a hold voided), written in the
decision's transaction; a partner with no endpoint subscribed hears nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.database import Tx, unit_of_work
from clearinghouse.fraud.schemas import CaseDecidedWebhook
from clearinghouse.webhooks.worker import process_webhooks
from partners.client import PartnerClient
from tests.builders.calls import buy, hold, link_body
from tests.builders.databases import World
from tests.builders.fraud import decided, publish
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner
from tests.builders.users import staff
from tests.builders.webhooks import add_endpoint, receiver, verified

CASE_DECIDED = ("case.decided",)


def _events_of(sessions: sessionmaker[Session], partner_id: str) -> int:
    with unit_of_work(sessions) as session:
        count: int = Tx.of(session).scalar(
            "SELECT count(*) FROM webhook_events WHERE partner_id = %s", (partner_id,)
        )
    return count


def _enrolled(client: PartnerClient) -> tuple[str, str]:
    """A new member linked to the client's partner: its id and the partner's reference for it."""
    customer_ref = unique_id("c")
    member_id: str = client.post("/v1/members", link_body(customer_ref))["member_id"]
    return member_id, customer_ref


def _accrual_under_review(world: World, partner: ApiPartner) -> tuple[str, str, dict[str, Any]]:
    """A new member's 52,000-fen purchase at the partner's till, held for review (above the
    partner's 100-yuan cap for a till): the member, the partner's reference and the accrual."""
    publish(world.sessions, partner.id, max_accrual_fen_offline=10_000, amount_cap_action="review")
    client = world.client(partner)
    member_id, customer_ref = _enrolled(client)
    accrual = buy(client, member_id, 52_000, store_id=partner.store_id)
    assert accrual["review_case_id"] is not None
    return member_id, customer_ref, accrual


def test_an_approved_accrual_tells_its_partner_the_points_were_released(world: World) -> None:
    operator = staff(world.sessions, "operator")
    partner, quiet = world.merchant(), world.merchant()
    member_id, customer_ref, accrual = _accrual_under_review(world, partner)
    _, _, unheard = _accrual_under_review(world, quiet)
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, partner.id, hooks.url, CASE_DECIDED)
        add_endpoint(world.sessions, quiet.id, hooks.url, ("settlement.paid",))
        case = decided(world.http, operator, accrual["review_case_id"], "approve")
        decided(world.http, operator, unheard["review_case_id"], "reject")
        assert process_webhooks(world.sessions) == 1

    [got] = hooks.received
    body = verified(secret, got, CaseDecidedWebhook)
    assert (body.type, body.version) == ("case.decided", 1)
    assert body.data.model_dump() == {
        "case_id": case["id"],
        "decision": "approved",
        "operation": "accrual",
        "member_id": member_id,
        "customer_ref": customer_ref,
        "points": accrual["points"],
        "outcome": "released",
        "partner_txn_id": accrual["partner_txn_id"],
        "hold_id": None,
        "decided_at": datetime.fromisoformat(case["decided_at"]),
    }
    # The other partner's endpoint hears of payments alone: its decision wrote no event.
    assert _events_of(world.sessions, quiet.id) == 0


def test_a_rejected_hold_tells_its_partner_the_hold_was_voided(world: World) -> None:
    operator = staff(world.sessions, "operator")
    partner = world.merchant()
    client = world.client(partner)
    member_id, customer_ref = _enrolled(client)
    buy(client, member_id, 52_000)
    # Every redemption by a member linked today waits for a person.
    publish(world.sessions, partner.id, new_member_redeem_points=100)
    placed = hold(client, member_id, 500)
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, partner.id, hooks.url, CASE_DECIDED)
        case = decided(world.http, operator, placed["review_case_id"], "reject", "card stolen")
        assert process_webhooks(world.sessions) == 1

    [got] = hooks.received
    data = verified(secret, got, CaseDecidedWebhook).data
    assert data.model_dump() == {
        "case_id": case["id"],
        "decision": "rejected",
        "operation": "hold",
        "member_id": member_id,
        "customer_ref": customer_ref,
        "points": 500,
        "outcome": "voided",
        "partner_txn_id": None,
        "hold_id": placed["hold_id"],
        "decided_at": datetime.fromisoformat(case["decided_at"]),
    }
    assert client.get(f"/v1/holds/{placed['hold_id']}")["state"] == "voided"
