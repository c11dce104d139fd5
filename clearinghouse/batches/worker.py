"""The batch worker: applies the pending lines of open batches, oldest batch first and each
batch in line order (so a member's operations are applied in the order the till made them).

A chunk of lines is applied in one transaction, each line under a savepoint: a line refused is
rolled back alone and its problem kept as its result, the others go on. The lines' effects, their
results and the batch's counters commit together, so a worker stopped at any point (a crash, a
restart, a lost connection) leaves whole chunks done and the rest pending, and the next run
resumes at the first pending line. Each line is also idempotent on its own (its partner_txn_id is
the key of what it writes), so a line is applied at most once even across files: a line whose
transaction was already applied, by a single call or an earlier batch, gives that first result
again and counts as replayed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger, reference
from clearinghouse.api.problems import domain_problem_body, problem_body
from clearinghouse.batches.lines import (
    Operation,
    PurchaseLine,
    RedemptionLine,
    RefundLine,
    VoidLine,
    parse_operation,
)
from clearinghouse.batches.service import line_instance
from clearinghouse.database import Tx, retryable, unavailable
from clearinghouse.errors import Conflict, DomainError, NotFound
from clearinghouse.points import accrual, holds, offline, refunds
from clearinghouse.points.schemas import (
    AccrualOut,
    OfflineRedemptionOut,
    RedemptionRefundOut,
    RefundOut,
)
from partners.auth import KeyScope

log = logging.getLogger(__name__)

CHUNK_LINES = 50
"""Lines applied per transaction: enough that commits are few; few enough that a restart redoes
little, the member locks a chunk takes are not held long, and its savepoints stay within the 64
subtransactions PostgreSQL keeps in shared memory (past them, every snapshot taken elsewhere
slows down)."""


class VoidTargetNotFound(NotFound):
    code = "void_target_not_found"
    title = "Nothing to void"


@dataclass(frozen=True)
class _Open:
    id: str
    partner_id: str
    store_id: str | None
    state: str


def _key(operation: Operation) -> tuple[str, ...] | None:
    """What names the operation's effect among the partner's (a void is keyed by its target's
    refund, and tells replays itself)."""
    if isinstance(operation, PurchaseLine):
        return ("purchase", operation.partner_txn_id)
    if isinstance(operation, RefundLine):
        return ("refund", operation.purchase_txn_id, operation.partner_txn_id)
    if isinstance(operation, RedemptionLine):
        return ("redemption", operation.partner_txn_id)
    return None


@dataclass
class _Known:
    """The effects of this chunk's lines that exist already (from before the chunk, or earlier
    in it): a line whose effect exists is a replay."""

    keys: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def read(cls, tx: Tx, partner_id: str, operations: list[Operation]) -> _Known:
        purchases = [op.partner_txn_id for op in operations if isinstance(op, PurchaseLine)]
        refunded = [op for op in operations if isinstance(op, RefundLine)]
        redeemed = [
            f"hold:{op.partner_txn_id}" for op in operations if isinstance(op, RedemptionLine)
        ]
        rows = tx.all(
            "SELECT 'purchase' AS kind, partner_txn_id AS txn, NULL AS refund FROM purchases"
            " WHERE partner_id = %s AND partner_txn_id = ANY(%s)"
            " UNION ALL SELECT 'refund', p.partner_txn_id, r.partner_refund_id"
            " FROM purchases p JOIN refunds r ON r.purchase_id = p.id"
            " WHERE p.partner_id = %s AND p.partner_txn_id = ANY(%s)"
            " AND r.partner_refund_id = ANY(%s)"
            " UNION ALL SELECT 'redemption', substr(idempotency_key, 6), NULL"
            " FROM journal_keys WHERE origin = %s AND idempotency_key = ANY(%s)",
            (
                partner_id,
                purchases,
                partner_id,
                [op.purchase_txn_id for op in refunded],
                [op.partner_txn_id for op in refunded],
                f"partner:{partner_id}",
                redeemed,
            ),
        )
        return cls({tuple(value for value in row if value is not None) for row in rows})

    def seen(self, operation: Operation) -> bool:
        """Whether the operation's effect exists already; it does, from now on."""
        key = _key(operation)
        if key is None:
            return False
        known = key in self.keys
        self.keys.add(key)
        return known


