"""The periodic jobs, run once per deployment: by one of the server's processes, or by
`clearinghouse jobs run` where the web processes run with `serve --no-jobs`.

Every process that may run them competes for one PostgreSQL advisory lock, held on a connection
of its own for as long as the process leads; the leader runs each job at start and then at its
interval, the others wait and try again. When the leader dies, its connection closes, the lock is
free, and another process takes over within LEADER_RETRY_SECONDS. Each job is idempotent on its
own (safe to run twice or at once), so a takeover never does anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from clearinghouse import logs
from clearinghouse.api import idempotency, metrics, throttle
from clearinghouse.audit.sealing import SEAL_INTERVAL, seal_all
from clearinghouse.batches.worker import process_batches
from clearinghouse.database import libpq_url
from clearinghouse.ledger import partitions
from clearinghouse.points import holds
from clearinghouse.points.expiry import expire_lots
from clearinghouse.points.reminders import remind_expiring
from clearinghouse.rewards.orders import expire_orders
from clearinghouse.webhooks.notices import notify_retiring_keys
from clearinghouse.webhooks.worker import process_webhooks
from partners import auth as partner_auth
from partners import keys
from settlement.liability import snapshot_closed_days
from settlement.schedule import settle_due

log = logging.getLogger(__name__)

# pg_try_advisory_lock's key for the leader: "ch-jobs" in ASCII.
LEADER_LOCK = 0x63682D6A6F6273
LEADER_RETRY_SECONDS = 5.0
# The leader's connection shows in pg_stat_activity as this, with its process id.
LEADER_NAME = "clearinghouse jobs leader"


def purge_expired(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Forget nonces and idempotency records past their retention (keeping each key's last
    use first), and rate counters of past windows; return how many nonces and records."""
    with sessions() as session, session.begin():
        keys.record_last_use(session)
        throttle.purge(session)
        return partner_auth.purge_nonces(session), idempotency.purge(session)


def release_holds(sessions: sessionmaker[Session]) -> int:
    """Give back the points of every hold past its expiry, a batch per transaction; return how
    many holds were released."""
    released = 0
    while True:
        with sessions() as session, session.begin():
            batch = holds.release_expired(session)
        if not batch:
            return released
        released += batch


@dataclass(frozen=True)
class Reminders:
    expiring: int
    retiring: int


def send_reminders(sessions: sessionmaker[Session]) -> Reminders:
    """Write the notices partners hear of ahead of time: members' points about to expire, at
    each partner's horizon (points.expiring), and keys about to retire (key.retiring). Each is
    written once, however often this runs."""
    return Reminders(remind_expiring(sessions), notify_retiring_keys(sessions))


def add_partitions(sessions: sessionmaker[Session]) -> int:
    """Make the journal's month partitions ahead of time (those missing); return how many."""
    with sessions() as session, session.begin():
        return partitions.add_ahead(session)


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: float
    run: Callable[[sessionmaker[Session]], object]


JOBS = (
    Job("purge", 60.0, purge_expired),
    Job("seal", SEAL_INTERVAL.total_seconds(), seal_all),
    Job("settle", 300.0, settle_due),
    Job("liability", 300.0, snapshot_closed_days),
    Job("release-holds", 60.0, release_holds),
    Job("expire-lots", 900.0, expire_lots),
    Job("expire-orders", 60.0, expire_orders),
    Job("batches", 2.0, process_batches),
    Job("webhooks", 2.0, process_webhooks),
    # Hourly, though each notice is daily news: a key retired with a deadline hours away still
    # gets its notice, and a run that finds nothing new writes nothing.
    Job("reminders", 3600.0, send_reminders),
    Job("partitions", 86400.0, add_partitions),
)


async def _every(job: Job, sessions: sessionmaker[Session]) -> None:
    """Run a job in a worker thread at start and then at its interval, off the request path;
    log and go on when it fails. At start, so that a server started in the morning shows
    yesterday's settlement at once. Every record a run writes names the job and the run (the
    task is the job's alone)."""
    while True:
        logs.bind(job=job.name, run_id=secrets.token_hex(8))
        metrics.job_runs.labels(job.name).inc()
        try:
            result = await run_in_threadpool(job.run, sessions)
            log.info(job.name, extra={"result": repr(result)})
        except Exception:
            metrics.job_failures.labels(job.name).inc()
            log.exception("%s failed; will retry", job.name)
        await asyncio.sleep(job.every_seconds)


class Scheduler:
    """Runs `jobs` on `sessions` whenever this process holds the leader lock."""

    def __init__(self, sessions: sessionmaker[Session], jobs: tuple[Job, ...] = JOBS) -> None:
        self.sessions = sessions
        self.jobs = jobs
        engine = sessions.kw["bind"]
        assert isinstance(engine, Engine)
        self._url = libpq_url(engine.url.render_as_string(hide_password=False))
        self.leading = False

    async def run(self) -> None:
        while True:
            lock = await run_in_threadpool(self._try_to_lead)
            if lock is None:
                await asyncio.sleep(LEADER_RETRY_SECONDS)
                continue
            self.leading = True
            log.info("this process leads the jobs")
            running = [asyncio.create_task(_every(job, self.sessions)) for job in self.jobs]
            try:
                await self._hold(lock)
            finally:
                self.leading = False
                for task in running:
                    task.cancel()
                with contextlib.suppress(psycopg.Error):
                    lock.close()
            log.warning("this process no longer leads the jobs")

    def _try_to_lead(self) -> psycopg.Connection[Any] | None:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                application_name=f"{LEADER_NAME} {os.getpid()}",
            )
        except psycopg.Error:
            log.warning("cannot reach the database to lead the jobs; will retry")
            return None
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
        if row is not None and row[0]:
            return conn
        conn.close()
        return None

    async def _hold(self, lock: psycopg.Connection[Any]) -> None:
        """Return when the lock's connection is lost (the lock with it)."""
        while True:
            await asyncio.sleep(LEADER_RETRY_SECONDS)
            try:
                await run_in_threadpool(lock.execute, "SELECT 1")
            except psycopg.Error:
                return
