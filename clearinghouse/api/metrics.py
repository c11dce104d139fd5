"""The series each process records as things happen (requests, refused signatures, rate
limits, replays, job runs, the database pool), and their exposition.

Under `clearinghouse serve` every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (set before the workers start, see clearinghouse.server), and a scrape
answered by any one of them reads all the files; without it (tests, one process) the values
live in this process. What is read from the database at scrape time is a collector of the top
floor's (clearinghouse.metrics), passed to `exposition`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

http_requests = Histogram(
    "clearinghouse_http_request_duration_seconds",
    "Requests answered, by route template, method and status class, and how long they took",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
signature_failures = Counter(
    "clearinghouse_signature_failures",
    "Partner requests refused for their signature, by reason",
    ["reason"],
)
idempotent_replays = Counter(
    "clearinghouse_idempotent_replays", "Answers replayed for a repeated Idempotency-Key"
)
rate_limited = Counter("clearinghouse_rate_limited", "Requests refused with 429 rate_limited")
job_runs = Counter("clearinghouse_job_runs", "Periodic job runs started, by job", ["job"])
job_failures = Counter("clearinghouse_job_failures", "Periodic job runs that failed", ["job"])
pool_in_use = Gauge(
    "clearinghouse_db_pool_in_use",
    "Connections checked out of the request pools",
    multiprocess_mode="livesum",
)
pool_overflow = Gauge(
    "clearinghouse_db_pool_overflow",
    "Connections open beyond the request pools' size",
    multiprocess_mode="livesum",
)
pool_exhausted = Counter(
    "clearinghouse_db_pool_exhausted",
    "Checkouts that took a request pool's last connection: the next one waits for a return",
)
pool_wait = Histogram(
    "clearinghouse_db_pool_wait_seconds",
    "How long checkouts from the request pools waited for a connection (returned or opened)",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class WatchedPool(QueuePool):
    """A request pool (the engine's `poolclass`) that times each checkout: the wait for a
    connection to come back when all are out, or for a new one to open. `clock` is seconds
    from any fixed point. A checkout that times out is timed too."""

    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def connect(self) -> PoolProxiedConnection:
        start = self.clock()
        try:
            return super().connect()
        finally:
            pool_wait.observe(self.clock() - start)


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges of `engine`'s pool as connections are checked out and returned."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return

    most = pool.size() + pool._max_overflow

    def checked_out(*_: Any) -> None:
        pool_in_use.inc()
        pool_overflow.set(max(0, pool.overflow()))
        if pool.checkedout() >= most:
            pool_exhausted.inc()

    def checked_in(*_: Any) -> None:
        pool_in_use.dec()
        pool_overflow.set(max(0, pool.overflow()))

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)


def exposition(database: Collector) -> bytes:
    """Every series in the text format: every process's (or this process's alone) and those
    `database` reads at scrape time."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Process())
    registry.register(database)
    return generate_latest(registry)


class _Process(Collector):
    """This process's own series, when they are not shared through files."""

    def collect(self) -> Any:
        return REGISTRY.collect()