def _void(tx: Tx, partner_id: str, scope: KeyScope, line: VoidLine) -> tuple[BaseModel, bool]:
    """Refund what remains of the purchase `line.voids`, or give back what remains of the
    offline redemption it names; the void's own id keys the refund."""
    purchase = tx.first(
        "SELECT id, amount_fen, refunded_fen FROM purchases"
        " WHERE partner_id = %s AND partner_txn_id = %s",
        (partner_id, line.voids),
    )
    if purchase is not None:
        earlier = tx.scalar(
            "SELECT amount_fen FROM refunds WHERE purchase_id = %s AND partner_refund_id = %s",
            (purchase.id, line.partner_txn_id),
        )
        amount = earlier or purchase.amount_fen - purchase.refunded_fen
        if not amount:
            raise Conflict(f"purchase {line.voids} is refunded in full already")
        refund = refunds.refund_purchase(
            tx, partner_id, line.voids, line.partner_txn_id, amount, scope
        )
        return RefundOut.model_validate(refund), earlier is not None
    hold_id = tx.scalar(
        "SELECT h.id FROM holds h JOIN journal_keys k ON k.entry_id = h.hold_entry_id"
        " WHERE k.origin = %s AND k.idempotency_key = %s",
        (f"partner:{partner_id}", f"hold:{line.voids}"),
    )
    if hold_id is None:
        raise VoidTargetNotFound(f"no purchase or redemption {line.voids} to void")
    hold = holds.get_hold(tx, partner_id, hold_id, scope)
    earlier_entry = ledger.find_entry(
        tx.session,
        f"partner:{partner_id}",
        refunds.redemption_refund_key(hold_id, line.partner_txn_id),
    )
    points = hold.captured - hold.refunded
    if earlier_entry is not None:
        # The partner's `redeemed` leg gives all the points back (the rest may repay a debt).
        points = max(-p.amount for p in ledger.entry_postings(tx.session, earlier_entry))
    if not points:
        raise Conflict(f"redemption {line.voids} is given back in full already")
    given_back = refunds.refund_redemption(
        tx.session, partner_id, hold_id, points, key=line.partner_txn_id, scope=scope
    )
    return RedemptionRefundOut.model_validate(given_back), earlier_entry is not None


def _apply(tx: Tx, batch: _Open, operation: Operation) -> tuple[BaseModel, bool]:
    """The line's effect and its answer, as its single call would give it; whether it was a
    replay is decided by the caller, except for voids."""
    scope = KeyScope(batch.store_id)
    partner_id = batch.partner_id
    if isinstance(operation, PurchaseLine):
        report = accrual.report_of(operation, scope.store_for(operation.store_id))
        return AccrualOut.model_validate(accrual.accrue(tx, partner_id, report)), False
    if isinstance(operation, RefundLine):
        refund = refunds.refund_purchase(
            tx,
            partner_id,
            operation.purchase_txn_id,
            operation.partner_txn_id,
            operation.amount_fen,
            scope,
        )
        return RefundOut.model_validate(refund), False
    if isinstance(operation, RedemptionLine):
        redeemed = offline.redeem_offline(
            tx,
            partner_id,
            operation.member_id,
            operation.points,
            key=operation.partner_txn_id,
            store_id=scope.store_for(operation.store_id),
            occurred_at=operation.occurred_at,
            partner_ref=operation.partner_txn_id,
        )
        return OfflineRedemptionOut.model_validate(redeemed), False
    return _void(tx, partner_id, scope, operation)


@dataclass(frozen=True)
class _Outcome:
    line: int
    state: str
    status: int
    result: dict[str, Any]


@contextmanager
def _savepoint(tx: Tx) -> Iterator[None]:
    """The line's work, undone alone if it fails. Straight through the driver, as the line's
    own statements are: SQLAlchemy's nested transaction cost about 0.3 ms of CPU a line."""
    tx.execute("SAVEPOINT batch_line")
    try:
        yield
    except BaseException:
        if not (tx.driver.closed or tx.driver.broken):
            tx.execute("ROLLBACK TO SAVEPOINT batch_line")
        raise
    tx.execute("RELEASE SAVEPOINT batch_line")


def _line(tx: Tx, batch: _Open, number: int, operation: Operation, known: _Known) -> _Outcome:
    replay = known.seen(operation)
    try:
        with _savepoint(tx):
            answer, void_replay = _apply(tx, batch, operation)
    except DomainError as refusal:
        refusal.keep(tx)
        problem = domain_problem_body(refusal, line_instance(batch.id, number))
        return _Outcome(number, "failed", refusal.status, problem)
    except Exception as error:
        if retryable(error) or unavailable(error):
            raise
        log.exception("batch %s line %s failed", batch.id, number)
        problem = problem_body(
            500,
            "internal_error",
            "Internal error",
            "an internal error occurred; it has been logged",
            instance=line_instance(batch.id, number),
        )
        return _Outcome(number, "failed", 500, problem)
    state = "replayed" if replay or void_replay else "applied"
    return _Outcome(number, state, 201, answer.model_dump(mode="json"))


RACES_RETRIED = 5
"""Times in a row a chunk that lost a race runs again before the lane gives up until the next
run of the job."""

