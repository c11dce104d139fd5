"""`clearinghouse webhook ...` as an operator runs it."""

from __future__ import annotations

from clearinghouse.webhooks import service
from tests.builders.databases import World
from tests.builders.webhooks import emit
from tests.cli_fixtures import Cli


def test_an_operator_adds_rotates_lists_disables_and_enables_an_endpoint(world: World) -> None:
    partner = world.merchant()
    cli = Cli(world.url)
    added = cli.ok("webhook", "add", partner.id, "https://hooks.example.com/ch")
    endpoint_id = added.split()[0]
    # Every event type but those sent only when named.
    assert f"[{', '.join(sorted(service.USUAL_EVENT_TYPES))}]" in added
    assert "points.earned" not in added
    assert "secret: whsec_" in added
    rotated = cli.ok("webhook", "rotate", endpoint_id, "--overlap-hours", "2")
    assert rotated.startswith("secret: whsec_")
    assert "signs too until" in rotated
    assert f"{endpoint_id} active: https://hooks.example.com/ch" in cli.ok(
        "webhook", "list", "--partner", partner.id
    )
    event_id = emit(world.sessions, partner.id, "settlement.paid")
    assert f"{event_id} (settlement.paid) to {endpoint_id}: pending" in cli.ok(
        "webhook", "redeliver", endpoint_id, event_id
    )
    assert "no event msg_NOPE" in cli.refused("webhook", "redeliver", endpoint_id, "msg_NOPE")
    assert f"{endpoint_id} disabled (moved away)" in cli.ok(
        "webhook", "disable", endpoint_id, "--reason", "moved away"
    )
    assert f"{endpoint_id} active: https://hooks.example.com/ch" in cli.ok(
        "webhook", "enable", endpoint_id
    )
    assert "no webhook endpoint WNOPE" in cli.refused("webhook", "enable", "WNOPE")
    assert "10.0.0.1" in cli.refused("webhook", "add", partner.id, "https://10.0.0.1/ch")
    assert "unknown event types points.sold" in cli.refused(
        "webhook", "add", partner.id, "https://hooks.example.com/ch", "--event", "points.sold"
    )
    assert "no webhook endpoint WNOPE" in cli.refused("webhook", "rotate", "WNOPE")


def test_an_operator_sets_how_far_ahead_a_partner_hears_of_points_expiring(world: World) -> None:
    partner = world.merchant()
    cli = Cli(world.url)
    assert "hears of points expiring 30 days ahead" in cli.ok(
        "partner", "expiring-notice", partner.id, "30"
    )
    assert "1 to 90" in cli.refused("partner", "expiring-notice", partner.id, "91")
