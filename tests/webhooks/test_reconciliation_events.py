"""Reconciliation's event: a partner that uploads its record of a day hears, on its endpoint, the
result (lines, matches, breaks by kind), written in the transaction that reconciled the file; the
same file again is the first result and no new event, and a partner with no endpoint subscribed
hears nothing."""

from __future__ import annotations

from datetime import datetime

from clearinghouse.webhooks.worker import process_webhooks
from settlement.schemas import ReconciliationWebhook
from tests.builders.calls import buy, enrol
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.webhooks import add_endpoint, receiver, verified


def test_a_reconciled_file_tells_its_partner_the_result(world: World) -> None:
    shop, quiet = world.merchant(), world.merchant()
    client, quiet_client = world.client(shop), world.client(quiet)
    member = enrol(client)
    bought = {
        txn: buy(client, member, amount, txn=txn)["points"]
        for txn, amount in (("T-1", 10_000), ("T-2", 20_000), ("T-3", 5_000), ("T-4", 7_000))
    }
    today = business_today().isoformat()
    theirs = "\n".join(
        [
            "txn_id,type,amount_fen,points",
            f"T-1,purchase,10000,{bought['T-1']}",  # matches
            f"T-2,purchase,20001,{bought['T-2']}",  # amount differs
            f"T-3,purchase,5000,{bought['T-3'] + 1}",  # points differ
            "GHOST-9,purchase,1200,12",  # not ours
            # T-4 is missing from their file
        ]
    )
    upload = {"business_date": today, "csv": theirs + "\n"}
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, shop.id, hooks.url, ("reconciliation.completed",))
        add_endpoint(world.sessions, quiet.id, hooks.url, ("settlement.paid",))
        result = client.post("/v1/reconciliations", upload)
        # The same file again is the first result, and no second event.
        assert client.post("/v1/reconciliations", upload) == result
        quiet_client.post(
            "/v1/reconciliations",
            {"business_date": today, "csv": "txn_id,type,amount_fen,points\n"},
        )
        assert process_webhooks(world.sessions) == 1

    [got] = hooks.received
    body = verified(secret, got, ReconciliationWebhook)
    assert (body.type, body.version) == ("reconciliation.completed", 1)
    assert body.data.model_dump(mode="json", exclude={"uploaded_at"}) == {
        "reconciliation_id": result["id"],
        "business_date": today,
        "lines": 4,
        "matched": 1,
        "breaks": 4,
        "breaks_by_kind": {
            "missing_ours": 1,
            "missing_theirs": 1,
            "amount_differs": 1,
            "points_differ": 1,
            "duplicate": 0,
        },
    }
    assert body.data.uploaded_at == datetime.fromisoformat(result["uploaded_at"])
