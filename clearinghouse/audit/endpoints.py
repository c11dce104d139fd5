"""Auditors' routes (bearer token, role auditor). Every one runs in a read-only transaction
under the read-only database role, on the replica when there is one fresh enough."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from clearinghouse import ledger
from clearinghouse.api.deps import AuditSession, freshness_headers
from clearinghouse.api.schemas import BIGINT_MAX, Instant, RowId
from clearinghouse.audit import queries, sealing
from clearinghouse.audit.queries import EntryFilter, EntryNotFound
from clearinghouse.audit.schemas import (
    AccountBalanceOut,
    BalanceOut,
    BlockOut,
    DigestOut,
    EntryDetailOut,
    EntryOut,
    EntryPageOut,
    ProofOut,
    StatementPageOut,
    TrialBalanceLineOut,
    TrialBalanceOut,
)
from clearinghouse.audit.verify import export_sealed
from clearinghouse.errors import InvalidRequest
from clearinghouse.users.deps import Auditor

router = APIRouter(prefix="/audit", tags=["audit"])

_CHUNK = 1 << 20

InstantQuery = Annotated[Instant | None, Query(description="ISO 8601 instant with its offset.")]


@router.get("/entries", summary="Journal entries, filtered, in id order")
def list_entries(
    session: AuditSession,
    auditor: Auditor,
    account: str | None = None,
    member: str | None = None,
    partner: str | None = None,
    store: str | None = None,
    kind: str | None = None,
    recorded_from: InstantQuery = None,
    recorded_to: InstantQuery = None,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="The cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EntryPageOut:
    where = EntryFilter(account, member, partner, store, kind, recorded_from, recorded_to)
    entries, next_cursor = queries.find_entries(session, where, after=after, limit=limit)
    return EntryPageOut(
        entries=[EntryOut.model_validate(e.as_json()) for e in entries], next=next_cursor
    )


@router.get(
    "/entries/{entry_id}", summary="One entry: its postings, what it reverses and what reverses it"
)
def get_entry(entry_id: RowId, session: AuditSession, auditor: Auditor) -> EntryDetailOut:
    detail = queries.entry_detail(session, entry_id)
    proof = sealing.prove(session, entry_id)
    return EntryDetailOut.model_validate(
        {
            **detail.entry.as_json(),
            "reversed_by": detail.reversed_by,
            "sealed_in_block": proof.block.number if proof else None,
        }
    )


@router.get("/accounts/{address}/balance", summary="An account's balance, now or as of an instant")
def balance(
    address: str, session: AuditSession, auditor: Auditor, as_of: InstantQuery = None
) -> BalanceOut:
    account = ledger.get_account(session, address)
    return BalanceOut(
        address=account.address,
        asset=account.asset,
        as_of=as_of,
        balance=ledger.balance(session, address, as_of),
    )


@router.get(
    "/trial-balance",
    summary="Every account's balance as a debit or credit, and per asset totals that net to zero",
)
def trial_balance(
    session: AuditSession,
    auditor: Auditor,
    as_of: InstantQuery = None,
    after: Annotated[
        str | None, Query(max_length=200, description="The cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> TrialBalanceOut:
    lines = ledger.trial_balance_accounts(session, as_of, after=after, limit=limit + 1)
    totals = None if after is not None else ledger.trial_balance(session, as_of)
    return TrialBalanceOut(
        as_of=as_of,
        accounts=[AccountBalanceOut.model_validate(line) for line in lines[:limit]],
        totals=None if totals is None else [TrialBalanceLineOut.model_validate(t) for t in totals],
        next=lines[limit - 1].address if len(lines) > limit else None,
    )


@router.get("/accounts/{address}/statement", summary="Postings with the running balance")
def statement(
    address: str,
    session: AuditSession,
    auditor: Auditor,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> StatementPageOut:
    page = ledger.statement(session, address, limit=limit, cursor=cursor)
    return StatementPageOut.model_validate(page)


@router.get("/digest", summary="The newest sealed block: its hash digests the whole journal")
def digest(session: AuditSession, auditor: Auditor) -> DigestOut:
    block = sealing.newest_block(session)
    return DigestOut(block=None if block is None else BlockOut.model_validate(block.as_json()))


@router.get("/proofs/{entry_id}", summary="The Merkle inclusion proof of a sealed entry")
def proof(entry_id: RowId, session: AuditSession, auditor: Auditor) -> ProofOut:
    found = sealing.prove(session, entry_id)
    if found is None:
        queries.entry_detail(session, entry_id)  # 404 when there is no such entry
        raise EntryNotFound(f"entry {entry_id} is not sealed yet")
    return ProofOut.model_validate(found.as_json())


class _Chunks(io.RawIOBase):
    """Where the zip is written, a chunk at a time, until the answer takes it: with no seeking,
    zipfile writes each member's sizes after its data."""

    def __init__(self) -> None:
        super().__init__()
        self._data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        taken = bytes(self._data)
        self._data.clear()
        return taken


def _zipped(folder: Path, tmp: Path) -> Iterator[bytes]:
    """The files of `folder` as a zip, read and compressed a chunk at a time; `tmp` is removed
    once the answer is sent (or abandoned)."""
    try:
        sink = _Chunks()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                member = zipfile.ZipInfo.from_file(path, path.name)
                member.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as source, archive.open(member, "w") as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                        if taken := sink.take():
                            yield taken
        yield sink.take()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@router.get(
    "/export",
    summary="The journal recorded in [from, to) as a zip: entries, CSV, beancount, seals, manifest",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}},
        409: {
            "description": "`from` is in a month archived out of the database: its export is"
            " the archive's (`range_archived`, with `archived_until`)",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    },
)
def export(
    session: AuditSession,
    auditor: Auditor,
    recorded_from: Annotated[Instant, Query(alias="from")],
    recorded_to: Annotated[Instant, Query(alias="to")],
) -> StreamingResponse:
    if recorded_to < recorded_from:
        raise InvalidRequest(
            "to must not be before from",
            errors=[{"field": "query.to", "message": "must not be before from"}],
        )
    # Written to disk a batch at a time in the request's snapshot, then streamed from there:
    # memory stays flat whatever the range.
    tmp = Path(tempfile.mkdtemp(prefix="journal-export-"))
    try:
        export_sealed(session, recorded_from, recorded_to, tmp / "export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StreamingResponse(
        _zipped(tmp / "export", tmp),
        media_type="application/zip",
        headers={
            "Content-Disposition": 'attachment; filename="journal-export.zip"',
            **freshness_headers(session),
        },
    )
