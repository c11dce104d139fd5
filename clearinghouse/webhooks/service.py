"""Partners' webhook endpoints, their signing secrets, and the outbox of events.

`emit` writes an event in the caller's transaction, with a pending delivery to each of the
partner's active endpoints subscribed to its type: the event exists exactly when the change that
causes it committed, and the worker (clearinghouse.webhooks.worker) delivers it after."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import NotFound
from clearinghouse.ids import new_id
from clearinghouse.reference import Reference
from clearinghouse.webhooks import signing, targets

EVENT_TYPES = (
    "points.earned",
    "points.redeemed",
    "points.expiring",
    "points.expired",
    "purchase.clawback",
    "tier.changed",
    "case.decided",
    "settlement.computed",
    "settlement.approved",
    "settlement.paid",
    "reconciliation.completed",
    "key.retiring",
)
"""The events a partner may subscribe to (docs/webhooks.md describes each payload)."""

OPT_IN = ("points.earned", "points.redeemed")
"""Events an endpoint receives only when it names them (for partners that mirror balances):
one for every accrual or redemption. An endpoint registered without `event_types` gets all
the others."""
USUAL_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t not in OPT_IN)

PAYLOAD_VERSION = 1
DEFAULT_OVERLAP = timedelta(hours=24)
"""How long a rotated secret keeps signing beside its successor, unless told otherwise."""


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"
    title = "Unknown webhook endpoint"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"
    title = "No such delivery"


@dataclass(frozen=True)
class Endpoint:
    id: str
    partner_id: str
    url: str
    event_types: list[str]
    status: str
    failing_since: datetime | None
    disabled_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    event_id: str
    endpoint_id: str
    type: str
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_status: int | None
    last_error: str | None


_ENDPOINT = (
    "SELECT id, partner_id, url, event_types, status, failing_since, disabled_reason, created_at"
    " FROM webhook_endpoints"
)


def get_endpoint(db: Session | Tx, partner_id: str | None, endpoint_id: str) -> Endpoint:
    """The partner's endpoint (any partner's for an operator, `partner_id` None)."""
    row = Tx.of(db).first(
        _ENDPOINT + " WHERE id = %s AND (%s::text IS NULL OR partner_id = %s)",
        (endpoint_id, partner_id, partner_id),
    )
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return Endpoint(**row._asdict())


def list_endpoints(db: Session | Tx, partner_id: str | None) -> list[Endpoint]:
    """The partner's endpoints (every partner's for `partner_id` None), oldest first."""
    rows = Tx.of(db).all(
        _ENDPOINT + " WHERE %s::text IS NULL OR partner_id = %s ORDER BY created_at, id",
        (partner_id, partner_id),
    )
    return [Endpoint(**row._asdict()) for row in rows]


def create_endpoint(
    db: Session | Tx, partner_id: str, url: str, event_types: Sequence[str]
) -> tuple[Endpoint, str]:
    """A new active endpoint and its first signing secret, which is shown only now."""
    tx = Tx.of(db)
    targets.check_url(url, get_settings())
    now = clock.now()
    endpoint_id = new_id("W", 16)
    tx.execute(
        "INSERT INTO webhook_endpoints (id, partner_id, url, event_types, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (endpoint_id, partner_id, url, sorted(set(event_types)), now),
    )
    secret = _add_secret(tx, endpoint_id, now)
    return get_endpoint(tx, partner_id, endpoint_id), secret


def _add_secret(tx: Tx, endpoint_id: str, now: datetime) -> str:
    secret = signing.new_secret()
    tx.execute(
        "INSERT INTO webhook_secrets (endpoint_id, secret, created_at) VALUES (%s, %s, %s)",
        (endpoint_id, secret, now),
    )
    return secret


def update_endpoint(
    db: Session | Tx,
    partner_id: str,
    endpoint_id: str,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
) -> Endpoint:
    """Change the endpoint's URL or the events it receives (deliveries already made keep the
    URL they were made to; pending ones go to the new one)."""
    tx = Tx.of(db)
    get_endpoint(tx, partner_id, endpoint_id)
    if url is not None:
        targets.check_url(url, get_settings())
    tx.execute(
        "UPDATE webhook_endpoints SET url = coalesce(%s, url),"
        " event_types = coalesce(%s, event_types) WHERE id = %s",
        (url, None if event_types is None else sorted(set(event_types)), endpoint_id),
    )
    return get_endpoint(tx, partner_id, endpoint_id)


def disable_endpoint(
    db: Session | Tx, partner_id: str | None, endpoint_id: str, reason: str
) -> Endpoint:
    """Stop delivering to the endpoint: it receives no new event, and its pending deliveries
    fail. Safe to repeat (the first reason is kept)."""
    tx = Tx.of(db)
    endpoint = get_endpoint(tx, partner_id, endpoint_id)
    if endpoint.status == "disabled":
        return endpoint
    tx.execute(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = %s WHERE id = %s",
        (reason, endpoint_id),
    )
    tx.execute(
        "UPDATE webhook_deliveries SET state = 'failed'"
        " WHERE endpoint_id = %s AND state = 'pending'",
        (endpoint_id,),
    )
    return get_endpoint(tx, partner_id, endpoint_id)


def enable_endpoint(db: Session | Tx, partner_id: str | None, endpoint_id: str) -> Endpoint:
    """Deliver to a disabled endpoint again: the events recorded from now on, with a fresh
    three days before failures disable it (those it missed are asked for with `redeliver`).
    Its URL must still pass the safety rules. Safe to repeat."""
    tx = Tx.of(db)
    endpoint = get_endpoint(tx, partner_id, endpoint_id)
    if endpoint.status == "active":
        return endpoint
    targets.check_url(endpoint.url, get_settings())
    tx.execute(
        "UPDATE webhook_endpoints SET status = 'active', disabled_reason = NULL,"
        " failing_since = NULL WHERE id = %s",
        (endpoint_id,),
    )
    return get_endpoint(tx, partner_id, endpoint_id)


def rotate_secret(
    db: Session | Tx, partner_id: str | None, endpoint_id: str, overlap: timedelta
) -> tuple[str, datetime]:
    """A new signing secret for the endpoint; those in force keep signing beside it until the
    overlap ends (at once for no overlap), so a receiver can move to the new one meanwhile.
    Returns the new secret, shown only now, and the end of the overlap."""
    tx = Tx.of(db)
    get_endpoint(tx, partner_id, endpoint_id)
    now = clock.now()
    until = now + overlap
    tx.execute(
        "UPDATE webhook_secrets SET expires_at = %s"
        " WHERE endpoint_id = %s AND (expires_at IS NULL OR expires_at > %s)",
        (until, endpoint_id, until),
    )
    return _add_secret(tx, endpoint_id, now), until


def signing_secrets(db: Session | Tx, endpoint_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each endpoint's secrets in force now, newest first."""
    rows = Tx.of(db).all(
        "SELECT endpoint_id, secret FROM webhook_secrets WHERE endpoint_id = ANY(%s)"
        " AND (expires_at IS NULL OR expires_at > %s) ORDER BY created_at DESC, id DESC",
        (list(endpoint_ids), clock.now()),
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.endpoint_id, []).append(row.secret)
    return found


