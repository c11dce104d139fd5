"""The auditors' API's answers: journal entries in their canonical form, balances, statements,
seals and inclusion proofs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from clearinghouse.api.schemas import ResponseModel


class EntryOut(ResponseModel):
    """A journal entry in the canonical form the seals hash (instants in UTC, microseconds)."""

    id: int
    kind: str
    origin: str
    idempotency_key: str
    request_hash: str
    occurred_at: str
    recorded_at: str
    metadata: dict[str, Any]
    reverses_id: int | None
    postings: list[tuple[str, str, int]] = Field(
        description="[account address, asset, amount], in posting order."
    )


class EntryPageOut(ResponseModel):
    entries: list[EntryOut]
    next: int | None = Field(description="The cursor of the next page (`after`), if any.")


class EntryDetailOut(EntryOut):
    reversed_by: list[int] = Field(description="The entries that reverse this one.")
    sealed_in_block: int | None


class BalanceOut(ResponseModel):
    address: str
    asset: str
    as_of: datetime | None
    balance: int


class TrialBalanceLineOut(ResponseModel):
    asset: str
    accounts: int
    debit: int
    credit: int
    net: int = Field(description="Always zero in balanced books.")


class AccountBalanceOut(ResponseModel):
    """One account of the trial balance."""

    address: str
    owner_type: str
    kind: str
    asset: str
    debit: int = Field(description="The balance when positive, else 0.")
    credit: int = Field(description="Minus the balance when negative, else 0.")
    balance: int = Field(description="Debit minus credit, in the asset's unit (CNY: fen).")


class TrialBalanceOut(ResponseModel):
    as_of: datetime | None = Field(description="None: now.")
    accounts: list[AccountBalanceOut] = Field(
        description="Every account with a non-zero balance, in address order, a page at a time."
    )
    totals: list[TrialBalanceLineOut] | None = Field(
        description="Per asset, over all accounts: on the first page (no `after`) only."
    )
    next: str | None = Field(description="The cursor of the next page (`after`), if any.")


class StatementLineOut(ResponseModel):
    posting_id: int
    entry_id: int
    kind: str
    recorded_at: datetime
    occurred_at: datetime
    amount: int
    balance: int


class StatementPageOut(ResponseModel):
    address: str
    asset: str
    opening_balance: int
    lines: list[StatementLineOut]
    next_cursor: str | None


class BlockOut(ResponseModel):
    """A sealed block; hashes in hex."""

    number: int
    entry_count: int
    merkle_root: str
    previous_hash: str
    block_hash: str
    sealed_at: str


class DigestOut(ResponseModel):
    block: BlockOut | None = Field(description="None until the first block is sealed.")


class ProofStepOut(ResponseModel):
    side: str
    hash: str


class LaterBlockOut(ResponseModel):
    number: int
    entry_count: int
    merkle_root: str


class ProofOut(ResponseModel):
    entry: EntryOut
    block: BlockOut
    index: int
    path: list[ProofStepOut]
    later_blocks: list[LaterBlockOut]
    newest_digest: str
