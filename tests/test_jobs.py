"""The periodic jobs the server (or `clearinghouse jobs run`) runs: each named once in
clearinghouse.jobs.JOBS and run there by name, here on a clock the test moves; every job the
command line knows is one of them, and the server's scheduler runs them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker
from typer.main import get_group

from clearinghouse import clock, jobs, jobs_cli
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
        "partitions",
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


def test_every_job_the_command_line_knows_is_scheduled_by_the_server() -> None:
    commands = set(get_group(jobs_cli.jobs_app).commands)
    scheduled = {job.name for job in jobs.JOBS}
    assert set(jobs_cli.NOT_SCHEDULED) <= commands
    assert commands - set(jobs_cli.NOT_SCHEDULED) - scheduled == set()
    # The periodic commands outside `clearinghouse jobs`: `settle`, `audit seal` and
    # `ledger partitions --add`.
    assert {"settle", "seal", "partitions"} <= scheduled


def test_the_servers_scheduler_releases_an_expired_hold_when_it_leads(
    databases: Databases, manual_clock: clock.Manual
) -> None:
    """The scheduler the app starts (clearinghouse.jobs.Scheduler) takes the leader's lock and
    runs the release-holds job at once; the test waits for that run to end, not for time."""
    (release,) = [job for job in jobs.JOBS if job.name == "release-holds"]
    with own_world(databases) as world:
        partner = world.merchant()
        member = new_member(world.sessions, [partner.id])
        earned = accrue(world.sessions, partner.id, member, 30_000)
        with world.sessions() as session, session.begin():
            hold = holds.place_hold(session, partner.id, member, 100, key=str(uuid.uuid4()))
        manual_clock.set(hold.expires_at + timedelta(seconds=1))

        async def lead_until_it_has_run() -> object:
            loop = asyncio.get_running_loop()
            ran: asyncio.Future[object] = loop.create_future()

            def run_and_tell(sessions: sessionmaker[Session]) -> object:
                result = release.run(sessions)
                loop.call_soon_threadsafe(ran.set_result, result)
                return result

            scheduler = jobs.Scheduler(world.sessions, (replace(release, run=run_and_tell),))
            leading = asyncio.create_task(scheduler.run())
            try:
                return await asyncio.wait_for(ran, timeout=60)
            finally:
                leading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await leading

        # On a thread of its own: the test's thread may hold another test's running loop.
        with ThreadPoolExecutor(1) as thread:
            assert thread.submit(asyncio.run, lead_until_it_has_run()).result() == 1
        with world.sessions() as session:
            assert holds.get_hold(session, partner.id, hold.id).state == "expired"
        assert available(world.sessions, member) == earned.points
