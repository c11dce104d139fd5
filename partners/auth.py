"""Authenticating a partner request: the signature (partners.signing), the key record, and the
nonce store that refuses replays."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse.errors import DomainError
from partners import keys
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


def authenticate(session: Session, request: HttpRequest) -> AuthenticatedPartner:
    """Verify the request's signature and record its nonce; raise Unauthorized otherwise.

    Runs in the caller's transaction: the nonce is spent only if that transaction commits.
    """
    found: dict[str, keys.PartnerKey] = {}

    def resolve(key_id: str) -> VerificationKey | None:
        record = keys.usable_key(session, key_id)
        if record is None:
            return None
        found[key_id] = record
        return VerificationKey(record.public_key_object(), record.algorithm)

    try:
        verified = verify_request(request, resolve_key=resolve, now=datetime.now(UTC))
    except SignatureRejected as exc:
        log.info("signature refused", extra={"reason": exc.reason, "path": request.path})
        raise Unauthorized() from exc
    fresh = session.execute(
        insert(request_nonces)
        .values(key_id=verified.keyid, nonce=verified.nonce)
        .on_conflict_do_nothing()
        .returning(request_nonces.c.nonce)
    ).first()
    if fresh is None:
        log.info("signature refused", extra={"reason": "nonce_replayed", "path": request.path})
        raise Unauthorized()
    keys.touch_key(session, verified.keyid)
    return AuthenticatedPartner(found[verified.keyid].partner_id, verified.keyid)


def purge_nonces(session: Session) -> int:
    """Forget nonces too old to be accepted again anyway; return how many."""
    result = session.execute(
        delete(request_nonces).where(request_nonces.c.seen_at < func.now() - NONCE_RETENTION)
    )
    return int(getattr(result, "rowcount", 0))
