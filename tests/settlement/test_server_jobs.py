"""The server's own jobs: started in the morning, it settles yesterday at once rather than
after its first interval."""

from __future__ import annotations

import time
from datetime import timedelta

from clearinghouse.demo import serving
from settlement import runs
from settlement.runs import SettlementNotFound
from tests.builders.databases import World
from tests.builders.dates import business_today


def test_a_starting_server_settles_yesterday(world: World) -> None:
    yesterday = business_today() - timedelta(days=1)
    with serving(world.sessions):
        deadline = time.monotonic() + 30
        while True:
            try:
                with world.sessions() as session:
                    run = runs.load_run(session, yesterday)
                break
            except SettlementNotFound:
                assert time.monotonic() < deadline, "yesterday was not settled"
                time.sleep(0.1)
    assert run.state == "computed"
