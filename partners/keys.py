"""Partners' API keys: Ed25519 public keys only (the partner keeps the private key).

A key acts for all the partner's stores, or for one store (held by one of its terminals, when
it names one): an offline store's till signs with a key of its own, which can be revoked
without touching the others. A key may carry an expiry, after which it is refused.

A partner holds at most two active keys per scope, so it can rotate without downtime: add the
new key, move its systems over, then retire the old one with a deadline (it keeps working until
then) or revoke it at once.

The operator manages keys with the CLI; a partner manages its own through the signed API
(partners/key_endpoints.py), with a key for all its stores. A partner acting on its keys sees
its own alone, and cannot retire or revoke its last active key for all stores: it would have
no key left to manage them with.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from partners.auth import PARTNER_WIDE, KeyScope
from partners.directory import get_store, lock_partner
from partners.signing import private_key_to_pem
from partners.tables import partner_keys, request_nonces

MAX_ACTIVE_KEYS = 2
RETIREMENT_DAYS = 7.0
"""How long a retired key keeps working when no deadline is given."""
TERMINAL_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class KeyNotFound(NotFound):
    code = "key_not_found"
    title = "Unknown key"


class TooManyKeys(Conflict):
    code = "too_many_keys"
    title = "Too many active keys"


class LastKeyForAllStores(Conflict):
    code = "last_partner_wide_key"
    title = "The partner's last key for all stores"


@dataclass(frozen=True)
class PartnerKey:
    id: str
    partner_id: str
    algorithm: str
    public_key: bytes
    status: str
    retire_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    store_id: str | None
    terminal_id: str | None
    expires_at: datetime | None

    @property
    def scope(self) -> KeyScope:
        return KeyScope(self.store_id, self.terminal_id)

    def public_key_object(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


def _key(row: Any) -> PartnerKey:
    return PartnerKey(**row._asdict())


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_scope(session: Session, partner_id: str, scope: KeyScope) -> None:
    if scope.store_id is not None:
        get_store(session, partner_id, scope.store_id)
    if scope.terminal_id is None:
        return
    if scope.store_id is None:
        raise InvalidRequest("a terminal is one of a store's: name its store too")
    if not TERMINAL_PATTERN.fullmatch(scope.terminal_id):
        raise InvalidRequest("a terminal id is 1 to 64 letters, digits or . _ : -")


def register_key(
    session: Session,
    partner_id: str,
    public_key: Ed25519PublicKey,
    key_id: str | None = None,
    *,
    scope: KeyScope = PARTNER_WIDE,
    expires_at: datetime | None = None,
) -> PartnerKey:
    """Register a public key as active for the partner, acting for `scope`, until `expires_at`
    if given."""
    lock_partner(session, partner_id)  # serialises key changes per partner
    _check_scope(session, partner_id, scope)
    now = clock.now()
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidRequest("the expiry must carry a time zone")
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("the expiry must be in the future")
    active = session.execute(
        select(func.count()).where(
            partner_keys.c.partner_id == partner_id,
            partner_keys.c.status == "active",
            partner_keys.c.store_id.is_not_distinct_from(scope.store_id),
            partner_keys.c.terminal_id.is_not_distinct_from(scope.terminal_id),
            or_(partner_keys.c.expires_at.is_(None), partner_keys.c.expires_at > now),
        )
    ).scalar_one()
    if active >= MAX_ACTIVE_KEYS:
        raise TooManyKeys(
            f"partner {partner_id} already has {MAX_ACTIVE_KEYS} active keys for {scope}: "
            "retire or revoke one first"
        )
    key_id = key_id or f"{partner_id}-{secrets.token_hex(4)}"
    raw = raw_public_key(public_key)
    clash = session.execute(
        select(partner_keys.c.id).where(
            or_(partner_keys.c.id == key_id, partner_keys.c.public_key == raw)
        )
    ).first()
    if clash is not None:
        # Ids and public keys are unique across partners: name neither the other key nor its
        # partner.
        raise AlreadyExists(f"a key with the id {key_id} or this public key is registered already")
    row = session.execute(
        partner_keys.insert()
        .values(
            id=key_id,
            partner_id=partner_id,
            public_key=raw,
            store_id=scope.store_id,
            terminal_id=scope.terminal_id,
            expires_at=expires_at,
        )
        .returning(*partner_keys.c)
    ).one()
    return _key(row)


def generate_key(
    session: Session,
    partner_id: str,
    private_key_path: Path,
    *,
    scope: KeyScope = PARTNER_WIDE,
    expires_at: datetime | None = None,
) -> PartnerKey:
    """Make a key pair, write the private key as PEM readable by its owner only, and register
    the public key. An existing file is never overwritten."""
    private_key = Ed25519PrivateKey.generate()
    record = register_key(
        session, partner_id, private_key.public_key(), scope=scope, expires_at=expires_at
    )
    try:
        fd = os.open(private_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidRequest(f"{private_key_path} exists; choose another file") from exc
    except OSError as exc:
        raise InvalidRequest(f"cannot write {private_key_path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_to_pem(private_key))
    return record


def _last_seen() -> Any:
    """Each key's newest nonce: its last use since the purge last recorded one."""
    return (
        select(request_nonces.c.key_id, func.max(request_nonces.c.seen_at).label("seen_at"))
        .group_by(request_nonces.c.key_id)
        .subquery()
    )


