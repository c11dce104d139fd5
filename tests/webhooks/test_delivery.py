"""The webhook worker against a real receiver on 127.0.0.1: events arrive signed and verify with
the independent Standard Webhooks library; a receiver down gets them once it recovers; a crash
between claim and record sends the same webhook-id again; a slow or huge answer holds up only its
own delivery; a rotation's overlap signs with both secrets; an endpoint failing for 3 days is
disabled; internal addresses are refused; the docs' worked example signs as both implementations do.
Time moves on the manual clock alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.database import unit_of_work
from clearinghouse.webhooks import service, signing, targets, worker
from clearinghouse.webhooks.worker import process_webhooks
from tests.builders.databases import World
from tests.builders.webhooks import (
    Receiver,
    add_endpoint,
    allow_local_receivers,
    attempts_of,
    emit,
    receiver,
    unheard,
)


def test_an_event_arrives_signed_and_verifies_with_the_standard_library(
    world: World, manual_clock: clock.Manual
) -> None:
    partner = world.merchant()
    with receiver() as hooks:
        _, secret = add_endpoint(world.sessions, partner.id, hooks.url)
        assert secret.startswith("whsec_")
        event_id = emit(world.sessions, partner.id, "settlement.paid", {"paid_fen": 1200})
        assert process_webhooks(world.sessions) == 1
    [got] = hooks.received
    assert got.headers["webhook-id"] == event_id
    assert got.headers["content-type"] == "application/json"
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload == {
        "type": "settlement.paid",
        "version": 1,
        "timestamp": manual_clock().isoformat(),
        "sequence": payload["sequence"],
        "data": {"paid_fen": 1200},
    }
    assert isinstance(payload["sequence"], int)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body.replace(b"1200", b"9200"), got.headers)
    [attempt] = attempts_of(world.sessions, event_id)
    assert (attempt.status, attempt.response, attempt.state) == (200, "ok", "delivered")


def test_only_subscribed_active_endpoints_of_the_partner_get_an_event(world: World) -> None:
    partner, other = world.merchant(), world.merchant()
    with receiver() as mine, receiver() as theirs, receiver() as paid_only:
        add_endpoint(world.sessions, partner.id, mine.url)
        add_endpoint(world.sessions, other.id, theirs.url)
        add_endpoint(world.sessions, partner.id, paid_only.url, ("settlement.paid",))
        emit(world.sessions, partner.id, "settlement.computed")
        assert process_webhooks(world.sessions) == 1
    assert (len(mine.received), len(theirs.received), len(paid_only.received)) == (1, 0, 0)


def test_a_receiver_down_gets_the_event_after_it_recovers(
    world: World, manual_clock: clock.Manual
) -> None:
    partner = world.merchant()
    hooks = Receiver()
    hooks.start()
    hooks.stop()  # down, its port kept
    add_endpoint(world.sessions, partner.id, hooks.url)
    event_id = emit(world.sessions, partner.id)
    assert process_webhooks(world.sessions) == 0
    assert process_webhooks(world.sessions) == 0  # not due again yet
    manual_clock.advance(seconds=7)
    assert process_webhooks(world.sessions) == 0
    hooks.start()
    try:
        assert process_webhooks(world.sessions) == 0  # the next try is a minute on
        manual_clock.advance(minutes=2)
        assert process_webhooks(world.sessions) == 1
    finally:
        hooks.stop()
    assert hooks.ids() == [event_id]
    tried = attempts_of(world.sessions, event_id)
    assert [a.status for a in tried] == [None, None, 200]
    assert all("ConnectError" in a.error for a in tried[:2])
    assert (tried[-1].state, tried[-1].attempts) == ("delivered", 3)


def test_a_crash_between_claim_and_record_delivers_again_with_the_same_id(
    world: World, manual_clock: clock.Manual
) -> None:
    partner = world.merchant()
    with receiver() as hooks:
        add_endpoint(world.sessions, partner.id, hooks.url)
        event_id = emit(world.sessions, partner.id)
        [claimed] = worker.claim(world.sessions)
        with httpx.Client() as client:
            assert worker.post(client, claimed).delivered
        # The worker dies here: the attempt is never recorded.
        assert process_webhooks(world.sessions) == 0  # claimed: not due until the lease ends
        manual_clock.advance(worker.LEASE)
        assert process_webhooks(world.sessions) == 1
        assert process_webhooks(world.sessions) == 0
    assert hooks.ids() == [event_id, event_id]
    assert hooks.received[0].body == hooks.received[1].body


def test_a_slow_receiver_does_not_stall_another_partners_delivery(world: World) -> None:
    slow_partner, partner = world.merchant(), world.merchant()
    with receiver(delay=3.0) as slow, receiver() as fast:
        add_endpoint(world.sessions, slow_partner.id, slow.url)
        add_endpoint(world.sessions, partner.id, fast.url)
        slow_event = emit(world.sessions, slow_partner.id)
        fast_event = emit(world.sessions, partner.id)
        assert process_webhooks(world.sessions, timeout=1.0) == 1
        # Both were posted while the slow one was still thinking.
        assert fast.received[0].at - slow.received[0].at < 1.0
    [timed_out] = attempts_of(world.sessions, slow_event)
    assert "Timeout" in timed_out.error
    assert 900 <= timed_out.latency_ms < 2500
    assert timed_out.state == "pending"
    [delivered] = attempts_of(world.sessions, fast_event)
    assert delivered.latency_ms < 900


def test_a_claim_takes_a_few_deliveries_of_one_endpoint_and_leaves_room_for_others(
    world: World,
) -> None:
    busy, partner = world.merchant(), world.merchant()
    with receiver() as busy_hooks, receiver() as hooks:
        add_endpoint(world.sessions, busy.id, busy_hooks.url)
        add_endpoint(world.sessions, partner.id, hooks.url)
        for _ in range(worker.PER_ENDPOINT + 3):
            emit(world.sessions, busy.id)
        other = emit(world.sessions, partner.id)
        claimed = worker.claim(world.sessions)
        assert len(claimed) == worker.PER_ENDPOINT + 1
        assert other in {c.event_id for c in claimed}
        # The rest of the busy one's wait for the next claim.
        assert len(worker.claim(world.sessions)) == 3


def test_a_run_claims_again_while_deliveries_are_due(world: World) -> None:
    """A busy endpoint gets its whole backlog in one run of the worker, PER_ENDPOINT a claim,
    not PER_ENDPOINT a run."""
    busy = world.merchant()
    with receiver() as hooks:
        add_endpoint(world.sessions, busy.id, hooks.url)
        events = [emit(world.sessions, busy.id) for _ in range(worker.PER_ENDPOINT * 3 + 1)]
        assert process_webhooks(world.sessions) == len(events)
    assert sorted(hooks.ids()) == sorted(events)


def test_a_huge_answer_is_read_no_further_than_the_cap(world: World) -> None:
    partner = world.merchant()
    with receiver(answer=b"x" * (5 * 1024 * 1024)) as hooks:
        add_endpoint(world.sessions, partner.id, hooks.url)
        event_id = emit(world.sessions, partner.id)
        assert process_webhooks(world.sessions) == 1
    [attempt] = attempts_of(world.sessions, event_id)
    assert attempt.response == "x" * worker.EXCERPT_BYTES


def test_a_rotation_signs_with_both_secrets_until_the_overlap_ends(world: World) -> None:
    partner = world.merchant()
    with receiver() as hooks:
        endpoint, first = add_endpoint(world.sessions, partner.id, hooks.url)
        with unit_of_work(world.sessions) as session:
            second, _ = service.rotate_secret(session, partner.id, endpoint.id, timedelta(hours=1))
        emit(world.sessions, partner.id)
        process_webhooks(world.sessions)
        with unit_of_work(world.sessions) as session:
            third, _ = service.rotate_secret(session, partner.id, endpoint.id, timedelta(0))
        emit(world.sessions, partner.id)
        process_webhooks(world.sessions)
    overlapping, after = hooks.received
    assert len(overlapping.headers["webhook-signature"].split(" ")) == 2
    for secret in (first, second):
        Webhook(secret).verify(overlapping.body, overlapping.headers)
    # No overlap: the third replaces every earlier secret at once.
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(third).verify(after.body, after.headers)
    for secret in (first, second):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(after.body, after.headers)


def test_an_endpoint_failing_for_three_days_is_disabled(
    world: World, manual_clock: clock.Manual
) -> None:
    partner = world.merchant()
    started = manual_clock()
    with receiver(status=500, answer=b"broken") as hooks:
        endpoint, _ = add_endpoint(world.sessions, partner.id, hooks.url)
        event_id = emit(world.sessions, partner.id)
        while True:
            process_webhooks(world.sessions)
            tried = attempts_of(world.sessions, event_id)
            if tried[-1].state != "pending":
                break
            manual_clock.set(tried[-1].next_attempt_at)
    assert len(hooks.received) == len(tried) <= len(worker.RETRY_DELAYS) + 1
    assert sum(worker.RETRY_DELAYS, timedelta()) >= worker.DISABLE_AFTER
    assert tried[0].attempted_at == started
    assert tried[-1].attempted_at - started >= worker.DISABLE_AFTER
    for delay, (before, after) in zip(worker.RETRY_DELAYS, pairwise(tried), strict=False):
        assert delay <= after.attempted_at - before.attempted_at <= delay * (1 + worker.JITTER)
    with unit_of_work(world.sessions) as session:
        disabled = service.get_endpoint(session, partner.id, endpoint.id)
    assert disabled.status == "disabled"
    assert disabled.disabled_reason is not None
    assert "HTTP 500" in disabled.disabled_reason
    assert tried[-1].state == "failed"
    # A disabled endpoint gets no new event.
    assert unheard(world.sessions, partner.id, "settlement.computed")
    assert process_webhooks(world.sessions) == 0

    # Once the receiver is fixed, enabled again: a fresh three days before failures count.
    with unit_of_work(world.sessions) as session:
        enabled = service.enable_endpoint(session, partner.id, endpoint.id)
    assert (enabled.status, enabled.disabled_reason, enabled.failing_since) == (
        "active",
        None,
        None,
    )
    with receiver() as fixed:
        with unit_of_work(world.sessions) as session:
            service.update_endpoint(session, partner.id, endpoint.id, fixed.url, None)
        later = emit(world.sessions, partner.id)
        assert process_webhooks(world.sessions) == 1
        assert fixed.ids() == [later]


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://localhost/hooks",
        "https://0.0.0.0/hooks",
        "http://hooks.example.com/hooks",
        "ftp://hooks.example.com/hooks",
        "https://user:pass@hooks.example.com/hooks",
    ],
)
def test_internal_and_plain_targets_are_refused_at_registration(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARINGHOUSE_WEBHOOKS_DEV_HTTP", "false")
    get_settings.cache_clear()
    try:
        with pytest.raises(targets.UnsafeUrl):
            targets.check_url(url, get_settings())
        with pytest.raises(targets.UnsafeUrl):
            targets.resolve(url, get_settings())
    finally:
        get_settings.cache_clear()


def test_a_private_address_needs_the_operators_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    allow_local_receivers(monkeypatch, private=True)
    try:
        assert targets.check_url("https://10.0.0.1/hooks", get_settings())
        assert targets.check_url("http://127.0.0.1:8080/hooks", get_settings())
        with pytest.raises(targets.UnsafeUrl):
            targets.check_url("http://10.0.0.1/hooks", get_settings())  # https still
    finally:
        get_settings.cache_clear()


def test_a_name_that_resolves_inward_is_refused_at_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = world.merchant()
    with receiver() as hooks:
        add_endpoint(world.sessions, partner.id, hooks.url.replace("127.0.0.1", "localhost"))
        event_id = emit(world.sessions, partner.id)
        # The operator takes back the development setting: the name now resolves to a refused
        # address at delivery.
        monkeypatch.setenv("CLEARINGHOUSE_WEBHOOKS_DEV_HTTP", "false")
        get_settings.cache_clear()
        assert process_webhooks(world.sessions) == 0
    assert hooks.received == []
    [refused] = attempts_of(world.sessions, event_id)
    assert "https" in refused.error


def test_the_body_is_the_stored_payload(world: World) -> None:
    partner = world.merchant()
    with receiver() as hooks:
        add_endpoint(world.sessions, partner.id, hooks.url)
        emit(world.sessions, partner.id, "settlement.approved", {"business_date": "2026-11-30"})
        process_webhooks(world.sessions)
    body = json.loads(hooks.received[0].body)
    assert (body["type"], body["data"]) == ("settlement.approved", {"business_date": "2026-11-30"})


def test_the_worked_example_in_the_docs_is_what_both_implementations_sign() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    example = guide.split("```python\nimport base64\n", 1)[1].split("```", 1)[0]
    exec("import base64\n" + example, {})  # its own asserts hold
    secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"
    body = (
        '{"data":{"business_date":"2026-11-30","state":"paid"},'
        '"type":"settlement.paid","version":1,"timestamp":"2026-12-01T02:00:00+00:00"}'
    )
    at = datetime.fromtimestamp(1764554400, UTC)
    ours = signing.headers("msg_2F8K1Q9ZJ7W3XH5N0C6VDMTBRA", at, body.encode(), [secret])
    theirs = Webhook(secret).sign("msg_2F8K1Q9ZJ7W3XH5N0C6VDMTBRA", at, body)
    assert ours["webhook-signature"] == theirs
    assert f"webhook-signature: {theirs}" in guide
