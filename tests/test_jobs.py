"""The periodic jobs the server (or `clearinghouse jobs run`) runs: each named once in
clearinghouse.jobs.JOBS and run there by name, here on a clock the test moves."""

from __future__ import annotations

import uuid
from datetime import timedelta

from clearinghouse import clock, jobs
from clearinghouse.points import holds
from tests.builders.databases import own_world
from tests.builders.points import accrue, available, new_member
from tests.conftest import Databases


def test_every_periodic_job_runs_in_the_service() -> None:
    assert [job.name for job in jobs.JOBS] == [
        "purge",
        "seal",
        "settle",
        "liability",
        "release-holds",
        "expire-lots",
        "expire-orders",
        "batches",
        "webhooks",
        "reminders",
    ]


def test_the_jobs_release_expired_holds_and_expire_lots(
    databases: Databases, manual_clock: clock.Manual
) -> None:
    by_name = {job.name: job for job in jobs.JOBS}
    with own_world(databases) as world:
        partner = world.merchant()
        member = new_member(world.sessions, [partner.id])
        earned = accrue(world.sessions, partner.id, member, 30_000)
        with world.sessions() as session, session.begin():
            hold = holds.place_hold(session, partner.id, member, 100, key=str(uuid.uuid4()))
        assert available(world.sessions, member) == earned.points - 100

        assert by_name["release-holds"].run(world.sessions) == 0
        manual_clock.set(hold.expires_at + timedelta(seconds=1))
        assert by_name["release-holds"].run(world.sessions) == 1
        with world.sessions() as session:
            assert holds.get_hold(session, partner.id, hold.id).state == "expired"
        assert available(world.sessions, member) == earned.points

        manual_clock.advance(days=3 * 366)
        expired = by_name["expire-lots"].run(world.sessions)
        assert (expired.members, expired.points) == (1, earned.points)
        assert available(world.sessions, member) == 0