@dataclass(frozen=True)
class Event:
    """An event: its type and `data` (JSON), for a partner, or, with `partner_id` None, for
    every partner the member is linked to. For an event about a `member_id`, each partner's
    `data` carries the member and the partner's own `customer_ref` for them, and the partner
    whose request made the change (`actor`) reads `own` too (its own references). `once` is the
    key that makes an event sent once (a reminder, a notice) a no-op when emitted again."""

    partner_id: str | None
    type: str
    data: Mapping[str, Any]
    member_id: str | None = None
    once: str | None = None
    actor: str | None = None
    own: Mapping[str, Any] | None = None


_EMIT = """
WITH input AS (
    SELECT * FROM unnest(%(partners)s::text[], %(types)s::text[], %(data)s::jsonb[],
        %(members)s::text[], %(once)s::text[], %(actors)s::text[], %(own)s::jsonb[])
        WITH ORDINALITY AS i(partner_id, type, data, member_id, dedupe_key, actor, own, n)
), targets AS (
    SELECT i.n, i.type, i.data, i.member_id, i.dedupe_key, i.actor, i.own, i.partner_id
    FROM input i WHERE i.partner_id IS NOT NULL
    UNION ALL
    SELECT i.n, i.type, i.data, i.member_id, i.dedupe_key, i.actor, i.own, l.partner_id
    FROM input i JOIN member_links l ON l.member_id = i.member_id WHERE i.partner_id IS NULL
), subscribed AS (
    SELECT t.*, nextval('webhook_event_sequence') AS sequence,
        'msg_' || upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 26)) AS id
    FROM targets t
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.partner_id = t.partner_id
        AND e.status = 'active' AND t.type = ANY(e.event_types))
    ORDER BY t.n, t.partner_id
), written AS (
    INSERT INTO webhook_events (id, partner_id, type, payload, created_at, sequence, dedupe_key)
    SELECT s.id, s.partner_id, s.type, jsonb_build_object('type', s.type,
        'version', %(version)s::int, 'timestamp', %(timestamp)s::text, 'sequence', s.sequence,
        'data', s.data
            || CASE WHEN s.partner_id = s.actor THEN coalesce(s.own, '{}') ELSE '{}' END
            || CASE WHEN s.member_id IS NULL THEN '{}' ELSE jsonb_build_object(
                'member_id', s.member_id, 'customer_ref', l.customer_ref) END),
        %(now)s, s.sequence, s.dedupe_key
    FROM subscribed s
    LEFT JOIN member_links l ON l.partner_id = s.partner_id AND l.member_id = s.member_id
    ON CONFLICT (partner_id, dedupe_key) DO NOTHING
    RETURNING id, partner_id, type
), delivering AS (
    INSERT INTO webhook_deliveries (event_id, endpoint_id, next_attempt_at, created_at)
    SELECT w.id, e.id, %(now)s, %(now)s FROM written w JOIN webhook_endpoints e
        ON e.partner_id = w.partner_id AND e.status = 'active' AND w.type = ANY(e.event_types)
)
SELECT id FROM written
"""
"""One statement for all the events of a change: each partner's copy (those linked to the
member, for an event for all of them) with its sequence and id (`msg_` and 26 random hex
digits, all of them Crockford base-32 characters), and a delivery to each endpoint."""


