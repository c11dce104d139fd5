"""The operators' webhooks page, on deliveries the worker really failed against a receiver on
127.0.0.1 answering 500: every partner's endpoints, the latest failures, and a failed delivery
redelivered from the page (CSRF-protected, operators only) and then delivered."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.database import unit_of_work
from clearinghouse.webhooks import service, worker
from clearinghouse.webhooks.worker import process_webhooks
from tests.builders.console import console_language
from tests.builders.databases import World
from tests.builders.users import person
from tests.builders.webhooks import add_endpoint, allow_local_receivers, emit, receiver
from tests.console.test_pages import Browser, signed_in, text_of

PAGE = "/console/webhooks"
REDELIVER = "/console/webhooks/redeliver"


@pytest.fixture(autouse=True)
def local_receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Webhooks may go to a receiver on 127.0.0.1, and the worker gives up on a delivery after
    its second attempt: with the real schedule the endpoint is disabled (after 3 days of
    failures) before a delivery's attempts are spent, and a disabled endpoint takes no
    redelivery."""
    allow_local_receivers(monkeypatch)
    monkeypatch.setattr(worker, "RETRY_DELAYS", worker.RETRY_DELAYS[:1])
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def table(html: str, table_id: str) -> str:
    """The text of one of the page's tables."""
    found = re.search(rf'<table id="{table_id}">.*?</table>', html, re.S)
    assert found is not None, f"no table {table_id}"
    return text_of(found.group(0))


def state_of(world: World, endpoint_id: str, event_id: str) -> str:
    with unit_of_work(world.sessions) as session:
        (delivery,) = [
            d for d in service.deliveries(session, None, endpoint_id) if d.event_id == event_id
        ]
    return delivery.state


def failed_delivery(world: World, manual_clock: clock.Manual, url: str) -> tuple[str, str, str]:
    """A partner whose endpoint answered both attempts of an event's delivery with a failure:
    the partner's id, the endpoint's and the event's."""
    partner = world.merchant()
    endpoint, _ = add_endpoint(world.sessions, partner.id, url)
    event_id = emit(world.sessions, partner.id, "settlement.computed")
    assert process_webhooks(world.sessions) == 0
    manual_clock.advance(worker.RETRY_DELAYS[0] * (1 + worker.JITTER))
    assert process_webhooks(world.sessions) == 0
    assert state_of(world, endpoint.id, event_id) == "failed"
    return partner.id, endpoint.id, event_id


def test_an_operator_sees_the_failure_and_redelivers_it(
    world: World, browser: Browser, manual_clock: clock.Manual
) -> None:
    quiet = world.merchant()
    gone, _ = add_endpoint(world.sessions, quiet.id, "http://127.0.0.1:9/hooks")
    with unit_of_work(world.sessions) as session:
        service.disable_endpoint(session, None, gone.id, "moved to a new host")
    with receiver(status=500, answer=b"receiver broken") as hooks:
        partner_id, endpoint_id, event_id = failed_delivery(world, manual_clock, hooks.url)

        operator = signed_in(browser, person(world.sessions, "operator"))
        page = operator.get(PAGE)
        assert page.status_code == 200
        assert f'href="{PAGE}"' in page.text
        endpoints = table(page.text, "endpoints")
        assert f"Partner {partner_id} {partner_id} {hooks.url} active" in endpoints
        assert f"{quiet.id} http://127.0.0.1:9/hooks disabled" in endpoints
        assert "moved to a new host" in endpoints
        failures = table(page.text, "failures")
        assert failures.count(event_id) == 2
        assert failures.count("HTTP 500") == 2
        assert "receiver broken" in failures
        assert "settlement.computed" in failures
        # Offered once, on the delivery's last attempt.
        assert page.text.count(f'name="event_id" value="{event_id}"') == 1
        assert "No delivery has been asked for again." in page.text

        done = operator.follow(operator.post(REDELIVER, endpoint_id=endpoint_id, event_id=event_id))
        assert "The event is due again now, with a fresh round of retries." in done.text
        redeliveries = table(done.text, "redeliveries")
        assert f"{event_id} pending 0" in redeliveries
        assert f'name="event_id" value="{event_id}"' not in done.text

        hooks.status = 200
        assert process_webhooks(world.sessions) == 1
    assert hooks.ids() == [event_id] * 3
    redeliveries = table(operator.get(PAGE).text, "redeliveries")
    assert f"{event_id} delivered 1 HTTP 200" in redeliveries


def test_the_page_is_in_chinese_when_the_console_is(world: World, browser: Browser) -> None:
    operator = signed_in(browser, person(world.sessions, "operator"))
    with console_language("zh_CN"):
        page = operator.get(PAGE)
    assert "<h1>Webhook 通知</h1>" in page.text
    assert "尚无合作方登记 Webhook 接收端点。" in page.text


@pytest.mark.parametrize("role", ["finance", "approver", "auditor"])
def test_only_operators_see_the_page(world: World, browser: Browser, role: str) -> None:
    console = signed_in(browser, person(world.sessions, role))
    refused = console.get(PAGE)
    assert refused.status_code == 403
    assert "this needs the role operator" in refused.text
    assert f'href="{PAGE}"' not in console.follow(console.get("/console/")).text


def test_a_redelivery_needs_an_operators_form_token(
    world: World, browser: Browser, manual_clock: clock.Manual
) -> None:
    with receiver(status=500) as hooks:
        _, endpoint_id, event_id = failed_delivery(world, manual_clock, hooks.url)
    operator = signed_in(browser, person(world.sessions, "operator"))
    operator.get(PAGE)
    for token in ("", "forged"):
        refused = operator.post(
            REDELIVER, endpoint_id=endpoint_id, event_id=event_id, csrf_token=token
        )
        assert refused.status_code == 403
        assert "The form has expired" in refused.text
    finance = signed_in(browser, person(world.sessions, "finance"))
    finance.get("/console/settlements")
    refused = finance.post(REDELIVER, endpoint_id=endpoint_id, event_id=event_id)
    assert refused.status_code == 403
    assert "this needs the role operator" in refused.text
    assert state_of(world, endpoint_id, event_id) == "failed"
