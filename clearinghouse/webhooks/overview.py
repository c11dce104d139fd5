"""Webhooks across every partner, as operators watch them: each endpoint's health, the latest
failed attempts, and the deliveries asked for again. Reads only; asking again is
`service.redeliver`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from partners import directory

FAILURES_SHOWN = 50
REDELIVERIES_SHOWN = 50


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint and how many of its deliveries wait for a next attempt or have failed."""

    id: str
    partner_id: str
    partner_name: str
    url: str
    status: str
    event_types: list[str]
    failing_since: datetime | None
    disabled_reason: str | None
    pending: int
    failed: int


@dataclass(frozen=True)
class Failure:
    """A failed attempt, and where its delivery stands now. `redeliverable`: the delivery has
    failed for good, this was its last attempt, and its endpoint is active."""

    attempted_at: datetime
    partner_id: str
    partner_name: str
    endpoint_id: str
    url: str
    event_type: str
    event_id: str
    status: int | None
    error: str | None
    latency_ms: int
    response: str | None
    state: str
    next_attempt_at: datetime
    redeliverable: bool


@dataclass(frozen=True)
class Redelivery:
    """A delivery asked for again, where it stands now, and the outcome of its last attempt
    since then (none before its first)."""

    redelivered_at: datetime
    partner_id: str
    partner_name: str
    endpoint_id: str
    url: str
    event_type: str
    event_id: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None


def _named(tx: Tx, rows: list[Any]) -> list[dict[str, Any]]:
    """The rows as fields, each with its partner's name beside the partner's id."""
    names = {partner.id: partner.name for partner in directory.list_partners(tx.session)}
    return [{**row._asdict(), "partner_name": names[row.partner_id]} for row in rows]


def endpoints(db: Session | Tx) -> list[EndpointHealth]:
    """Every partner's endpoints, by partner, oldest first."""
    tx = Tx.of(db)
    rows = tx.all(
        "SELECT e.id, e.partner_id, e.url, e.status, e.event_types, e.failing_since,"
        " e.disabled_reason, count(d.id) FILTER (WHERE d.state = 'pending') AS pending,"
        " count(d.id) FILTER (WHERE d.state = 'failed') AS failed"
        " FROM webhook_endpoints e LEFT JOIN webhook_deliveries d"
        " ON d.endpoint_id = e.id AND d.state <> 'delivered'"
        " GROUP BY e.id ORDER BY e.partner_id, e.created_at, e.id"
    )
    return [EndpointHealth(**fields) for fields in _named(tx, rows)]


def failures(db: Session | Tx, limit: int = FAILURES_SHOWN) -> list[Failure]:
    """The latest failed attempts of all partners (no answer, or a status other than 2xx),
    newest first."""
    tx = Tx.of(db)
    rows = tx.all(
        "SELECT a.attempted_at, e.partner_id, d.endpoint_id, e.url, ev.type AS event_type,"
        " d.event_id, a.status, a.error, a.latency_ms, a.response, d.state, d.next_attempt_at,"
        " d.state = 'failed' AND e.status = 'active' AND a.id ="
        " (SELECT max(id) FROM webhook_attempts WHERE delivery_id = d.id) AS redeliverable"
        " FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
        " JOIN webhook_events ev ON ev.id = d.event_id"
        " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " WHERE a.status IS NULL OR a.status NOT BETWEEN 200 AND 299"
        " ORDER BY a.id DESC LIMIT %s",
        (limit,),
    )
    return [Failure(**fields) for fields in _named(tx, rows)]


def redeliveries(db: Session | Tx, limit: int = REDELIVERIES_SHOWN) -> list[Redelivery]:
    """The deliveries last asked for again most recently (by a partner or an operator),
    newest first."""
    tx = Tx.of(db)
    rows = tx.all(
        "SELECT d.redelivered_at, e.partner_id, d.endpoint_id, e.url, ev.type AS event_type,"
        " d.event_id, d.state, d.attempts, d.next_attempt_at, a.status AS last_status,"
        " a.error AS last_error"
        " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id"
        " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " LEFT JOIN LATERAL (SELECT status, error FROM webhook_attempts"
        " WHERE delivery_id = d.id AND attempted_at >= d.redelivered_at"
        " ORDER BY id DESC LIMIT 1) a ON true"
        " WHERE d.redelivered_at IS NOT NULL"
        " ORDER BY d.redelivered_at DESC, d.id DESC LIMIT %s",
        (limit,),
    )
    return [Redelivery(**fields) for fields in _named(tx, rows)]
