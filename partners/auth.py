"""Authenticating a partner request: the signature (partners.signing) against the partner's
keys, which every process keeps in memory (`keyring`), and the nonce store that refuses
replays.

A signature is checked against this process's copy of the keys before the request touches the
database; the request's transaction then reads the keys' version and, if the copy was behind,
confirms the key against the current one (`confirm`), so a revoked key or a suspended partner
is refused from the next request on, in every process."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.api import metrics
from clearinghouse.database import Tx
from clearinghouse.errors import DomainError
from clearinghouse.reference import Reference
from partners.signing import (
    MAX_AGE_SECONDS,
    MAX_SKEW_SECONDS,
    HttpRequest,
    SignatureRejected,
    VerificationKey,
    verify_request,
)
from partners.tables import request_nonces

log = logging.getLogger(__name__)

# A nonce must be remembered for as long as a request carrying it could still be accepted.
NONCE_RETENTION = timedelta(seconds=MAX_AGE_SECONDS + MAX_SKEW_SECONDS)


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"

    def __init__(self) -> None:
        # One message for every failure: which check failed is for our logs only.
        super().__init__("the request signature could not be verified")


@dataclass(frozen=True)
class AuthenticatedPartner:
    partner_id: str
    key_id: str


class OutsideKeyScope(DomainError):
    code = "key_scope"
    status = 403
    title = "Outside the key's scope"


@dataclass(frozen=True)
class KeyScope:
    """What a key may act for: all the partner's stores, or one store (a terminal in it, when
    `terminal_id` is set)."""

    store_id: str | None = None
    terminal_id: str | None = None

    def store_for(self, named: str | None) -> str | None:
        """The store a request acts for: the one it names, else the key's. A key scoped to a
        store may name no other."""
        if named is None:
            return self.store_id
        if self.store_id is not None and named != self.store_id:
            raise OutsideKeyScope(f"this key acts for store {self.store_id} only, not {named}")
        return named

    def sees(self, store_id: str | None) -> bool:
        """A record made at `store_id` (None: at no store) is visible to the key: every record
        of the partner to a partner-wide key, its store's alone to a store's key. What the key
        does not see is as unknown to it as a missing record."""
        return self.store_id is None or store_id == self.store_id

    def __str__(self) -> str:
        if self.store_id is None:
            return "all stores"
        terminal = f" terminal {self.terminal_id}" if self.terminal_id is not None else ""
        return f"store {self.store_id}{terminal}"


PARTNER_WIDE = KeyScope()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    partner_id: str
    algorithm: str
    public_key: Ed25519PublicKey
    raw_public_key: bytes
    status: str
    retire_at: datetime | None
    expires_at: datetime | None
    scope: KeyScope
    partner_active: bool

    def usable(self, now: datetime) -> bool:
        """Requests signed with the key are accepted now: the key is active, or retiring
        before its deadline, it has not expired, and its partner is active."""
        if not self.partner_active:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        if self.status == "active":
            return True
        return self.status == "retiring" and self.retire_at is not None and self.retire_at > now


Keyring = Mapping[str, KeyRecord]

_KEYS = """
SELECT k.id, k.partner_id, k.algorithm, k.public_key, k.status, k.retire_at, k.expires_at,
       k.store_id, k.terminal_id, p.status = 'active' AS partner_active
  FROM partner_keys k JOIN partners p ON p.id = k.partner_id
 WHERE k.status <> 'revoked'
"""


def _load_keyring(tx: Tx) -> Keyring:
    return {
        row.id: KeyRecord(
            id=row.id,
            partner_id=row.partner_id,
            algorithm=row.algorithm,
            public_key=Ed25519PublicKey.from_public_bytes(row.public_key),
            raw_public_key=row.public_key,
            status=row.status,
            retire_at=row.retire_at,
            expires_at=row.expires_at,
            scope=KeyScope(row.store_id, row.terminal_id),
            partner_active=row.partner_active,
        )
        for row in tx.all(_KEYS)
    }


keyring: Reference[Keyring] = Reference(("partners", "partner_keys"), _load_keyring)


@dataclass(frozen=True)
class Verified:
    """A request whose signature is good under the key `key`; its nonce is not spent yet."""

    key: KeyRecord
    nonce: str

    @property
    def partner(self) -> AuthenticatedPartner:
        return AuthenticatedPartner(self.key.partner_id, self.key.id)


class UnknownKey(Exception):
    """The keyring at hand has no usable key by this id: it may be behind."""


def verify(
    request: HttpRequest, ring: Keyring, now: datetime | None = None, *, current: bool = False
) -> Verified:
    """Check the request's signature with the keys in `ring`. When the key is not usable in
    `ring`, raises UnknownKey so that the caller may look at the current keyring and try again,
    or, with `current` (the caller just did), Unauthorized like every other failure."""
    moment = now or clock.now()
    found: list[KeyRecord] = []

    def resolve(key_id: str) -> VerificationKey | None:
        record = ring.get(key_id)
        if record is None or not record.usable(moment):
            return None
        found.append(record)
        return VerificationKey(record.public_key, record.algorithm)

    try:
        verified = verify_request(request, resolve_key=resolve, now=moment)
    except SignatureRejected as exc:
        if exc.reason == "unknown_keyid" and not current:
            raise UnknownKey from exc
        log.info("signature refused", extra={"reason": exc.reason, "path": request.path})
        metrics.signature_failures.labels(exc.reason).inc()
        raise Unauthorized() from exc
    return Verified(found[0], verified.nonce)


def confirm(tx: Tx, verified: Verified, now: datetime | None = None) -> None:
    """Refuse the request unless its key is still usable in the keyring this transaction sees
    (a key revoked, or a partner suspended, since this process last looked)."""
    current = keyring.get(tx).get(verified.key.id)
    if (
        current is None
        or not current.usable(now or clock.now())
        or current.raw_public_key != verified.key.raw_public_key
        or current.partner_id != verified.key.partner_id
    ):
        log.info("signature refused", extra={"reason": "key_no_longer_usable"})
        metrics.signature_failures.labels("key_no_longer_usable").inc()
        raise Unauthorized()


def purge_nonces(session: Session) -> int:
    """Forget nonces too old to be accepted again anyway; return how many."""
    result = session.execute(
        delete(request_nonces).where(request_nonces.c.seen_at < func.now() - NONCE_RETENTION)
    )
    return int(getattr(result, "rowcount", 0))
