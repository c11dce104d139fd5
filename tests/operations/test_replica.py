"""The auditors' and finance's reports on a real streaming replica: served there while it is
no more than its bound behind, by the primary when it lags past it or cannot be reached; every
answer says which server gave it and how current it is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, migrate
from clearinghouse.app import create_app
from clearinghouse.config import Settings
from clearinghouse.database import configured_replica, make_engine, session_factory
from tests.builders.audit import transfers
from tests.builders.clusters import Cluster, own_clusters, wait_for
from tests.builders.http import own_client
from tests.builders.users import staff

MAX_LAG = timedelta(seconds=10)


@dataclass(frozen=True)
class Replicated:
    primary: Cluster
    replica: Cluster
    sessions: sessionmaker[Session]
    http: TestClient
    auditor: dict[str, str]
    finance: dict[str, str]

    def received(self) -> None:
        """Wait until the replica has received everything the primary has written so far."""
        written = self.primary.scalar("SELECT pg_current_wal_lsn()::text")
        wait_for(
            "the replica to receive the primary's WAL",
            lambda: self.replica.scalar(
                "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (written,)
            ),
        )

    def caught_up(self) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        self.received()
        wait_for(
            "the replica to replay what it received",
            lambda: self.replica.scalar(
                "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
            ),
        )

    def entries(self, account: str) -> tuple[list[int], httpx.Response]:
        response = self.http.get(
            "/audit/entries", params={"account": account}, headers=self.auditor
        )
        assert response.status_code == 200, response.text
        return [entry["id"] for entry in response.json()["entries"]], response


def as_of(response: httpx.Response) -> datetime:
    return datetime.fromisoformat(response.headers["Data-As-Of"])


@pytest.fixture
def replicated(manual_clock: clock.Manual) -> Iterator[Replicated]:
    """A primary, migrated, with a streaming replica; the app on the primary, its reports on
    the replica within MAX_LAG, as the settings DATABASE_REPLICA_URL and
    CLEARINGHOUSE_REPLICA_MAX_LAG_SECONDS give it."""
    with own_clusters() as clusters:
        primary = clusters.primary()
        replica = clusters.replica_of(primary)
        migrate.upgrade(primary.url())
        engine = make_engine(primary.url(), pool_size=2)
        settings = Settings.model_validate(
            {
                "DATABASE_REPLICA_URL": replica.url(),
                "CLEARINGHOUSE_REPLICA_MAX_LAG_SECONDS": MAX_LAG.total_seconds(),
            }
        )
        app_replica = configured_replica(settings, pool_size=2)
        assert app_replica is not None
        try:
            sessions = session_factory(engine)
            app = create_app(sessions, jobs=False)
            app.state.replica = app_replica
            world = Replicated(
                primary,
                replica,
                sessions,
                own_client(app),
                staff(sessions, "auditor").headers,
                staff(sessions, "finance").headers,
            )
            world.caught_up()
            yield world
        finally:
            app_replica.engine.dispose()
            engine.dispose()


def test_reports_are_read_from_the_replica_until_it_lags_past_its_bound(
    replicated: Replicated, manual_clock: clock.Manual
) -> None:
    world = replicated
    first = transfers(world.sessions, 1)[0]
    world.caught_up()

    ids, answer = world.entries(first.destination)
    assert ids == [first.id]
    assert answer.headers["Data-Source"] == "replica"
    assert as_of(answer) == manual_clock()  # caught up: current
    for path in ("/finance/liability", "/finance/settlements"):
        report = world.http.get(path, headers=world.finance)
        assert report.status_code == 200, report.text
        assert report.headers["Data-Source"] == "replica"

    # The replica stops replaying; the primary goes on.
    world.replica.one("SELECT pg_wal_replay_pause()")
    wait_for(
        "replay to pause",
        lambda: world.replica.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused",
    )
    later = transfers(world.sessions, 1)[0]
    world.received()

    # Within the bound, the replica answers, without the later entry, and says how old it is.
    ids, answer = world.entries(later.destination)
    assert ids == []
    assert answer.headers["Data-Source"] == "replica"
    replayed = as_of(answer)
    assert replayed < later.recorded_at

    # Past it, the primary answers, with the entry.
    manual_clock.set(replayed + MAX_LAG + timedelta(seconds=1))
    ids, answer = world.entries(later.destination)
    assert ids == [later.id]
    assert answer.headers["Data-Source"] == "primary"
    assert as_of(answer) == manual_clock()
    report = world.http.get("/finance/liability", headers=world.finance)
    assert report.headers["Data-Source"] == "primary"

    # Replaying again, the replica catches up and answers again.
    world.replica.one("SELECT pg_wal_replay_resume()")
    world.caught_up()
    ids, answer = world.entries(later.destination)
    assert (ids, answer.headers["Data-Source"]) == ([later.id], "replica")


def test_reports_are_read_from_the_primary_when_the_replica_cannot_be_reached(
    replicated: Replicated,
) -> None:
    world = replicated
    posted = transfers(world.sessions, 1)[0]
    world.caught_up()
    # A read leaves a connection to the replica in the pool; the replica then goes away.
    assert world.entries(posted.destination)[1].headers["Data-Source"] == "replica"
    world.replica.stop()

    ids, answer = world.entries(posted.destination)
    assert ids == [posted.id]
    assert answer.headers["Data-Source"] == "primary"
    report = world.http.get("/finance/settlements", headers=world.finance)
    assert (report.status_code, report.headers["Data-Source"]) == (200, "primary")
    # An answer the route makes itself (a zip, a CSV) says it too.
    since = posted.recorded_at
    day = {"from": since.isoformat(), "to": (since + timedelta(seconds=1)).isoformat()}
    export = world.http.get("/audit/export", params=day, headers=world.auditor)
    assert export.status_code == 200, export.text
    assert export.headers["Data-Source"] == "primary"
