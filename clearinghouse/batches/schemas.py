"""The batch API's answers: a batch's progress, and its lines' results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from clearinghouse.api.schemas import ResponseModel


class BatchOut(ResponseModel):
    batch_id: str = Field(validation_alias="id")
    store_id: str | None = Field(description="The store of the key that sent it, if any.")
    state: str = Field(description="`received`, `processing` or `done`.")
    lines: int = Field(description="Operations in the file.")
    applied: int = Field(description="Lines whose operation took effect now.")
    replayed: int = Field(
        description="Lines whose transaction had taken effect already (sent singly, earlier in"
        " the file or in an earlier file): the first result again, nothing done twice."
    )
    failed: int = Field(description="Lines refused, each with its problem.")
    pending: int = Field(description="Lines not applied yet.")
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    file_sha256: str = Field(description="SHA-256 of the file as sent, in hex.")

    @classmethod
    def of(cls, batch: Any) -> BatchOut:
        return cls.model_validate(
            {**batch.__dict__, "pending": batch.pending, "file_sha256": batch.file_sha256.hex()}
        )


class LineResultOut(ResponseModel):
    line: int = Field(description="The line's number in the file, from 1.")
    operation: str | None
    partner_txn_id: str | None
    state: str = Field(description="`pending`, `applied`, `replayed` or `failed`.")
    status: int | None = Field(description="The HTTP status the line would have had as a call.")
    result: dict[str, Any] | None = Field(
        description="The single call's answer, or its problem+json."
    )


class LineResultPageOut(ResponseModel):
    results: list[LineResultOut]
    next: int | None = Field(description="The cursor of the next page (`after`), if any.")