def _load_subscriptions(tx: Tx) -> dict[str, frozenset[str]]:
    rows = tx.all(
        "SELECT partner_id, array_agg(DISTINCT t) AS types FROM webhook_endpoints,"
        " unnest(event_types) t WHERE status = 'active' GROUP BY partner_id"
    )
    return {row.partner_id: frozenset(row.types) for row in rows}


_subscriptions: Reference[dict[str, frozenset[str]]] = Reference(
    ("webhook_endpoints",), _load_subscriptions
)
"""Each partner's event types with an active endpoint, kept in each process."""


def heard(db: Session | Tx, type: str, partner_id: str | None = None) -> bool:
    """Whether an active endpoint of the partner (of any partner, for None) receives the type:
    when none does, the caller need not even build the event. From each process's copy."""
    return _hears(_subscriptions.get(Tx.of(db)), type, partner_id)


def _hears(subscribed: dict[str, frozenset[str]], type: str, partner_id: str | None) -> bool:
    if partner_id is not None:
        return type in subscribed.get(partner_id, ())
    return any(type in types for types in subscribed.values())


def emit_all(db: Session | Tx, events: Sequence[Event]) -> list[str]:
    """Record the events in the caller's transaction, one statement for them all, each with a
    pending delivery to every active endpoint of its partner subscribed to its type; return the
    ids (`msg_…`, the webhook-id of every delivery) of those written. An event no endpoint
    subscribes to is not written (and when none is, no statement is sent), nor one sent once
    already (the same `once` key)."""
    for event in events:
        assert event.type in EVENT_TYPES, f"unknown event type {event.type}"
    tx = Tx.of(db)
    if events:
        subscribed = _subscriptions.get(tx)
        events = [e for e in events if _hears(subscribed, e.type, e.partner_id)]
    if not events:
        return []
    now = clock.now()
    rows = tx.all(
        _EMIT,
        {
            "partners": [event.partner_id for event in events],
            "types": [event.type for event in events],
            "data": [json.dumps(event.data) for event in events],
            "members": [event.member_id for event in events],
            "once": [event.once for event in events],
            "actors": [event.actor for event in events],
            "own": [None if event.own is None else json.dumps(event.own) for event in events],
            "version": PAYLOAD_VERSION,
            "timestamp": now.isoformat(),
            "now": now,
        },
    )
    return [row.id for row in rows]


