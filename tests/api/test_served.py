"""The real server over TCP with several workers: a burst of 200 concurrent signed requests, a
server killed between a request's entry and its answer, changes to rates, keys and rule sets
seen by every worker at once, and the periodic jobs run by one worker at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.database import make_engine, session_factory
from clearinghouse.jobs import LEADER_NAME
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import wallet
from clearinghouse.points.tables import holds, purchases
from clearinghouse.rules import policy
from partners import keys, rates
from partners.client import PartnerClient
from partners.tables import request_nonces
from tests.api.test_server import free_port, serve, stop, wait_until_up
from tests.builders.calls import enrol, purchase_body
from tests.builders.fraud import publish
from tests.builders.http import client_for
from tests.builders.partners import ApiPartner, make_partner
from tests.conftest import Databases

DEADLINE_SECONDS = 60.0


@dataclass
class Served:
    url: str
    base_url: str
    sessions: sessionmaker[Session]
    log: Path
    options: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = serve(
            int(self.base_url.rsplit(":", 1)[1]), self.url, self.log, *self.options
        )
        wait_until_up(self.process, self.base_url, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def client(self, partner: ApiPartner) -> PartnerClient:
        """The partner's client on a kept-alive connection of its own."""
        return client_for(partner, self.http(), self.base_url)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0)

    def scalar(self, statement: Any) -> Any:
        with self.sessions() as session:
            return session.execute(statement).scalar_one()


@pytest.fixture
def served(databases: Databases, tmp_path: Path) -> Iterator[Served]:
    """`clearinghouse serve --workers 2` on a database of its own."""
    url = databases.create()
    engine = make_engine(url, pool_size=4)
    port = free_port()
    it = Served(
        url,
        f"http://127.0.0.1:{port}",
        session_factory(engine),
        tmp_path / "serve.log",
        ("--workers", "2"),
    )
    it.start()
    try:
        yield it
    finally:
        it.stop()
        engine.dispose()


