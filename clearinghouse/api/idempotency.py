"""Idempotent POSTs: the first answer to (partner, Idempotency-Key) is stored and replayed.

- same key, same request: the stored status and body again, nothing done twice;
- same key, another request (method, path, query or body): 422;
- same key while the first request is still running: 409;
- a request that ended in a server error (5xx) is not stored: its retry runs again. Writes done
  under a key are idempotent in the ledger as well, so a retry after a crash between commit and
  storing the answer still posts nothing twice.
Records are kept for RETENTION, then purged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse.api.tables import idempotency_records
from clearinghouse.errors import Conflict, DomainError, InvalidRequest

RETENTION = timedelta(hours=48)
# How long a claim holds before another attempt may take the key over (a crashed worker's).
LEASE = timedelta(seconds=60)
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")


class IdempotencyKeyRequired(DomainError):
    code = "idempotency_key_required"
    status = 400
    title = "Idempotency-Key header required"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused for another request"


class RequestInProgress(Conflict):
    code = "request_in_progress"
    title = "A request with this idempotency key is still running"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    """As sent, but for Content-Length, which follows from the body."""
    body: bytes


def request_hash(method: str, path: str, query: str, body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(body)
    return digest.digest()


def check_key(key: str | None) -> str:
    if key is None:
        raise IdempotencyKeyRequired("every POST needs an Idempotency-Key header")
    if not KEY_PATTERN.match(key):
        raise InvalidRequest("Idempotency-Key has 1 to 200 visible ASCII characters")
    return key


def claim(session: Session, partner_id: str, key: str, digest: bytes) -> StoredResponse | None:
    """Claim the key for this request. Returns the stored answer when the request was already
    answered, None when the caller should process it now."""
    lease_until = func.now() + LEASE
    claimed = session.execute(
        insert(idempotency_records)
        .values(
            partner_id=partner_id,
            key=key,
            request_hash=digest,
            state="in_progress",
            lease_until=lease_until,
        )
        .on_conflict_do_nothing()
        .returning(idempotency_records.c.key)
    ).first()
    if claimed is not None:
        return None
    record = session.execute(
        select(idempotency_records)
        .where(idempotency_records.c.partner_id == partner_id, idempotency_records.c.key == key)
        .with_for_update()
    ).one()
    if record.request_hash != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    if record.state == "done":
        return StoredResponse(
            record.response_status,
            [(name, value) for name, value in record.response_headers],
            record.response_body,
        )
    taken_over = session.execute(
        update(idempotency_records)
        .where(
            idempotency_records.c.partner_id == partner_id,
            idempotency_records.c.key == key,
            idempotency_records.c.lease_until < func.now(),
        )
        .values(lease_until=lease_until)
        .returning(idempotency_records.c.key)
    ).first()
    if taken_over is None:
        raise RequestInProgress("the first request with this Idempotency-Key is still running")
    return None


def complete(session: Session, partner_id: str, key: str, response: StoredResponse) -> None:
    session.execute(
        update(idempotency_records)
        .where(idempotency_records.c.partner_id == partner_id, idempotency_records.c.key == key)
        .values(
            state="done",
            response_status=response.status,
            response_headers=[list(pair) for pair in response.headers],
            response_body=response.body,
            completed_at=func.now(),
        )
    )


def release(session: Session, partner_id: str, key: str) -> None:
    """Forget an unfinished claim, so that a retry runs the request again."""
    session.execute(
        delete(idempotency_records).where(
            idempotency_records.c.partner_id == partner_id,
            idempotency_records.c.key == key,
            idempotency_records.c.state == "in_progress",
        )
    )


def purge(session: Session) -> int:
    result = session.execute(
        delete(idempotency_records).where(idempotency_records.c.created_at < func.now() - RETENTION)
    )
    return int(getattr(result, "rowcount", 0))
