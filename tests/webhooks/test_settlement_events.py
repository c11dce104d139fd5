"""Settlement's events: each partner in a run hears, on its own endpoint, that the run was
computed, approved and paid, with its own line, in the transaction of each change."""

from __future__ import annotations

import json
from typing import Any

from clearinghouse.webhooks.worker import process_webhooks
from settlement.schemas import SettlementWebhook
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.settlement import a_day_of_traffic, after_cutoff, settle_after_cutoff
from tests.builders.webhooks import Received, add_endpoint, receiver, verified

STATES = ("computed", "approved", "paid")


def _verified(secret: str, got: Received) -> dict[str, Any]:
    verified(secret, got, SettlementWebhook)
    body: dict[str, Any] = json.loads(got.body)
    return body


def test_each_partner_hears_of_its_run_computed_approved_and_paid(world: World) -> None:
    traffic = a_day_of_traffic(world)
    today = business_today()
    path = f"/finance/settlements/{today}"
    with receiver() as payer_hooks, receiver() as receiver_hooks:
        _, payer_secret = add_endpoint(world.sessions, traffic.payer.id, payer_hooks.url)
        _, receiver_secret = add_endpoint(
            world.sessions, traffic.receiver.id, receiver_hooks.url, ("settlement.paid",)
        )
        [run] = settle_after_cutoff(world.sessions, today)
        with after_cutoff(today):
            assert process_webhooks(world.sessions) == 1
        _, as_alice = world.finance("finance")
        _, as_bob = world.finance("approver")
        for headers in (as_alice, as_bob):
            assert world.http.post(f"{path}/approve", headers=headers).status_code == 200
        paid = world.http.post(f"{path}/paid", json={"bank_reference": "B-7"}, headers=as_alice)
        assert paid.status_code == 200, paid.text
        assert process_webhooks(world.sessions) == 3
    # Approval and payment were delivered at once: in either order (docs/webhooks.md).
    events = sorted(
        (_verified(payer_secret, got) for got in payer_hooks.received),
        key=lambda event: STATES.index(event["data"]["state"]),
    )
    assert [(e["type"], e["version"], e["data"]["state"]) for e in events] == [
        ("settlement.computed", 1, "computed"),
        ("settlement.approved", 1, "approved"),
        ("settlement.paid", 1, "paid"),
    ]
    [payer_line] = [line for line in run.lines if line.partner_id == traffic.payer.id]
    for event in events:
        data = event["data"]
        assert data["business_date"] == today.isoformat()
        assert data["line"]["partner_id"] == traffic.payer.id
        assert data["line"]["issued_fen"] == traffic.issued_fen
        assert data["line"]["net_fen"] == payer_line.net_fen
        assert (data["pays_fen"], data["receives_fen"]) == (max(payer_line.net_fen, 0), 0)
    assert events[-1]["data"]["bank_reference"] == "B-7"
    # The receiver subscribed to payments alone, and sees its own line only.
    [received] = [_verified(receiver_secret, got) for got in receiver_hooks.received]
    assert received["type"] == "settlement.paid"
    assert received["data"]["line"]["partner_id"] == traffic.receiver.id
    assert received["data"]["line"]["redeemed_fen"] == traffic.redeemed_fen
    assert received["data"]["receives_fen"] == -received["data"]["line"]["net_fen"] > 0
