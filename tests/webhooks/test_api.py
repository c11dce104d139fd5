"""The webhook endpoints' partner API through real signed requests: register (the secret shown
once), list, read, change, rotate, disable and enable again; follow deliveries and ask for one
again, delivered with the same webhook-id; a store's key refused; internal URLs refused; another
partner's endpoint unknown."""

from __future__ import annotations

from standardwebhooks import Webhook

from clearinghouse.webhooks.worker import process_webhooks
from partners.auth import KeyScope
from tests.builders.databases import World
from tests.builders.http import client_for, refused
from tests.builders.partners import add_key
from tests.builders.webhooks import emit, receiver, unheard

PATH = "/v1/webhook-endpoints"


def test_a_partner_manages_its_endpoints_and_redelivers_an_event(world: World) -> None:
    partner = world.merchant()
    client = world.client(partner)
    with receiver() as hooks:
        created = client.post(PATH, {"url": hooks.url, "event_types": ["settlement.paid"]})
        endpoint_id, secret = created["endpoint_id"], created["secret"]
        assert secret.startswith("whsec_")
        assert (created["status"], created["event_types"]) == ("active", ["settlement.paid"])
        shown = client.get(f"{PATH}/{endpoint_id}")
        assert "secret" not in shown
        assert [e["endpoint_id"] for e in client.get(PATH)] == [endpoint_id]

        changed = client.put(
            f"{PATH}/{endpoint_id}", {"event_types": ["settlement.paid", "settlement.computed"]}
        )
        assert changed["event_types"] == ["settlement.computed", "settlement.paid"]
        assert changed["url"] == hooks.url

        event_id = emit(world.sessions, partner.id, "settlement.computed")
        assert process_webhooks(world.sessions) == 1
        [delivery] = client.get(f"{PATH}/{endpoint_id}/deliveries")
        assert delivery["event_id"] == event_id
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
            "delivered",
            1,
            200,
        )

        rotated = client.post(f"{PATH}/{endpoint_id}/rotate-secret", {"overlap_hours": 1})
        again = client.post(f"{PATH}/{endpoint_id}/deliveries/{event_id}/redeliver", None)
        assert (again["state"], again["attempts"]) == ("pending", 0)
        assert process_webhooks(world.sessions) == 1
        assert hooks.ids() == [event_id, event_id]
        for key in (secret, rotated["secret"]):
            Webhook(key).verify(hooks.received[1].body, hooks.received[1].headers)

        disabled = client.post(f"{PATH}/{endpoint_id}/disable", None)
        assert (disabled["status"], disabled["disabled_reason"]) == (
            "disabled",
            "disabled by the partner",
        )
        # A disabled endpoint hears of nothing: with no other endpoint, no event is written.
        assert unheard(world.sessions, partner.id, "settlement.paid")
        assert process_webhooks(world.sessions) == 0
        refused(
            404,
            "webhook_delivery_not_found",
            client.post,
            f"{PATH}/{endpoint_id}/deliveries/{event_id}/redeliver",
            None,
        )

        # Enabled again, it hears of what is recorded from now on, and may ask for any event
        # again.
        enabled = client.post(f"{PATH}/{endpoint_id}/enable", None)
        assert (enabled["status"], enabled["disabled_reason"]) == ("active", None)
        assert client.post(f"{PATH}/{endpoint_id}/enable", None) == enabled
        later = emit(world.sessions, partner.id, "settlement.paid")
        client.post(f"{PATH}/{endpoint_id}/deliveries/{event_id}/redeliver", None)
        assert process_webhooks(world.sessions) == 2
        assert sorted(hooks.ids()[2:]) == sorted([event_id, later])


def test_internal_urls_and_unknown_events_are_refused(world: World) -> None:
    client = world.client(world.merchant())
    for url in ("https://10.0.0.1/hooks", "https://169.254.169.254/", "http://example.com/h"):
        refused(
            422,
            "webhook_url_refused",
            client.post,
            PATH,
            {"url": url, "event_types": ["settlement.paid"]},
        )
    refused(
        422,
        "validation_error",
        client.post,
        PATH,
        {"url": "https://example.com/h", "event_types": ["points.sold"]},
    )


def test_a_store_key_is_refused_and_another_partners_endpoint_is_unknown(
    world: World,
) -> None:
    partner, other = world.merchant(), world.merchant()
    store_key = add_key(world.sessions, partner.id, scope=KeyScope(partner.store_id))
    till = client_for(store_key, world.http)
    refused(403, "key_scope", till.get, PATH)
    refused(
        403,
        "key_scope",
        till.post,
        PATH,
        {"url": "https://example.com/h", "event_types": ["settlement.paid"]},
    )
    with receiver() as hooks:
        mine = world.client(partner).post(
            PATH, {"url": hooks.url, "event_types": ["settlement.paid"]}
        )
    theirs = world.client(other)
    assert theirs.get(PATH) == []
    refused(404, "webhook_endpoint_not_found", theirs.get, f"{PATH}/{mine['endpoint_id']}")
    refused(
        404,
        "webhook_endpoint_not_found",
        theirs.post,
        f"{PATH}/{mine['endpoint_id']}/disable",
        None,
    )
