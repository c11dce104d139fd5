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

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.orm import Session
from starlette.types import Scope

from clearinghouse.api.tables import rate_counters
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import DomainError

# Counters older than this are of windows long ended (the longest window is a minute).
PAST_WINDOWS = timedelta(hours=1)


@dataclass(frozen=True)
class RateLimits:
    partner_requests: int = field(default_factory=lambda: get_settings().rate_partner_requests)
    """Signed requests one partner may send per partner window (every key, every store)."""
    partner_window_seconds: int = 10
    source_failures: int = field(default_factory=lambda: get_settings().rate_source_failures)
    """Failed authentications one source address may make per source window."""
    source_window_seconds: int = 60


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; try again in {retry_after} s")
        self.headers["Retry-After"] = str(retry_after)


def source_of(scope: Scope) -> str:
    """The address the request came from (the proxy's word for it only where the server was
    told to believe that proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Throttle:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def partner_subject(self, partner_id: str) -> tuple[str, int]:
        """The `rate_hit` arguments of a partner's request (run by its first statement)."""
        return f"partner:{partner_id}", self.limits.partner_window_seconds

    def check_partner(self, hits: int, retry_after: int) -> None:
        """Refuse a request that took its partner past the limit."""
        if hits > self.limits.partner_requests:
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
            "SELECT * FROM rate_count(%s, %s)",
            (f"source:{source}", self.limits.source_window_seconds),
        )
        if counted.hits >= self.limits.source_failures:
            self._block(source, counted.retry_after)

    def failed(self, tx: Tx, source: str) -> None:
        """Count a failed authentication from `source`; refuse it if that passes the limit."""
        counted = tx.one(
            "SELECT * FROM rate_hit(%s, %s)",
            (f"source:{source}", self.limits.source_window_seconds),
        )
        if counted.hits > self.limits.source_failures:
            self._block(source, counted.retry_after)

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
