"""Starting the API's database from several processes at once (uvicorn workers, xdist workers
sharing one embedded server): creating the database must tolerate a concurrent creator."""

from __future__ import annotations

import threading
import uuid

from clearinghouse.database import ensure_database
from tests.conftest import Databases

CREATORS = 8


def test_ensure_database_tolerates_concurrent_creators(
    server_url: str, databases: Databases
) -> None:
    # ensure_database checks pg_database, then runs CREATE DATABASE: two processes that both see
    # no database both create it, and the loser must not fail (it got UniqueViolation once, and
    # `pytest -n 2` on the embedded server failed when both workers started it).
    name = f"ch_test_race_{uuid.uuid4().hex[:12]}"
    databases.created.append(name)  # dropped with the others at the end of the session
    start = threading.Barrier(CREATORS)
    failures: list[BaseException] = []

    def create() -> None:
        start.wait()
        try:
            ensure_database(server_url, name)
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=create) for _ in range(CREATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [type(f).__name__ for f in failures] == []
