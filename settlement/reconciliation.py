"""Reconciliation: a partner uploads its own record of a business day and we compare it, line by
line, with ours. The partner's CSV has the columns `txn_id,type,amount_fen,points`, one row per
transaction, type one of `purchase` (txn_id: the partner's transaction id), `refund`
(`<transaction id>/<refund id>`), `redemption` (the hold's partner_ref, or the hold id), and
for a supplier of the rewards catalogue `reward_order` and `reward_return` (the order id).

A file of a million lines is never held as lines: it is read row by row into a temporary table
(COPY), matched against the day's records in one set-based statement, and its breaks are kept one
row each, numbered in the order of (type, txn_id), to be read a page at a time. The partner
hears of the result by the `reconciliation.completed` webhook, in the same transaction."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import IO, Any

from psycopg import Cursor
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clearinghouse.api.schemas import BIGINT_MAX
from clearinghouse.database import Tx
from clearinghouse.errors import InvalidRequest, NotFound
from clearinghouse.files import sha256_of
from clearinghouse.webhooks import service as webhooks
from settlement.netting import cutoff
from settlement.schemas import BreakCounts, ReconciliationWebhookData
from settlement.tables import reconciliation_breaks, reconciliations

COLUMNS = ("txn_id", "type", "amount_fen", "points")
TYPES = ("purchase", "refund", "redemption", "reward_order", "reward_return")
KINDS = ("missing_ours", "missing_theirs", "amount_differs", "points_differ", "duplicate")
"""The kinds of break, as `_MATCH` tells them apart (a line of theirs we lack, one of ours they
lack, a line on both sides whose amount or points differ, and a line of theirs whose type and
txn_id an earlier line of the file has already)."""
MAX_LINES = 5_000_000
# A file wrong throughout names its first bad lines only: the answer stays small.
MAX_ERRORS = 100
# Plain ASCII digits only: int() would also take "1_000", " 12" or other scripts' digits.
INTEGER = re.compile(r"-?[0-9]{1,19}")


class ReconciliationNotFound(NotFound):
    code = "reconciliation_not_found"
    title = "Unknown reconciliation"


@dataclass(frozen=True)
class Reconciliation:
    id: int
    partner_id: str
    business_date: date
    uploaded_at: datetime
    lines: int
    matched: int
    break_count: int
    resolved_at: datetime | None


@dataclass(frozen=True)
class Break:
    """A line of either side not matched exactly: `kind` is `missing_ours`, `missing_theirs`,
    `amount_differs`, `points_differ` or `duplicate` (a repeated line of theirs: the first of its
    type and txn_id is matched, each later one is this break, with `ours` None); `ours` and
    `theirs` are [amount_fen, points], None on the side without the line."""

    type: str
    txn_id: str
    kind: str
    ours: list[int] | None
    theirs: list[int] | None


# Answers and listings leave the uploaded files out.
_LISTED = [c for c in reconciliations.c if c.name != "file"]

THEIRS = "reconciliation_theirs"
_THEIRS_TABLE = f"""
CREATE TEMPORARY TABLE {THEIRS} (
    line integer NOT NULL,
    type text NOT NULL,
    txn_id text NOT NULL,
    amount_fen bigint NOT NULL,
    points bigint NOT NULL
) ON COMMIT DROP
"""
# Our lines of the partner's day, each type keyed as the partner's file keys it; joined with
# the first of their lines of each (type, txn_id), every line of either side that is not matched
# exactly is a break, and so is each later line of theirs with the same type and txn_id (a
# duplicate); the breaks are numbered in the order of (type, txn_id) by code point, then of the
# file's lines.
_MATCH = f"""
WITH ours (type, txn_id, amount_fen, points) AS (
    SELECT 'purchase'::text, partner_txn_id, amount_fen, points
    FROM purchases
    WHERE partner_id = %(partner)s AND occurred_at >= %(start)s AND occurred_at < %(end)s
    UNION ALL
    -- Refund ids are the partner's own per purchase: "<transaction id>/<refund id>".
    SELECT 'refund', p.partner_txn_id || '/' || r.partner_refund_id, r.amount_fen, r.points
    FROM refunds r JOIN purchases p ON p.id = r.purchase_id
    WHERE p.partner_id = %(partner)s AND r.created_at >= %(start)s AND r.created_at < %(end)s
    UNION ALL
    SELECT 'redemption', coalesce(partner_ref, id), value_fen, captured
    FROM holds
    WHERE partner_id = %(partner)s AND state = 'captured' AND purpose IS NULL
      AND closed_at >= %(start)s AND closed_at < %(end)s
    UNION ALL
    -- A supplier's catalogue orders, by order id: confirmed (owed to it), and returned or
    -- cancelled after confirmation (owed back).
    SELECT 'reward_order', o.id, o.value_fen, o.points
    FROM reward_orders o JOIN rewards w ON w.id = o.reward_id
    WHERE w.supplier_id = %(partner)s AND o.entry_id IS NOT NULL
      AND o.confirmed_at >= %(start)s AND o.confirmed_at < %(end)s
    UNION ALL
    SELECT 'reward_return', o.id, o.value_fen, o.points
    FROM reward_orders o JOIN rewards w ON w.id = o.reward_id
    WHERE w.supplier_id = %(partner)s AND o.return_entry_id IS NOT NULL
      AND o.closed_at >= %(start)s AND o.closed_at < %(end)s
), theirs AS (
    SELECT *, row_number() OVER (PARTITION BY type, txn_id ORDER BY line) AS nth FROM {THEIRS}
), joined AS (
    SELECT coalesce(o.type, t.type) AS type, coalesce(o.txn_id, t.txn_id) AS txn_id, t.line,
           CASE WHEN o.type IS NULL THEN 'missing_ours'
                WHEN t.type IS NULL THEN 'missing_theirs'
                WHEN o.amount_fen <> t.amount_fen THEN 'amount_differs'
                WHEN o.points <> t.points THEN 'points_differ' END AS break,
           o.amount_fen AS ours_amount_fen, o.points AS ours_points,
           t.amount_fen AS theirs_amount_fen, t.points AS theirs_points
    FROM ours o
    FULL JOIN (SELECT * FROM theirs WHERE nth = 1) t ON o.type = t.type AND o.txn_id = t.txn_id
    UNION ALL
    SELECT type, txn_id, line, 'duplicate', NULL, NULL, amount_fen, points
    FROM theirs WHERE nth > 1
), kept AS (
    INSERT INTO reconciliation_breaks
    SELECT %(id)s,
           row_number() OVER (ORDER BY type COLLATE "C", txn_id COLLATE "C", line NULLS FIRST),
           type, txn_id, break, ours_amount_fen, ours_points, theirs_amount_fen, theirs_points
    FROM joined WHERE break IS NOT NULL
)
SELECT count(*) FILTER (WHERE break IS NULL) AS matched,
       {", ".join(f"count(*) FILTER (WHERE break = '{kind}') AS {kind}" for kind in KINDS)}