LANES = 2
"""Transactions that apply a batch at once, each on its own connection, each for its own members:
a line's lane is its `member_key` (PostgreSQL's `hashtext` of its member's id, made
non-negative) modulo LANES, so a member's lines all fall in one lane and are applied in file
order. LANES divides the 16 shards of a store's hourly sales, which are chosen by the same hash
(migration 0019): two lanes never write the same shard, and so never wait for each other there."""


def _open_batches(tx: Tx, batch_id: str | None) -> list[_Open]:
    rows = tx.all(
        "SELECT id, partner_id, store_id, state FROM batches WHERE state <> 'done'"
        " AND (%s::text IS NULL OR id = %s) ORDER BY received_at, id LIMIT 100",
        (batch_id, batch_id),
    )
    return [_Open(**row._asdict()) for row in rows]


def _pending(tx: Tx, batch: _Open, lane: int, limit: int) -> list[Any] | None:
    """The next pending lines of the batch in `lane`, locked; None if another worker holds the
    lane (its lock lasts until this transaction ends)."""
    if not tx.scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('batch:' || %s), %s)", (batch.id, lane)
    ):
        return None
    return tx.all(
        "SELECT line_no, body FROM batch_lines WHERE batch_id = %s AND state = 'pending'"
        " AND member_key %% %s = %s ORDER BY line_no LIMIT %s FOR UPDATE",
        (batch.id, LANES, lane, limit),
    )


def _record(tx: Tx, batch: _Open, outcomes: list[_Outcome], now: datetime) -> None:
    """The lines' results and the batch's counts; the batch is done with its last line."""
    tx.driver.cursor().executemany(
        "UPDATE batch_lines SET state = %s, status = %s, result = %s, processed_at = %s"
        " WHERE batch_id = %s AND line_no = %s",
        [(o.state, o.status, json.dumps(o.result), now, batch.id, o.line) for o in outcomes],
    )
    counts = {
        state: sum(o.state == state for o in outcomes)
        for state in ("applied", "replayed", "failed")
    }
    tx.execute(
        "UPDATE batches SET applied = applied + %s, replayed = replayed + %s,"
        " failed = failed + %s, started_at = coalesce(started_at, %s),"
        " state = CASE WHEN applied + replayed + failed + %s = lines THEN 'done'"
        " ELSE 'processing' END,"
        " finished_at = CASE WHEN applied + replayed + failed + %s = lines THEN %s END"
        " WHERE id = %s",
        (
            counts["applied"],
            counts["replayed"],
            counts["failed"],
            now,
            len(outcomes),
            len(outcomes),
            now,
            batch.id,
        ),
    )


def apply_chunk(
    tx: Tx, lane: int = 0, limit: int = CHUNK_LINES, batch_id: str | None = None
) -> int | None:
    """Apply the next pending lines in `lane` of the oldest open batch (or of `batch_id`) whose
    lane no other worker holds; return how many, or None when there are none."""
    for batch in _open_batches(tx, batch_id):
        pending = _pending(tx, batch, lane, limit)
        if pending:
            now = clock.now()
            reference.pin(tx)  # no line changes reference data
            operations = [(row.line_no, parse_operation(row.body)) for row in pending]
            known = _Known.read(tx, batch.partner_id, [op for _, op in operations])
            outcomes = [_line(tx, batch, number, op, known) for number, op in operations]
            _record(tx, batch, outcomes, now)
            return len(outcomes)
    return None


def _drain(sessions: sessionmaker[Session], lane: int, limit: int, batch_id: str | None) -> int:
    """Apply the lane's chunks until none is left. A chunk that lost a race (a deadlock with
    another transaction, a serialization failure) left nothing behind and runs again."""
    applied, lost = 0, 0
    while True:
        try:
            with sessions() as session, session.begin():
                done = apply_chunk(Tx.of(session), lane, limit, batch_id)
        except Exception as error:
            reason = retryable(error)
            if reason is None or lost == RACES_RETRIED:
                raise
            lost += 1
            log.warning("batch lane %s: a chunk %s; applying it again", lane, reason)
            continue
        if done is None:
            return applied
        applied, lost = applied + done, 0


def process_batches(
    sessions: sessionmaker[Session],
    limit: int = CHUNK_LINES,
    batch_id: str | None = None,
    threads: int = LANES,
) -> int:
    """Apply every pending line of every open batch (or of `batch_id`), a chunk per transaction,
    the lanes on `threads` connections at once (one: one lane after another); return how many
    lines were applied. Safe to run twice or at once: a lane of a batch is worked by one
    transaction at a time, and a line is applied once."""
    with ThreadPoolExecutor(threads, thread_name_prefix="batch-lane") as pool:
        drained = pool.map(lambda lane: _drain(sessions, lane, limit, batch_id), range(LANES))
        return sum(drained)