def list_keys(session: Session, partner_id: str) -> list[PartnerKey]:
    """The partner's keys; a key's last use is read from the nonces its requests spent, so that
    no request writes to its key's row."""
    seen = _last_seen()
    last_used = func.greatest(partner_keys.c.last_used_at, seen.c.seen_at).label("last_used_at")
    columns = [c for c in partner_keys.c if c.name != "last_used_at"]
    rows = session.execute(
        select(*columns, last_used)
        .outerjoin(seen, seen.c.key_id == partner_keys.c.id)
        .where(partner_keys.c.partner_id == partner_id)
        .order_by(partner_keys.c.created_at, partner_keys.c.id)
    )
    return [_key(r) for r in rows]


def record_last_use(session: Session) -> None:
    """Keep each key's last use before its nonces are purged."""
    seen = _last_seen()
    session.execute(
        update(partner_keys)
        .where(
            partner_keys.c.id == seen.c.key_id,
            or_(
                partner_keys.c.last_used_at.is_(None),
                partner_keys.c.last_used_at < seen.c.seen_at,
            ),
        )
        .values(last_used_at=seen.c.seen_at)
    )


def _keep_a_key_for_all_stores(session: Session, partner_id: str, key_id: str) -> None:
    """Refuse to retire or revoke the partner's key `key_id` while it works for all stores and
    no other of its keys for all stores is active and unexpired: the partner would be left
    without a key that can manage keys (a store's key cannot)."""
    now = clock.now()
    k = partner_keys.c
    unexpired = or_(k.expires_at.is_(None), k.expires_at > now)
    works = and_(
        unexpired, or_(k.status == "active", and_(k.status == "retiring", k.retire_at > now))
    )
    rows = session.execute(
        select(k.id, k.store_id, works.label("works")).where(
            k.partner_id == partner_id,
            or_(k.id == key_id, and_(k.store_id.is_(None), k.status == "active", unexpired)),
        )
    ).all()
    target = next((r for r in rows if r.id == key_id), None)
    if target is None or target.store_id is not None or not target.works:
        return
    if not any(r.id != key_id for r in rows):
        raise LastKeyForAllStores(
            f"key {key_id} is the partner's last active key for all stores: register "
            "another before retiring or revoking it"
        )


def _change(
    session: Session,
    key_id: str,
    allowed_from: tuple[str, ...],
    values: dict[str, object],
    partner_id: str | None,
) -> PartnerKey:
    """Set `values` on the key if its status is one of `allowed_from`. With `partner_id` (the
    partner acting on its own keys), another partner's key is unknown and the partner keeps a
    key for all stores (_keep_a_key_for_all_stores)."""
    which = [partner_keys.c.id == key_id]
    if partner_id is not None:
        lock_partner(session, partner_id)  # serialises key changes per partner
        _keep_a_key_for_all_stores(session, partner_id, key_id)
        which.append(partner_keys.c.partner_id == partner_id)
    row = session.execute(
        update(partner_keys)
        .where(*which, partner_keys.c.status.in_(allowed_from))
        .values(**values)
        .returning(*partner_keys.c)
    ).first()
    if row is None:
        status = session.execute(select(partner_keys.c.status).where(*which)).scalar_one_or_none()
        if status is None:
            raise KeyNotFound(f"no key {key_id}")
        raise Conflict(f"key {key_id} is {status}")
    return _key(row)


def retire_key(
    session: Session, key_id: str, retire_at: datetime, *, partner_id: str | None = None
) -> PartnerKey:
    """Keep the key working until `retire_at`, then refuse it. With `partner_id`, the key must
    be that partner's, and not its last active key for all stores."""
    if retire_at.tzinfo is None:
        raise InvalidRequest("the retirement deadline must carry a time zone")
    values: dict[str, object] = {"status": "retiring", "retire_at": retire_at}
    return _change(session, key_id, ("active", "retiring"), values, partner_id)


def revoke_key(session: Session, key_id: str, *, partner_id: str | None = None) -> PartnerKey:
    """Refuse the key from now on. With `partner_id`, the key must be that partner's, and not
    its last active key for all stores."""
    values: dict[str, object] = {"status": "revoked", "retire_at": None, "revoked_at": func.now()}
    return _change(session, key_id, ("active", "retiring"), values, partner_id)