FROM joined
"""


def _integer(text: str) -> int | None:
    if INTEGER.fullmatch(text) is None or abs(value := int(text)) > BIGINT_MAX:
        return None
    return value


def _load(cursor: Cursor[Any], file: IO[bytes]) -> int:
    """The partner's lines, copied into the temporary table as they are read; their count, or
    InvalidRequest naming the bad lines."""
    cursor.execute(f"DROP TABLE IF EXISTS {THEIRS}")
    cursor.execute(_THEIRS_TABLE)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    errors: list[dict[str, Any]] = []
    try:
        with cursor.copy(f"COPY {THEIRS} FROM STDIN") as copy:
            lines = _rows(reader, errors, copy.write_row)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the file must be UTF-8 CSV") from exc
    except csv.Error as exc:
        # A line break outside quotes, a NUL, an over-long field: the line cannot be read, nor
        # told apart from the ones after it.
        reason = str(exc).split(" - ")[0]
        raise InvalidRequest(
            "the file is not valid CSV; see errors",
            errors=[*errors, {"line": reader.line_num, "message": f"not valid CSV: {reason}"}][
                :MAX_ERRORS
            ],
        ) from exc
    finally:
        text.detach()  # the caller's file stays open
    if errors:
        raise InvalidRequest(
            f"the file has bad lines; see errors (at most {MAX_ERRORS} are listed)",
            errors=errors,
        )
    cursor.execute(f"ANALYZE {THEIRS}")
    return lines


def _rows(reader: Iterator[list[str]], errors: list[dict[str, Any]], write: Any) -> int:
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise InvalidRequest(f"the first line must be the header {','.join(COLUMNS)}")
    lines = 0
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if number > MAX_LINES:
            raise InvalidRequest(f"a file holds at most {MAX_LINES} lines")
        message = _invalid(row)
        if message is not None:
            if len(errors) < MAX_ERRORS:
                errors.append({"line": number, "message": message})
            continue
        txn_id, kind, amount, points = (cell.strip() for cell in row)
        write((number, kind, txn_id, int(amount), int(points)))
        lines += 1
    return lines


def _invalid(row: list[str]) -> str | None:
    """What is wrong with a line on its own, if anything."""
    if len(row) != len(COLUMNS):
        return f"expected {len(COLUMNS)} columns"
    txn_id, kind, amount, points = (cell.strip() for cell in row)
    if kind not in TYPES:
        return f"type must be one of {', '.join(TYPES)}"
    if _integer(amount) is None or _integer(points) is None:
        return "amount_fen and points are 64-bit integers"
    if not txn_id or "\x00" in txn_id:
        return "txn_id is empty or holds a NUL"
    return None


def as_reconciliation(row: Any) -> Reconciliation:
    return Reconciliation(
        row.id,
        row.partner_id,
        row.business_date,
        row.uploaded_at,
        row.lines,
        row.matched,
        row.break_count,
        row.resolved_at,
    )


def reconcile(
    session: Session,
    partner_id: str,
    business_date: date,
    file: IO[bytes],
    sha256: bytes | None = None,
) -> Reconciliation:
    """Compare the partner's file (read from its start) with our records and keep the result
    (the same file again returns the first result). `sha256` is the file's, when the caller
    has taken it already (an upload's, as it arrived)."""
    digest = sha256 or sha256_of(file)
    existing = session.execute(
        select(*_LISTED).where(
            reconciliations.c.partner_id == partner_id,
            reconciliations.c.business_date == business_date,
            reconciliations.c.file_sha256 == digest,
        )
    ).first()
    if existing is not None:
        return as_reconciliation(existing)
    with Tx.of(session).driver.cursor() as cursor:
        file.seek(0)
        lines = _load(cursor, file)
        file.seek(0)
        # The file is kept as the partner sent it, to be downloaded again.
        content = file.read()
        reconciliation_id = session.execute(
            reconciliations.insert()
            .values(
                partner_id=partner_id,
                business_date=business_date,
                file_sha256=digest,
                file=content,
                lines=lines,
                matched=0,
                break_count=0,
            )
            .returning(reconciliations.c.id)
        ).scalar_one()
        start, end = cutoff(business_date - timedelta(days=1)), cutoff(business_date)
        cursor.execute(
            _MATCH,
            {"partner": partner_id, "start": start, "end": end, "id": reconciliation_id},
        )
        counted = cursor.fetchone()
        assert counted is not None
        cursor.execute(f"DROP TABLE {THEIRS}")
    matched, *by_kind = counted
    row = session.execute(
        update(reconciliations)
        .where(reconciliations.c.id == reconciliation_id)
        .values(matched=matched, break_count=sum(by_kind))
        .returning(*_LISTED)
    ).one()
    found = as_reconciliation(row)
    _announce(session, found, BreakCounts(**dict(zip(KINDS, by_kind, strict=True))))
    return found


def _announce(session: Session, found: Reconciliation, by_kind: BreakCounts) -> None:
    """Tell the partner, by webhook in the caller's transaction, that its file was reconciled:
    its lines, those matched, and the breaks by kind."""
    if not webhooks.heard(session, "reconciliation.completed", found.partner_id):
        return
    data = ReconciliationWebhookData(
        reconciliation_id=found.id,
        business_date=found.business_date,
        uploaded_at=found.uploaded_at,
        lines=found.lines,
        matched=found.matched,
        breaks=found.break_count,
        breaks_by_kind=by_kind,
    )
    webhooks.emit(
        session, found.partner_id, "reconciliation.completed", data.model_dump(mode="json")
    )


def _one(
    session: Session, columns: list[Any], reconciliation_id: int, partner_id: str | None
) -> Any:
    query = select(*columns).where(reconciliations.c.id == reconciliation_id)
    if partner_id is not None:
        query = query.where(reconciliations.c.partner_id == partner_id)
    row = session.execute(query).first()
    if row is None:
        raise ReconciliationNotFound(f"no reconciliation {reconciliation_id}")
    return row


def get(session: Session, reconciliation_id: int, partner_id: str | None = None) -> Reconciliation:
    """The reconciliation (the partner's own, when `partner_id` is given), without its file."""
    return as_reconciliation(_one(session, _LISTED, reconciliation_id, partner_id))


def uploaded_file(session: Session, reconciliation_id: int, partner_id: str) -> bytes:
    return bytes(_one(session, [reconciliations.c.file], reconciliation_id, partner_id).file)


def breaks(
    session: Session, reconciliation_id: int, after: int | None, limit: int
) -> tuple[list[Break], int | None]:
    """A page of the reconciliation's breaks in the order of (type, txn_id), after the cursor
    `after`; and the cursor of the next page, if there is one."""
    rows = session.execute(
        select(reconciliation_breaks)
        .where(
            reconciliation_breaks.c.reconciliation_id == reconciliation_id,
            reconciliation_breaks.c.seq > (after or 0),
        )
        .order_by(reconciliation_breaks.c.seq)
        .limit(limit + 1)
    ).all()
    page = [
        Break(
            row.type,
            row.txn_id,
            row._mapping["break"],
            _pair(row.ours_amount_fen, row.ours_points),
            _pair(row.theirs_amount_fen, row.theirs_points),
        )
        for row in rows[:limit]
    ]
    return page, (rows[limit - 1].seq if len(rows) > limit else None)


def _pair(amount_fen: int | None, points: int | None) -> list[int] | None:
    return None if amount_fen is None or points is None else [amount_fen, points]


def for_date(session: Session, business_date: date) -> list[Reconciliation]:
    rows = session.execute(
        select(*_LISTED)
        .where(reconciliations.c.business_date == business_date)
        .order_by(reconciliations.c.id)
    )
    return [as_reconciliation(r) for r in rows]


def recent(session: Session, limit: int = 100) -> list[Reconciliation]:
    """The newest uploads first, open breaks or not."""
    rows = session.execute(select(*_LISTED).order_by(reconciliations.c.id.desc()).limit(limit))
    return [as_reconciliation(r) for r in rows]


def resolve(session: Session, reconciliation_id: int) -> Reconciliation:
    """Mark a reconciliation's breaks as dealt with (after a correcting entry or an agreement
    with the partner)."""
    get(session, reconciliation_id)
    row = session.execute(
        update(reconciliations)
        .where(reconciliations.c.id == reconciliation_id)
        .values(resolved_at=func.coalesce(reconciliations.c.resolved_at, func.now()))
        .returning(*_LISTED)
    ).one()
    return as_reconciliation(row)
