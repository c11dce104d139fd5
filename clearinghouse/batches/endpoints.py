"""Partner API routes of batch files: upload, progress, results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clearinghouse.api.schemas import BIGINT_MAX
from clearinghouse.batches import lines, service
from clearinghouse.batches.schemas import BatchOut, LineResultOut, LineResultPageOut
from clearinghouse.database import Tx
from partners.gate import Partner

router = APIRouter(prefix="/v1", tags=["batches"])

MEDIA_TYPE = "application/x-ndjson"


@router.post(
    "/batches",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a file of operations (JSON Lines, plain or gzip) to apply in the background",
    description=(
        f"The body is the file itself (`Content-Type: {MEDIA_TYPE}`, gzip-compressed or not),"
        f" signed like any body: up to {lines.MAX_LINES} lines, each a purchase, refund, offline"
        " redemption or void with its own `partner_txn_id` (docs/offline-stores.md). The answer"
        " is 202 with the batch; its lines are applied in order by a worker. A line that does"
        " not parse is failed at once with the problem it would have had as a single call."
    ),
    response_model=BatchOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def submit_batch(call: Partner) -> Response:
    def submitted(tx: Tx) -> BatchOut:
        batch = service.submit(
            tx, call.partner_id, call.key_id, call.scope, call.upload, call.upload_sha256
        )
        return BatchOut.of(batch)

    return await call.answer(submitted)


@router.get("/batches", summary="The partner's latest batches", response_model=list[BatchOut])
async def list_batches(call: Partner, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    return await call.answer(
        lambda tx: [BatchOut.of(b) for b in service.recent(tx, call.partner_id, call.scope, limit)]
    )


@router.get("/batches/{batch_id}", summary="A batch's progress and counts", response_model=BatchOut)
async def get_batch(batch_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: BatchOut.of(service.get(tx, call.partner_id, batch_id, call.scope))
    )


@router.get(
    "/batches/{batch_id}/results",
    summary="A batch's results, one per line, a page at a time",
    response_model=LineResultPageOut,
)
async def batch_results(
    batch_id: str,
    call: Partner,
    after: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="The cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Response:
    def page(tx: Tx) -> LineResultPageOut:
        found, next_cursor = service.results(
            tx, call.partner_id, batch_id, call.scope, after, limit
        )
        return LineResultPageOut(
            results=[LineResultOut.model_validate(r) for r in found], next=next_cursor
        )

    return await call.answer(page)
