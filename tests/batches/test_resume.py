"""A batch worker killed mid-batch (SIGKILL, between or inside its chunks' transactions) leaves
whole chunks applied and the rest pending; the next worker resumes at the first pending line,
and every line has exactly one effect and one result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from clearinghouse.batches.tables import batch_lines, batches
from clearinghouse.batches.worker import process_batches
from clearinghouse.points.tables import purchases
from tests.batches.test_batches import jsonl, purchase, submit
from tests.builders.calls import enrol
from tests.builders.databases import World
from tests.builders.http import client_for
from tests.builders.partners import make_partner
from tests.builders.points import available

LINES = 400
# How long the killed worker may take to get part of the way; it is killed as soon as it has.
PROGRESS_SECONDS = 120.0


def _applied(world: World, batch_id: str) -> int:
    with world.sessions() as session:
        return session.execute(
            select(batches.c.applied).where(batches.c.id == batch_id)
        ).scalar_one()


def _advisory_locks(world: World) -> int:
    """Advisory locks held in the test's database: the batch lanes of a live worker."""
    with world.sessions() as session:
        held: int = session.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
        ).scalar_one()
    return held


def test_a_worker_killed_mid_batch_resumes_with_nothing_lost_or_doubled(
    world: World, tmp_path: Path
) -> None:
    shop = make_partner(world.sessions)
    client = client_for(shop, world.http)
    members = [enrol(client) for _ in range(20)]
    lines = [purchase(members[n % 20], f"K-{n}", 1_000 + n) for n in range(LINES)]
    batch = submit(world, client, jsonl(*lines))

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "clearinghouse", "jobs", "batches"],
            env={**os.environ, "DATABASE_URL": world.url},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + PROGRESS_SECONDS
        while _applied(world, batch["batch_id"]) == 0:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker applied nothing in time"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    stopped_at = _applied(world, batch["batch_id"])
    assert 0 < stopped_at < LINES, "killed part of the way through"
    # The killed worker's backend lets its lanes' locks go once PostgreSQL sees the connection
    # gone; until then a lane is someone else's and the next run would pass it by.
    deadline = time.monotonic() + PROGRESS_SECONDS
    while _advisory_locks(world):
        assert time.monotonic() < deadline, "the killed worker's locks were never released"
        time.sleep(0.05)

    assert process_batches(world.sessions) == LINES - stopped_at
    done = client.get(f"/v1/batches/{batch['batch_id']}")
    assert (done["state"], done["applied"], done["replayed"], done["failed"]) == (
        "done",
        LINES,
        0,
        0,
    )
    with world.sessions() as session:
        assert (
            session.execute(
                select(func.count()).where(purchases.c.partner_id == shop.id)
            ).scalar_one()
            == LINES
        )
        results = session.execute(
            select(batch_lines.c.result).where(batch_lines.c.batch_id == batch["batch_id"])
        ).scalars()
        earned: dict[str, int] = {}
        for result in results:
            earned[result["member_id"]] = earned.get(result["member_id"], 0) + result["points"]
    assert {m: available(world.sessions, m) for m in members} == earned
