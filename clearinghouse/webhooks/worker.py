"""The webhook worker: posts due deliveries, records each attempt, and retries failures.

A delivery is claimed in one short transaction (`FOR UPDATE SKIP LOCKED`, so two workers never
take the same one; the claim moves its next attempt LEASE ahead), posted with no transaction
open, and its attempt recorded in another. A worker that dies between the two leaves the
delivery due again when the lease ends: delivery is at least once, and a receiver tells a
repeat by its unchanged `webhook-id`.

Deliveries are posted DELIVERY_THREADS at a time, each bounded by TIMEOUT_SECONDS and a
response read of at most MAX_RESPONSE_BYTES, so a slow or huge answer holds up only its own; a
claim takes at most PER_ENDPOINT deliveries of one endpoint, so a slow endpoint with many events
waiting never fills the threads that other partners' deliveries need.

A failed attempt (no answer, or a status other than 2xx) is tried again after the next delay of
RETRY_DELAYS, each lengthened by up to JITTER at random so that retries to one receiver spread
out: 5 s, 1 min, 5 min, 30 min, 2 h, 5 h, then 10 h seven times, about 3 days and 5 hours in
all (14 attempts). A delivery whose attempts are spent is failed. An endpoint that has failed
every attempt for DISABLE_AFTER is disabled, with the reason recorded."""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.database import Tx, unit_of_work
from clearinghouse.webhooks import service, signing, targets

log = logging.getLogger(__name__)

CLAIM_LIMIT = 50
DELIVERY_THREADS = 8
PER_ENDPOINT = 4
TIMEOUT_SECONDS = 5.0
ROUNDS_SECONDS = 10.0
"""How long one run of the worker goes on claiming while deliveries are due."""
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_BYTES = 1024
LEASE = timedelta(minutes=2)
"""How long a claimed delivery waits for its attempt to be recorded before it is due again:
well beyond TIMEOUT_SECONDS, so a live worker's post never overlaps a second one."""

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    *(timedelta(hours=10),) * 7,
)
JITTER = 0.2
DISABLE_AFTER = timedelta(days=3)
USER_AGENT = "clearinghouse-webhooks/1"


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt: what to send and where."""

    delivery_id: int
    attempts: int
    event_id: str
    payload: dict[str, Any]
    endpoint_id: str
    url: str
    secrets: list[str]

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Attempt:
    """What one post got: a status and the start of the response, or an error."""

    at: datetime
    latency_ms: int
    status: int | None = None
    response: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def claim(sessions: sessionmaker[Session], limit: int = CLAIM_LIMIT) -> list[Claimed]:
    """Take up to `limit` due deliveries to active endpoints, earliest due first and at most
    PER_ENDPOINT of each endpoint, and put their next attempt LEASE ahead, in one short
    transaction."""
    now = clock.now()
    with unit_of_work(sessions) as session:
        tx = Tx.of(session)
        # Each active endpoint's earliest due deliveries, from its own index range, then the
        # earliest of those.
        rows = tx.all(
            "WITH firsts AS (SELECT x.id, x.next_attempt_at FROM webhook_endpoints e"
            " CROSS JOIN LATERAL (SELECT d.id, d.next_attempt_at FROM webhook_deliveries d"
            " WHERE d.endpoint_id = e.id AND d.state = 'pending'"
            " AND d.next_attempt_at <= %(now)s ORDER BY d.next_attempt_at, d.id"
            " LIMIT %(per_endpoint)s) x WHERE e.status = 'active'),"
            " due AS (SELECT d.id FROM webhook_deliveries d WHERE d.id IN (SELECT id FROM firsts"
            " ORDER BY next_attempt_at, id LIMIT %(limit)s)"
            " AND d.state = 'pending' AND d.next_attempt_at <= %(now)s"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE webhook_deliveries d SET next_attempt_at = %(lease)s"
            " FROM due, webhook_events ev, webhook_endpoints e"
            " WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id"
            " RETURNING d.id, d.attempts, ev.id AS event_id, ev.payload, e.id AS endpoint_id,"
            " e.url",
            {"now": now, "per_endpoint": PER_ENDPOINT, "limit": limit, "lease": now + LEASE},
        )
        secrets = service.signing_secrets(tx, sorted({row.endpoint_id for row in rows}))
    return [
        Claimed(
            row.id,
            row.attempts,
            row.event_id,
            row.payload,
            row.endpoint_id,
            row.url,
            secrets.get(row.endpoint_id, []),
        )
        for row in rows
    ]


def _read(response: httpx.Response, deadline: float) -> bytes:
    """The response body, up to MAX_RESPONSE_BYTES, read no later than `deadline`."""
    read = b""
    for chunk in response.iter_bytes():
        read += chunk
        if len(read) >= MAX_RESPONSE_BYTES:
            break
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the response took longer than the timeout")
    return read[:MAX_RESPONSE_BYTES]


def post(client: httpx.Client, claimed: Claimed, timeout: float = TIMEOUT_SECONDS) -> Attempt:
    """Send the delivery once: resolve and check the endpoint's address, sign, post, read the
    start of the answer. No redirect is followed (a 3xx is a failed attempt)."""
    at = clock.now()
    started = time.monotonic()

    def attempt(**outcome: Any) -> Attempt:
        return Attempt(at, round((time.monotonic() - started) * 1000), **outcome)

    try:
        target = targets.resolve(claimed.url, get_settings())
    except targets.UnsafeUrl as refused:
        return attempt(error=refused.detail)
    body = claimed.body
    headers = {
        **signing.headers(claimed.event_id, at, body, claimed.secrets),
        "content-type": "application/json",
        "host": target.host_header,
        "user-agent": USER_AGENT,
    }
    try:
        with client.stream(
            "POST",
            target.url,
            content=body,
            headers=headers,
            timeout=timeout,
            extensions={"sni_hostname": target.server_name},
        ) as response:
            read = _read(response, started + timeout)
    except httpx.HTTPError as exc:
        return attempt(error=f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES])
    excerpt = read[:EXCERPT_BYTES].decode("utf-8", "replace")
    return attempt(status=response.status_code, response=excerpt)


def next_delay(attempts: int) -> timedelta | None:
    """The wait after the `attempts`-th failed attempt of a round, jittered; None once the
    round's attempts are spent."""
    if attempts > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[attempts - 1] * (1 + random.uniform(0, JITTER))


