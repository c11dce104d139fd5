"""Auditors' routes (bearer token, role auditor). Every one runs in a read-only transaction
under the read-only database role."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from clearinghouse import ledger
from clearinghouse.api.deps import Auditor, AuditSession
from clearinghouse.audit import queries, sealing
from clearinghouse.audit.exports import export_journal, record_file
from clearinghouse.audit.queries import EntryFilter, EntryNotFound
from clearinghouse.audit.verify import SEALS_FILE, write_seals
from clearinghouse.errors import InvalidRequest

router = APIRouter(prefix="/audit", tags=["audit"])

Instant = Annotated[datetime | None, Query(description="ISO 8601 instant with its offset.")]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone offset")
    return value


@router.get("/entries", summary="Journal entries, filtered, in id order")
def list_entries(
    session: AuditSession,
    auditor: Auditor,
    account: str | None = None,
    member: str | None = None,
    partner: str | None = None,
    store: str | None = None,
    kind: str | None = None,
    recorded_from: Instant = None,
    recorded_to: Instant = None,
    after: Annotated[int | None, Query(description="The cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = EntryFilter(
        account,
        member,
        partner,
        store,
        kind,
        _aware(recorded_from, "recorded_from"),
        _aware(recorded_to, "recorded_to"),
    )
    entries, next_cursor = queries.find_entries(session, where, after=after, limit=limit)
    return {"entries": [e.as_json() for e in entries], "next": next_cursor}


@router.get(
    "/entries/{entry_id}", summary="One entry: its postings, what it reverses and what reverses it"
)
def get_entry(entry_id: int, session: AuditSession, auditor: Auditor) -> dict[str, Any]:
    detail = queries.entry_detail(session, entry_id)
    proof = sealing.prove(session, entry_id)
    return {
        **detail.entry.as_json(),
        "reversed_by": detail.reversed_by,
        "sealed_in_block": proof.block.number if proof else None,
    }


@router.get("/accounts/{address}/balance", summary="An account's balance, now or as of an instant")
def balance(
    address: str, session: AuditSession, auditor: Auditor, as_of: Instant = None
) -> dict[str, Any]:
    account = ledger.get_account(session, address)
    return {
        "address": account.address,
        "asset": account.asset,
        "as_of": _aware(as_of, "as_of"),
        "balance": ledger.balance(session, address, as_of),
    }


@router.get("/trial-balance", summary="Per asset, debit and credit totals (net zero)")
def trial_balance(
    session: AuditSession, auditor: Auditor, as_of: Instant = None
) -> list[dict[str, Any]]:
    lines = ledger.trial_balance(session, _aware(as_of, "as_of"))
    return [{**asdict(line), "net": line.net} for line in lines]


@router.get("/accounts/{address}/statement", summary="Postings with the running balance")
def statement(
    address: str,
    session: AuditSession,
    auditor: Auditor,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    page = ledger.statement(session, address, limit=limit, cursor=cursor)
    return {
        "address": page.address,
        "asset": page.asset,
        "opening_balance": page.opening_balance,
        "lines": [asdict(line) for line in page.lines],
        "next_cursor": page.next_cursor,
    }


@router.get("/digest", summary="The newest sealed block: its hash digests the whole journal")
def digest(session: AuditSession, auditor: Auditor) -> dict[str, Any]:
    block = sealing.newest_block(session)
    return {"block": None if block is None else block.as_json()}


@router.get("/proofs/{entry_id}", summary="The Merkle inclusion proof of a sealed entry")
def proof(entry_id: int, session: AuditSession, auditor: Auditor) -> dict[str, Any]:
    found = sealing.prove(session, entry_id)
    if found is None:
        queries.entry_detail(session, entry_id)  # 404 when there is no such entry
        raise EntryNotFound(f"entry {entry_id} is not sealed yet")
    return found.as_json()


@router.get(
    "/export",
    summary="The journal recorded in [from, to) as a zip: entries, CSV, beancount, seals, manifest",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def export(
    session: AuditSession,
    auditor: Auditor,
    recorded_from: Annotated[datetime, Query(alias="from")],
    recorded_to: Annotated[datetime, Query(alias="to")],
) -> Response:

    if recorded_from.tzinfo is None or recorded_to.tzinfo is None:
        raise InvalidRequest("from and to need a time zone offset")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        export_journal(session, recorded_from, recorded_to, folder)
        write_seals(session, folder)
        record_file(folder, SEALS_FILE)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, path.name)
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="journal-export.zip"'},
    )
