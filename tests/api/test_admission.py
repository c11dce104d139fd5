"""Admission: a process serves a few requests at once; more wait their turn, first come first
served; when the queue is full, or a request has waited too long, the answer is 503 with
Retry-After, and nothing of the request is done."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.app import create_app
from partners.client import PartnerClient
from partners.gate import Admission, Limits, Saturated
from tests.api.test_idempotency import waiting_on_locks
from tests.builders.calls import link_body
from tests.builders.http import assert_problem, client_for, own_client, row_counts
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner


def test_waiters_are_served_first_come_first_served_and_time_out_when_saturated() -> None:
    async def scenario() -> list[str]:
        admission = Admission(capacity=1, queue=2, wait=0.5)
        served: list[str] = []

        async def request(name: str, hold: float) -> None:
            try:
                async with admission.slot():
                    served.append(name)
                    await asyncio.sleep(hold)
            except Saturated:
                served.append(f"{name}: busy")

        first = asyncio.create_task(request("first", 0.2))
        await asyncio.sleep(0)
        queued = [asyncio.create_task(request(name, 0)) for name in ("second", "third")]
        await asyncio.sleep(0)
        await request("fourth", 0)  # the queue is full: refused at once
        await asyncio.gather(first, *queued)
        slow = asyncio.create_task(request("slow", 1.0))
        await asyncio.sleep(0)
        await request("late", 0)  # waits longer than `wait` for the slow one
        await slow
        return served

    assert asyncio.run(scenario()) == [
        "first",
        "fourth: busy",
        "second",
        "third",
        "slow",
        "late: busy",
    ]


def test_a_saturated_server_answers_503_with_retry_after_and_does_nothing(
    sessions: sessionmaker[Session], partner: ApiPartner
) -> None:
    """One request at a time and no queue: while one runs, the next is refused at once."""
    app = create_app(sessions, limits=Limits(partner_requests=1, queue=0, wait_seconds=30))
    http = own_client(app)
    client: PartnerClient = client_for(partner, http)
    held, refused, key = link_body(), link_body(), unique_id("k")
    before = row_counts(sessions)
    # The admitted request waits inside its work (linking a customer takes this lock).
    with sessions() as blocker, blocker.begin():
        blocker.execute(
            select(
                func.pg_advisory_xact_lock(func.hashtext(f"{partner.id}:{held['customer_ref']}"))
            )
        )
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(http.send, client.build("POST", "/v1/members", body=held))
            waiting_on_locks(sessions, 1)
            busy = http.send(client.build("POST", "/v1/members", body=refused, idempotency_key=key))
            blocker.rollback()
            admitted = first.result(timeout=30)

    problem = assert_problem(busy, 503, "unavailable")
    assert busy.headers["retry-after"] == "1"
    assert problem["detail"]
    assert admitted.status_code == 201
    after = row_counts(sessions)
    assert after["member_links"] == before["member_links"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1

    # Nothing of it was done: the retry, with the same key, runs as a first request.
    retry = http.send(client.build("POST", "/v1/members", body=refused, idempotency_key=key))
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