def record(sessions: sessionmaker[Session], claimed: Claimed, attempt: Attempt) -> None:
    """Keep the attempt and settle what follows: delivered; or due again after the next delay,
    failed once the attempts are spent; the endpoint marked failing, or disabled after
    DISABLE_AFTER of failures."""
    attempts = claimed.attempts + 1
    with unit_of_work(sessions) as session:
        tx = Tx.of(session)
        tx.execute(
            "INSERT INTO webhook_attempts"
            " (delivery_id, attempted_at, status, error, latency_ms, response)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                claimed.delivery_id,
                attempt.at,
                attempt.status,
                attempt.error,
                attempt.latency_ms,
                attempt.response,
            ),
        )
        if attempt.delivered:
            tx.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', attempts = %s WHERE id = %s",
                (attempts, claimed.delivery_id),
            )
            # Only a failing endpoint's row is written: deliveries to a healthy one never wait
            # on each other for it.
            tx.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL"
                " WHERE id = %s AND failing_since IS NOT NULL",
                (claimed.endpoint_id,),
            )
            return
        delay = next_delay(attempts)
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = %s, state = %s, next_attempt_at = %s"
            " WHERE id = %s",
            (
                attempts,
                "pending" if delay else "failed",
                attempt.at + (delay or timedelta()),
                claimed.delivery_id,
            ),
        )
        since = tx.scalar(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, %s)"
            " WHERE id = %s RETURNING failing_since",
            (attempt.at, claimed.endpoint_id),
        )
        if attempt.at - since >= DISABLE_AFTER:
            outcome = attempt.error or f"HTTP {attempt.status}"
            service.disable_endpoint(
                tx,
                None,
                claimed.endpoint_id,
                f"every delivery failed since {since.isoformat()}; the last: {outcome}",
            )
            log.warning("webhook endpoint disabled", extra={"endpoint": claimed.endpoint_id})


def _deliver(
    sessions: sessionmaker[Session], client: httpx.Client, timeout: float
) -> Callable[[Claimed], bool]:
    def deliver(claimed: Claimed) -> bool:
        attempt = post(client, claimed, timeout)
        record(sessions, claimed, attempt)
        return attempt.delivered

    return deliver


@cache
def _tls() -> ssl.SSLContext:
    """The certificate authorities, loaded once per process (loading them costs more than a
    delivery)."""
    return ssl.create_default_context()


def process_webhooks(
    sessions: sessionmaker[Session],
    *,
    limit: int = CLAIM_LIMIT,
    timeout: float = TIMEOUT_SECONDS,
    budget: float = ROUNDS_SECONDS,
) -> int:
    """Claim due deliveries (up to `limit` a round, PER_ENDPOINT of each endpoint) and post
    them, DELIVERY_THREADS at once, each recorded as soon as it is answered; claim again while
    rounds find deliveries due, for up to `budget` seconds, so that a busy endpoint is not held
    to PER_ENDPOINT deliveries a run. Return how many were delivered. Safe to run twice or at
    once."""
    deadline = time.monotonic() + budget
    delivered = 0
    with (
        httpx.Client(follow_redirects=False, trust_env=False, verify=_tls()) as client,
        ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="webhook") as pool,
    ):
        while True:
            claimed = claim(sessions, limit)
            if not claimed:
                return delivered
            delivered += sum(pool.map(_deliver(sessions, client, timeout), claimed))
            if time.monotonic() >= deadline:
                return delivered
