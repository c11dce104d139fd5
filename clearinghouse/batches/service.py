"""Batches: a file is taken in at once (its lines stored, pending, and those that do not parse
already failed with their problem) and applied later by the worker (clearinghouse.batches.worker);
its progress and its lines' results are read here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from clearinghouse import clock
from clearinghouse.api.problems import problem_body
from clearinghouse.batches import lines as batch_lines
from clearinghouse.batches.lines import PurchaseLine, RedemptionLine, RefundLine, VoidLine
from clearinghouse.database import Tx
from clearinghouse.errors import NotFound
from clearinghouse.ids import new_id
from partners.auth import KeyScope


class BatchNotFound(NotFound):
    code = "batch_not_found"
    title = "Unknown batch"


@dataclass(frozen=True)
class Batch:
    id: str
    partner_id: str
    store_id: str | None
    lines: int
    state: str
    applied: int
    replayed: int
    failed: int
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    file_sha256: bytes

    @property
    def pending(self) -> int:
        return self.lines - self.applied - self.replayed - self.failed


@dataclass(frozen=True)
class LineResult:
    line: int
    operation: str | None
    partner_txn_id: str | None
    state: str
    status: int | None
    result: dict[str, Any] | None


_COLUMNS = (
    "id, partner_id, store_id, lines, state, applied, replayed, failed, received_at,"
    " started_at, finished_at, file_sha256"
)


def line_instance(batch_id: str, number: int) -> str:
    """The `instance` of a line's problem: where the line's result is read."""
    return f"/v1/batches/{batch_id}/results#line-{number}"


def submit(
    tx: Tx, partner_id: str, key_id: str, scope: KeyScope, file: IO[bytes], sha256: bytes
) -> Batch:
    """Take in a file: every line stored, pending, or failed at once with the problem it would
    have had as a single call when it does not parse. A file unreadable as a whole is refused."""
    read = batch_lines.read_file(file)
    members = _members(tx, partner_id, read)
    batch_id = new_id("B", 15)
    now = clock.now()
    failed = [line for line in read if line.operation is None]
    tx.execute(
        "INSERT INTO batches (id, partner_id, key_id, store_id, file_sha256, lines, failed,"
        " received_at, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
        " CASE WHEN %s THEN 'done' ELSE 'received' END)",
        (
            batch_id,
            partner_id,
            key_id,
            scope.store_id,
            sha256,
            len(read),
            len(failed),
            now,
            len(failed) == len(read),
        ),
    )
    with tx.driver.cursor().copy(
        "COPY batch_lines (batch_id, line_no, operation, partner_txn_id, member_id, member_key,"
        " body, state, status, result, processed_at) FROM STDIN"
    ) as copy:
        for line in read:
            problem = None
            if line.operation is None:
                problem = problem_body(
                    422,
                    "validation_error",
                    "Invalid request",
                    line.detail or "the line is invalid",
                    instance=line_instance(batch_id, line.number),
                    errors=line.errors,
                )
            member = members.get(line.number)
            copy.write_row(
                (
                    batch_id,
                    line.number,
                    line.kind,
                    line.partner_txn_id,
                    member,
                    0,
                    None if line.body is None else json.dumps(line.body),
                    "pending" if problem is None else "failed",
                    None if problem is None else 422,
                    None if problem is None else json.dumps(problem),
                    None if problem is None else now,
                )
            )
    # The hash that puts a group's lines in one lane of the worker (worker.LANES).
    grouped = _groups(read, members)
    tx.execute(
        "UPDATE batch_lines b SET member_key = hashtext(g.key) & 2147483647"
        " FROM unnest(%s::integer[], %s::text[]) AS g(line_no, key)"
        " WHERE b.batch_id = %s AND b.line_no = g.line_no",
        (list(grouped), list(grouped.values()), batch_id),
    )
    if len(failed) == len(read):
        tx.execute("UPDATE batches SET finished_at = %s WHERE id = %s", (now, batch_id))
    return get(tx, partner_id, batch_id, scope)


def _members(tx: Tx, partner_id: str, read: list[batch_lines.Line]) -> dict[int, str]:
    """Each line's member: its own, or for a refund or a void, the member of the purchase or
    redemption it names (earlier in the file, or already recorded). Lines of one member are
    applied in file order, by one lane of the worker."""
    members = {line.number: m for line in read if (m := line.member_id) is not None}
    named: dict[str, str] = {}
    for line in read:
        operation = line.operation
        if isinstance(operation, PurchaseLine | RedemptionLine):
            named.setdefault(operation.partner_txn_id, operation.member_id)
    wanted = {
        line.number: target for line in read if (target := _target(line.operation)) is not None
    }
    unknown = sorted({t for t in wanted.values() if t not in named})
    if unknown:
        rows = tx.all(
            "SELECT partner_txn_id, member_id FROM purchases"
            " WHERE partner_id = %s AND partner_txn_id = ANY(%s)"
            " UNION ALL SELECT substr(k.idempotency_key, 6), h.member_id"
            " FROM journal_keys k JOIN holds h ON h.hold_entry_id = k.entry_id"
            " WHERE k.origin = %s AND k.idempotency_key = ANY(%s)",
            (partner_id, unknown, f"partner:{partner_id}", [f"hold:{t}" for t in unknown]),
        )
        for row in rows:
            named.setdefault(row[0], row[1])
    for number, target in wanted.items():
        if target in named:
            members[number] = named[target]
    return members


def _groups(read: list[batch_lines.Line], members: dict[int, str]) -> dict[int, str]:
    """The group of each line that names a member or a transaction, named by one of its members'
    ids (else by a transaction id): lines that share a member, or a transaction (a purchase and
    its refund, a transaction id sent twice), are in one group, so one lane of the worker
    applies them in file order. Most groups are one member's lines, named by the member's id as
    the shards of a store's sales are (migration 0019)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    names: dict[int, list[str]] = {}
    for line in read:
        named = [f"t:{txn}" for txn in (line.partner_txn_id, _target(line.operation)) if txn]
        if line.number in members:
            named.insert(0, members[line.number])
        if named:
            names[line.number] = named
            first = root(named[0])
            for other in named[1:]:
                joined = root(other)
                if joined != first:
                    # The group keeps the name it had first, a member's where it has one.
                    member_first = not first.startswith("t:") or joined.startswith("t:")
                    keep, drop = (first, joined) if member_first else (joined, first)
                    parent[drop] = keep
                    first = keep
    return {number: root(named[0]) for number, named in names.items()}