def test_two_hundred_concurrent_requests_are_answered_and_the_books_match_the_answers(
    served: Served,
) -> None:
    """150 purchases for 50 members and 50 redemptions racing on one member's 2,000 points, all
    at once: every answer is a 2xx or a clear 4xx, within the deadline, and what was saved is
    exactly what the 2xx answers said."""
    partner = make_partner(served.sessions)
    # The burst's own redemptions must not trip the velocity rule: that is not what is tested.
    publish(served.sessions, partner.id, redemptions_per_hour=1_000, points_per_day=10**9)
    client = served.client(partner)
    members = [enrol(client) for _ in range(50)]
    spender = enrol(client)
    funded = client.post("/v1/purchases", purchase_body(spender, 100_000))["points"]
    assert funded >= 2_000
    requests = [
        client.build("POST", "/v1/purchases", body=purchase_body(members[i % 50], 1_000 + i))
        for i in range(150)
    ] + [
        client.build("POST", "/v1/redemptions", body={"member_id": spender, "points": 100})
        for _ in range(50)
    ]

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests))
        async with httpx.AsyncClient(timeout=DEADLINE_SECONDS, limits=limits) as http:
            return await asyncio.gather(*(http.send(request) for request in requests))

    started = time.monotonic()
    answers = asyncio.run(burst())
    assert time.monotonic() - started < DEADLINE_SECONDS

    statuses = Counter(answer.status_code for answer in answers)
    assert all(200 <= status < 500 for status in statuses), statuses
    refused = [answer.json()["code"] for answer in answers if answer.status_code >= 400]
    assert set(refused) <= {"insufficient_balance"}, Counter(refused)
    bought = [answer.json() for answer in answers[:150] if answer.status_code == 201]
    redeemed = [answer.json() for answer in answers[150:] if answer.status_code == 201]
    assert len(bought) == 150
    assert len(redeemed) == min(50, funded // 100)
    saved = served.scalar(select(func.count()).where(purchases.c.partner_id == partner.id))
    assert saved == 150 + 1  # and the funding purchase
    captured = served.scalar(
        select(func.count()).where(holds.c.member_id == spender, holds.c.state == "captured")
    )
    assert captured == len(redeemed)
    with served.sessions() as session:
        left = ledger.balance(session, wallet.available_account(spender))
        assert left == funded - 100 * len(redeemed) >= 0
        assert ledger.check_consistency(session) == []


def waiting_backend(served: Served, query_start: str) -> int:
    """The server backend waiting on a lock in a statement starting so; its pid."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        found = served.scalar(
            text(
                "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname ="
                " current_database() AND wait_event_type = 'Lock' AND query LIKE :start"
            ).bindparams(start=query_start + "%")
        )
        if found:
            return int(found)
        time.sleep(0.05)
    pytest.fail(f"no request waited in {query_start!r}:\n{served.log.read_text()}")


def _sent(client: PartnerClient, request: httpx.Request) -> object:
    """The answer, or the transport's failure."""
    try:
        return client.send(request)
    except httpx.TransportError as failure:
        return failure


def test_a_server_killed_between_the_entry_and_the_answer_leaves_nothing_and_the_retry_runs(
    served: Served,
) -> None:
    partner = make_partner(served.sessions)
    client = served.client(partner)
    member_id = enrol(client)
    body = purchase_body(member_id, 52_000)
    first = client.build("POST", "/v1/purchases", body=body, idempotency_key="crash-1")
    nonce = first.headers["signature-input"].split('nonce="', 1)[1].split('"', 1)[0]
    with served.sessions() as blocker, blocker.begin():
        # Answers wait behind this lock: the request has written its entry, lot and purchase.
        blocker.execute(text("LOCK TABLE idempotency_records IN EXCLUSIVE MODE"))
        outcomes: list[object] = []
        sent = threading.Thread(target=lambda: outcomes.append(_sent(client, first)), daemon=True)
        sent.start()
        backend = waiting_backend(served, "INSERT INTO idempotency_records")
        assert served.process is not None
        os.killpg(served.process.pid, signal.SIGKILL)
        served.process.wait()
        sent.join(timeout=DEADLINE_SECONDS)
    assert [type(outcome) for outcome in outcomes] == [httpx.RemoteProtocolError], outcomes
    # The lock is gone; the dead client's backend finds no one to commit for, and rolls back.
    deadline = time.monotonic() + DEADLINE_SECONDS
    while served.scalar(
        text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid").bindparams(pid=backend)
    ):
        assert time.monotonic() < deadline, "the dead server's backend lingers"
        time.sleep(0.05)

    txn = body["partner_txn_id"]
    assert served.scalar(select(func.count()).where(purchases.c.partner_txn_id == txn)) == 0
    assert (
        served.scalar(
            select(func.count()).where(journal_entries.c.idempotency_key == f"purchase:{txn}")
        )
        == 0
    )
    assert served.scalar(select(func.count()).where(request_nonces.c.nonce == nonce)) == 0

    served.start()
    retry = served.http().send(
        client.build("POST", "/v1/purchases", body=body, idempotency_key="crash-1")
    )
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert served.scalar(select(func.count()).where(purchases.c.partner_txn_id == txn)) == 1


def web_processes(served: Served) -> set[str]:
    """The server processes that hold database connections for requests."""
    with served.sessions() as session:
        names = session.execute(
            text(
                "SELECT DISTINCT application_name FROM pg_stat_activity"
                " WHERE datname = current_database()"
                " AND application_name ~ '^clearinghouse [0-9]+$'"
            )
        ).scalars()
        return set(names)


def test_a_new_rate_rule_set_or_revoked_key_holds_from_the_next_request_in_every_worker(
    served: Served,
) -> None:
    partner = make_partner(served.sessions)
    member_id = enrol(served.client(partner))
    # Kept-alive connections, each warming whichever worker accepted it, until both have.
    connections: list[tuple[PartnerClient, httpx.Client]] = []
    while len(web_processes(served)) < 2:
        assert len(connections) < 64, "the second worker never served a connection"
        http = served.http()
        connections.append((client_for(partner, http, served.base_url), http))
        warmed = connections[-1][0].post("/v1/purchases", purchase_body(member_id, 1_000))
        assert warmed["rates_version"] == 1
    with served.sessions() as session, session.begin():
        rates.set_rates(session, partner.id, earn_rate="2", issue_price="1", redemption_value="1")
        policy.publish(session, {}, {})
        rules_now = policy.rule_set_at(session, session.execute(select(func.now())).scalar_one())

    for client, _ in connections:
        accrual = client.post("/v1/purchases", purchase_body(member_id, 1_000))
        assert (accrual["rates_version"], accrual["rules_version"]) == (2, rules_now.version)

    with served.sessions() as session, session.begin():
        keys.revoke_key(session, partner.key_id)
    for client, http in connections:
        refused = http.send(client.build("GET", "/v1/partner"))
        assert refused.status_code == 401, refused.text


def leaders(served: Served) -> list[str]:
    with served.sessions() as session:
        return list(
            session.execute(
                text(
                    "SELECT a.application_name FROM pg_stat_activity a JOIN pg_locks l"
                    " ON l.pid = a.pid WHERE l.locktype = 'advisory' AND l.granted"
                    " AND a.application_name LIKE :leader"
                ).bindparams(leader=LEADER_NAME + "%")
            ).scalars()
        )


def test_the_jobs_run_in_one_worker_at_a_time_and_another_takes_over(served: Served) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not leaders(served):
        assert time.monotonic() < deadline, "no worker leads the jobs"
        time.sleep(0.1)
    first = leaders(served)
    assert len(first) == 1
    leader_pid = int(first[0].rsplit(" ", 1)[1])
    assert served.process is not None
    assert leader_pid != served.process.pid

    os.kill(leader_pid, signal.SIGKILL)
    while True:
        now = leaders(served)
        # pg_locks and pg_stat_activity are read at two moments: while the killed leader's
        # backend exits, one reading can show it beside its successor. Wait until it is gone.
        if now and first[0] not in now:
            break
        assert time.monotonic() < deadline, "no other worker took the jobs over"
        time.sleep(0.1)
    assert len(now) == 1
