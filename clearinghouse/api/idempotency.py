"""Idempotent POSTs: the first answer to (partner, Idempotency-Key) is stored and replayed.

- same key, same request: the stored status and body again, nothing done twice;
- same key, another request (method, path, query or body): 422;
- same key while the first request is still running: the second waits for the first to finish
  and then answers as above (the key is taken by a transaction-scoped lock in the request's
  first statement, see partners.gate);
- the answer is written in the transaction that does the request's work, so a crash leaves
  either both or neither, and a retry after a lost answer runs at once; a request that ended in
  a server error (5xx) stores nothing, and its retry runs again.
Records are kept for RETENTION, then purged.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from clearinghouse.api.tables import idempotency_records
from clearinghouse.database import Tx
from clearinghouse.errors import DomainError, InvalidRequest

RETENTION = timedelta(hours=48)
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")


class IdempotencyKeyRequired(DomainError):
    code = "idempotency_key_required"
    status = 400
    title = "Idempotency-Key header required"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused for another request"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used for a different request; use a new key")


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


def store(tx: Tx, partner_id: str, key: str, digest: bytes, response: StoredResponse) -> None:
    """Keep the answer to the request holding the key, in that request's transaction."""
    tx.execute(
        "INSERT INTO idempotency_records (partner_id, key, request_hash, response_status,"
        " response_headers, response_body) VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
        (
            partner_id,
            key,
            digest,
            response.status,
            json.dumps([list(pair) for pair in response.headers]),
            response.body,
        ),
    )


def purge(session: Session) -> int:
    result = session.execute(
        delete(idempotency_records).where(idempotency_records.c.created_at < func.now() - RETENTION)
    )
    return int(getattr(result, "rowcount", 0))