def _target(operation: batch_lines.Operation | None) -> str | None:
    """The transaction a refund or a void names."""
    if isinstance(operation, RefundLine):
        return operation.purchase_txn_id
    if isinstance(operation, VoidLine):
        return operation.voids
    return None


def get(tx: Tx, partner_id: str | None, batch_id: str, scope: KeyScope) -> Batch:
    """The partner's batch, any partner's for an operator (`partner_id` None); BatchNotFound
    if none, or if it is another store's and the key acts for one store."""
    row = tx.first(
        "SELECT " + _COLUMNS + " FROM batches WHERE id = %s"
        " AND (%s::text IS NULL OR partner_id = %s)",
        (batch_id, partner_id, partner_id),
    )
    if row is None or (scope.store_id is not None and row.store_id != scope.store_id):
        raise BatchNotFound(f"no batch {batch_id}")
    return Batch(**row._asdict())


def recent(tx: Tx, partner_id: str, scope: KeyScope, limit: int = 50) -> list[Batch]:
    """The partner's latest batches (its store's, for a store's key), newest first."""
    rows = tx.all(
        "SELECT " + _COLUMNS + " FROM batches WHERE partner_id = %s"
        " AND (%s::text IS NULL OR store_id = %s) ORDER BY received_at DESC, id LIMIT %s",
        (partner_id, scope.store_id, scope.store_id, limit),
    )
    return [Batch(**row._asdict()) for row in rows]


def results(
    tx: Tx, partner_id: str, batch_id: str, scope: KeyScope, after: int | None, limit: int
) -> tuple[list[LineResult], int | None]:
    """A page of the batch's line results in line order, and the cursor of the next page."""
    get(tx, partner_id, batch_id, scope)
    rows = tx.all(
        "SELECT line_no AS line, operation, partner_txn_id, state, status, result"
        " FROM batch_lines WHERE batch_id = %s AND line_no > %s ORDER BY line_no LIMIT %s",
        (batch_id, after or 0, limit + 1),
    )
    page = [LineResult(**row._asdict()) for row in rows[:limit]]
    return page, (page[-1].line if len(rows) > limit else None)


def failures(tx: Tx, batch_id: str, limit: int) -> list[LineResult]:
    """The batch's first failed lines, with their problems."""
    rows = tx.all(
        "SELECT line_no AS line, operation, partner_txn_id, state, status, result"
        " FROM batch_lines WHERE batch_id = %s AND state = 'failed' ORDER BY line_no LIMIT %s",
        (batch_id, limit),
    )
    return [LineResult(**row._asdict()) for row in rows]
