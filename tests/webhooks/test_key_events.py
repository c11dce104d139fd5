"""Keys' notice: a partner retiring an API key hears, signed, on its endpoint, once the key's
deadline is within 7 days, once per key and deadline however often the daily job runs, with the
keys that keep working after it; a partner with no endpoint subscribed hears nothing. Time moves
on the manual clock alone."""

from __future__ import annotations

from datetime import datetime, timedelta

from clearinghouse import clock
from clearinghouse.database import Tx, unit_of_work
from clearinghouse.webhooks.notices import notify_retiring_keys
from clearinghouse.webhooks.schemas import KeyRetiringWebhook
from clearinghouse.webhooks.worker import process_webhooks
from partners.auth import KeyScope
from tests.builders.databases import World
from tests.builders.partners import add_key
from tests.builders.webhooks import add_endpoint, receiver, verified


def test_a_retiring_key_is_noticed_once_within_a_week_of_its_deadline(
    world: World, manual_clock: clock.Manual
) -> None:
    partner, quiet = world.merchant(), world.merchant()
    client, quiet_client = world.client(partner), world.client(quiet)
    successor = add_key(world.sessions, partner.id)
    till = add_key(world.sessions, partner.id, scope=KeyScope(partner.store_id, "till-1"))
    add_key(world.sessions, quiet.id)
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, partner.id, hooks.url, ("key.retiring",))
        add_endpoint(world.sessions, quiet.id, hooks.url, ("settlement.paid",))
        # The partner's first key for all stores in 10 days, its till's key in 3.
        first = client.post(f"/v1/keys/{partner.key_id}/retire", {"days": 10})
        soon = client.post(f"/v1/keys/{till.key_id}/retire", {"days": 3})
        quiet_client.post(f"/v1/keys/{quiet.key_id}/retire", {"days": 3})

        assert notify_retiring_keys(world.sessions) == 1  # the till's key
        assert notify_retiring_keys(world.sessions) == 0
        manual_clock.advance(days=2)
        assert notify_retiring_keys(world.sessions) == 0
        manual_clock.advance(days=2)  # the till's key is gone; the first is 6 days off
        assert notify_retiring_keys(world.sessions) == 1
        assert notify_retiring_keys(world.sessions) == 0
        assert process_webhooks(world.sessions) == 2

    notices = sorted(
        (verified(secret, got, KeyRetiringWebhook) for got in hooks.received),
        key=lambda body: body.sequence,
    )
    assert [(body.type, body.version) for body in notices] == [("key.retiring", 1)] * 2
    remaining = [{"key_id": successor.key_id, "store_id": None, "terminal_id": None}]
    assert [body.data.model_dump(mode="json", exclude={"retires_at"}) for body in notices] == [
        {
            "key_id": till.key_id,
            "store_id": partner.store_id,
            "terminal_id": "till-1",
            "remaining_keys": remaining,
        },
        {
            "key_id": partner.key_id,
            "store_id": None,
            "terminal_id": None,
            "remaining_keys": remaining,
        },
    ]
    assert [body.data.retires_at for body in notices] == [
        datetime.fromisoformat(soon["retire_at"]),
        datetime.fromisoformat(first["retire_at"]),
    ]
    assert notices[1].data.retires_at - notices[0].data.retires_at == timedelta(days=7)
    with unit_of_work(world.sessions) as session:
        assert not Tx.of(session).scalar(
            "SELECT count(*) FROM webhook_events WHERE partner_id = %s", (quiet.id,)
        )
