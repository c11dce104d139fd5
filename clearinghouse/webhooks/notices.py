"""Notices the daily job sends partners ahead of a deadline of theirs: `key.retiring`, an API key
that stops working within RETIRING_NOTICE. Each is sent once per key and deadline (a key
retired again with another deadline is noticed again), so the job may run any number of
times."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock
from clearinghouse.database import Tx, unit_of_work
from clearinghouse.webhooks import service
from clearinghouse.webhooks.schemas import KeyRetiringData, RemainingKey
from partners.auth import KeyRecord, keyring

RETIRING_NOTICE = timedelta(days=7)
"""How long before a retiring key's deadline its partner hears of it."""


def _remaining(keys: list[KeyRecord], retiring: KeyRecord) -> list[RemainingKey]:
    """The partner's keys that keep working after the retiring key's deadline: active, and not
    expiring before it."""
    assert retiring.retire_at is not None
    return [
        RemainingKey(key_id=k.id, store_id=k.scope.store_id, terminal_id=k.scope.terminal_id)
        for k in keys
        if k.partner_id == retiring.partner_id
        and k.status == "active"
        and (k.expires_at is None or k.expires_at > retiring.retire_at)
    ]


def notify_retiring_keys(sessions: sessionmaker[Session]) -> int:
    """In one transaction, a `key.retiring` event for every key that still works now and
    retires within RETIRING_NOTICE, once per key and deadline; the number written (none for a
    partner with no endpoint receiving it, nor for a key noticed already)."""
    with unit_of_work(sessions) as session:
        tx = Tx.of(session)
        if not service.heard(tx, "key.retiring"):
            return 0
        now = clock.now()
        keys = sorted(
            (k for k in keyring.get(tx).values() if k.usable(now)),
            key=lambda k: (k.partner_id, k.id),
        )
        events = []
        for key in keys:
            deadline = key.retire_at
            if key.status != "retiring" or deadline is None or deadline > now + RETIRING_NOTICE:
                continue
            data = KeyRetiringData(
                key_id=key.id,
                store_id=key.scope.store_id,
                terminal_id=key.scope.terminal_id,
                retires_at=deadline,
                remaining_keys=_remaining(keys, key),
            )
            events.append(
                service.Event(
                    key.partner_id,
                    "key.retiring",
                    data.model_dump(mode="json"),
                    once=f"key.retiring:{key.id}:{deadline.isoformat()}",
                )
            )
        return len(service.emit_all(tx, events))
