"""Rate limits, counted in the database so that every worker of every server shares them
(migration 0010_rate_limits): each partner's signed requests per window, and each source
address's failed authentications per window (bad or missing signatures, unknown bearer tokens,
failed console sign-ins). Past a limit the answer is `429 rate_limited` with Retry-After.

A source past its limit is refused everything until its window ends, before any of its
requests is evaluated: a guess that happens to be right is refused like the others. Each process
remembers the sources it has seen blocked, so that a flood from one costs no database work;
another process learns of the block at that source's next failure there, or (for bearer tokens
and sign-ins, checked against the database anyway) at its next request."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func
from sqlalchemy.orm import Session
from starlette.types import Scope

from clearinghouse.api import metrics
from clearinghouse.api.tables import rate_counters
from clearinghouse.config import get_settings
from clearinghouse.database import Tx, run_in_transaction
from clearinghouse.errors import DomainError

# Counters older than this are of windows long ended (the longest window is a minute).
PAST_WINDOWS = timedelta(hours=1)
# A process with requests not yet counted adds them at its next request after this long.
FLUSH_SECONDS = 0.25


@dataclass(frozen=True)
class RateLimits:
    partner_requests: int = field(default_factory=lambda: get_settings().rate_partner_requests)
    """Signed requests one partner may send per partner window (every key, every store)."""
    partner_window_seconds: int = 10
    source_failures: int = field(default_factory=lambda: get_settings().rate_source_failures)
    """Failed authentications one source address may make per source window."""
    source_window_seconds: int = 60
    flush_every: int = 16
    """A process adds its partners' requests to the shared count every this many requests (or
    FLUSH_SECONDS): the limit holds to within this many requests per process."""


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; try again in {retry_after} s")
        self.headers["Retry-After"] = str(retry_after)
        metrics.rate_limited.inc()


def source_of(scope: Scope) -> str:
    """The address the request came from (the proxy's word for it only where the server was
    told to believe that proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


@dataclass
class _Tally:
    """One partner's requests in the current window, as this process knows them."""

    window: int
    known: int = 0
    """The shared count when this process last added to it."""
    pending: int = 0
    """This process's requests since then."""
    flushed_at: float = float("-inf")


class Throttle:
    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self._blocked: dict[str, float] = {}
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()

    def admit_partner(self, engine: Engine, partner_id: str) -> None:
        """Count a partner's request, or refuse it (429) past the partner's limit.

        Counting every request in the database would cost each one a row update; instead each
        process counts its own and adds them to the shared count every `flush_every` requests
        or FLUSH_SECONDS, in a statement of its own, reading back everyone's total."""
        seconds = self.limits.partner_window_seconds
        now = self.clock()
        window = int(now // seconds)
        retry_after = max(1, math.ceil((window + 1) * seconds - now))
        with self._lock:
            tally = self._tallies.get(partner_id)
            if tally is None or tally.window != window:
                tally = self._tallies[partner_id] = _Tally(window)
            if tally.known + tally.pending >= self.limits.partner_requests:
                raise RateLimited(retry_after)
            tally.pending += 1
            if tally.pending < self.limits.flush_every and now - tally.flushed_at < FLUSH_SECONDS:
                return
            hits, tally.pending, tally.flushed_at = tally.pending, 0, now
        at = datetime.fromtimestamp(now, UTC)
        counted = run_in_transaction(
            engine,
            lambda tx: tx.one(
                "SELECT * FROM rate_hit(%s, %s, %s, %s)",
                (f"partner:{partner_id}", seconds, hits, at),
            ),
        )
        with self._lock:
            if tally.window == window:
                tally.known = max(tally.known, counted.hits)
        if counted.hits > self.limits.partner_requests:
            raise RateLimited(retry_after)

    def refuse_blocked(self, source: str) -> None:
        """Refuse a request from a source this process knows to be blocked."""
        with self._lock:
            until = self._blocked.get(source)
            if until is None:
                return
            left = until - time.monotonic()
            if left <= 0:
                del self._blocked[source]
                return
        raise RateLimited(max(1, round(left)))

    def check_source(self, tx: Tx, source: str) -> None:
        """Refuse a request from a source past its limit, by the shared count."""
        counted = tx.one(
            "SELECT * FROM rate_count(%s, %s, %s)",
            (f"source:{source}", self.limits.source_window_seconds, self._instant()),
        )
        if counted.hits >= self.limits.source_failures:
            self._block(source, counted.retry_after)

    def failed(self, tx: Tx, source: str) -> None:
        """Count a failed authentication from `source`; refuse it if that passes the limit."""
        counted = tx.one(
            "SELECT * FROM rate_hit(%s, %s, 1, %s)",
            (f"source:{source}", self.limits.source_window_seconds, self._instant()),
        )
        if counted.hits > self.limits.source_failures:
            self._block(source, counted.retry_after)

    def _instant(self) -> datetime:
        """Now, by the clock the windows are counted on."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def _block(self, source: str, retry_after: int) -> None:
        with self._lock:
            self._blocked[source] = time.monotonic() + retry_after
        raise RateLimited(retry_after)


def purge(session: Session) -> int:
    """Forget the counters of windows that have ended; return how many."""
    result = session.execute(
        delete(rate_counters).where(rate_counters.c.window_start < func.now() - PAST_WINDOWS)
    )
    return int(getattr(result, "rowcount", 0))