def emit(
    db: Session | Tx,
    partner_id: str,
    type: str,
    data: Mapping[str, Any],
    *,
    member_id: str | None = None,
    once: str | None = None,
) -> str | None:
    """Record one event for the partner (see `emit_all`); its id, or None when not written."""
    written = emit_all(db, [Event(partner_id, type, data, member_id, once)])
    return written[0] if written else None


def emit_to_linked(
    db: Session | Tx,
    member_id: str,
    type: str,
    data: Mapping[str, Any],
    *,
    actor: tuple[str, Mapping[str, Any]] | None = None,
    once: str | None = None,
) -> list[str]:
    """Record an event about the member for every partner the member is linked to that
    receives its type, each with its own `customer_ref`; the partner whose request made the
    change (`actor`: its id and what only it may read, such as its transaction id) gets those
    fields too. One statement, and none when no partner receives the type. The ids written."""
    partner, own = actor if actor is not None else (None, None)
    return emit_all(db, [Event(None, type, data, member_id, once, partner, own)])


_DELIVERY = (
    "SELECT d.event_id, d.endpoint_id, ev.type, d.state, d.attempts, d.next_attempt_at,"
    " d.created_at, a.status AS last_status, a.error AS last_error"
    " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id"
    " LEFT JOIN LATERAL (SELECT status, error FROM webhook_attempts"
    " WHERE delivery_id = d.id ORDER BY id DESC LIMIT 1) a ON true"
)


def deliveries(
    db: Session | Tx, partner_id: str | None, endpoint_id: str, limit: int = 50
) -> list[Delivery]:
    """The endpoint's latest deliveries, newest first, each with its last attempt's outcome."""
    tx = Tx.of(db)
    get_endpoint(tx, partner_id, endpoint_id)
    rows = tx.all(
        _DELIVERY + " WHERE d.endpoint_id = %s ORDER BY d.created_at DESC, d.id DESC LIMIT %s",
        (endpoint_id, limit),
    )
    return [Delivery(**row._asdict()) for row in rows]


def redeliver(
    db: Session | Tx, partner_id: str | None, endpoint_id: str, event_id: str
) -> Delivery:
    """Send the event to the endpoint again, now, with the same webhook-id and a fresh round of
    retries; an event the endpoint never had (sent before it subscribed) is delivered to it for
    the first time. The endpoint must be active."""
    tx = Tx.of(db)
    endpoint = get_endpoint(tx, partner_id, endpoint_id)
    now = clock.now()
    row = tx.first(
        "INSERT INTO webhook_deliveries"
        " (event_id, endpoint_id, next_attempt_at, created_at, redelivered_at)"
        " SELECT id, %s, %s, %s, %s FROM webhook_events WHERE id = %s AND partner_id = %s"
        " AND %s = 'active'"
        " ON CONFLICT (event_id, endpoint_id) DO UPDATE"
        " SET state = 'pending', attempts = 0, next_attempt_at = EXCLUDED.next_attempt_at,"
        " redelivered_at = EXCLUDED.next_attempt_at"
        " RETURNING id",
        (endpoint_id, now, now, now, event_id, endpoint.partner_id, endpoint.status),
    )
    if row is None:
        raise DeliveryNotFound(
            f"no event {event_id} of the partner to deliver to active endpoint {endpoint_id}"
        )
    found = tx.one(_DELIVERY + " WHERE d.id = %s", (row.id,))
    return Delivery(**found._asdict())
