"""Reconciliation: a partner uploads its own record of a business day and we compare it, line by
line, with ours. The partner's CSV has the columns `txn_id,type,amount_fen,points`, one row per
transaction, type one of `purchase` (txn_id: the partner's transaction id), `refund`
(`<transaction id>/<refund id>`) and `redemption` (the hold's partner_ref, or the hold id)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clearinghouse.api.schemas import BIGINT_MAX
from clearinghouse.errors import InvalidRequest, NotFound
from clearinghouse.points.tables import holds, purchases, refunds
from settlement.netting import cutoff
from settlement.tables import reconciliations

COLUMNS = ("txn_id", "type", "amount_fen", "points")
TYPES = ("purchase", "refund", "redemption")
MAX_ROWS = 200_000
# Plain ASCII digits only: int() would also take "1_000", " 12" or other scripts' digits.
INTEGER = re.compile(r"-?[0-9]{1,19}")

Key = tuple[str, str]  # (type, txn_id)


class ReconciliationNotFound(NotFound):
    code = "reconciliation_not_found"
    title = "Unknown reconciliation"


@dataclass(frozen=True)
class Reconciliation:
    id: int
    partner_id: str
    business_date: date
    uploaded_at: datetime
    matched: int
    breaks: list[dict[str, Any]]
    resolved_at: datetime | None


def parse(content: bytes) -> dict[Key, tuple[int, int]]:
    """The partner's lines, or InvalidRequest naming every bad line."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the file must be UTF-8 CSV") from exc
    reader = csv.reader(io.StringIO(text))
    try:
        return _lines(reader)
    except csv.Error as exc:
        # A line break outside quotes, a NUL, an over-long field: the line cannot be read, nor
        # told apart from the ones after it.
        reason = str(exc).split(" - ")[0]
        raise InvalidRequest(
            "the file is not valid CSV; see errors",
            errors=[{"line": reader.line_num, "message": f"not valid CSV: {reason}"}],
        ) from exc


def _integer(text: str) -> int | None:
    if INTEGER.fullmatch(text) is None or abs(value := int(text)) > BIGINT_MAX:
        return None
    return value


def _lines(reader: Iterator[list[str]]) -> dict[Key, tuple[int, int]]:
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise InvalidRequest(f"the first line must be the header {','.join(COLUMNS)}")
    lines: dict[Key, tuple[int, int]] = {}
    errors: list[dict[str, Any]] = []
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if number > MAX_ROWS:
            raise InvalidRequest(f"a file holds at most {MAX_ROWS} lines")
        if len(row) != len(COLUMNS):
            errors.append({"line": number, "message": f"expected {len(COLUMNS)} columns"})
            continue
        txn_id, kind, amount, points = (cell.strip() for cell in row)
        if kind not in TYPES:
            errors.append({"line": number, "message": f"type must be one of {', '.join(TYPES)}"})
            continue
        amount_fen, point_count = _integer(amount), _integer(points)
        if amount_fen is None or point_count is None:
            errors.append({"line": number, "message": "amount_fen and points are 64-bit integers"})
            continue
        values = (amount_fen, point_count)
        if not txn_id or (kind, txn_id) in lines:
            errors.append({"line": number, "message": "txn_id is empty or repeated"})
            continue
        lines[(kind, txn_id)] = values
    if errors:
        raise InvalidRequest("the file has bad lines; see errors", errors=errors)
    return lines


def our_lines(session: Session, partner_id: str, business_date: date) -> dict[Key, tuple[int, int]]:
    start, end = cutoff(business_date - timedelta(days=1)), cutoff(business_date)
    ours: dict[Key, tuple[int, int]] = {}
    for row in session.execute(
        select(purchases.c.partner_txn_id, purchases.c.amount_fen, purchases.c.points).where(
            purchases.c.partner_id == partner_id,
            purchases.c.occurred_at >= start,
            purchases.c.occurred_at < end,
        )
    ):
        ours[("purchase", row.partner_txn_id)] = (row.amount_fen, row.points)
    for refund in session.execute(
        select(
            purchases.c.partner_txn_id,
            refunds.c.partner_refund_id,
            refunds.c.amount_fen,
            refunds.c.points,
        )
        .join(purchases, purchases.c.id == refunds.c.purchase_id)
        .where(
            purchases.c.partner_id == partner_id,
            refunds.c.created_at >= start,
            refunds.c.created_at < end,
        )
    ):
        # Refund ids are the partner's own per purchase: "<transaction id>/<refund id>".
        ours[("refund", f"{refund.partner_txn_id}/{refund.partner_refund_id}")] = (
            refund.amount_fen,
            refund.points,
        )
    for row in session.execute(
        select(
            func.coalesce(holds.c.partner_ref, holds.c.id).label("ref"),
            holds.c.value_fen,
            holds.c.captured,
        ).where(
            holds.c.partner_id == partner_id,
            holds.c.state == "captured",
            holds.c.closed_at >= start,
            holds.c.closed_at < end,
        )
    ):
        ours[("redemption", row.ref)] = (row.value_fen, row.captured)
    return ours


def compare(
    ours: dict[Key, tuple[int, int]], theirs: dict[Key, tuple[int, int]]
) -> tuple[int, list[dict[str, Any]]]:
    matched = 0
    breaks: list[dict[str, Any]] = []
    for key in sorted(set(ours) | set(theirs)):
        kind, txn_id = key
        mine, other = ours.get(key), theirs.get(key)
        base: dict[str, Any] = {"type": kind, "txn_id": txn_id}
        if mine is None:
            assert other is not None
            breaks.append({**base, "break": "missing_ours", "theirs": list(other)})
        elif other is None:
            breaks.append({**base, "break": "missing_theirs", "ours": list(mine)})
        elif mine == other:
            matched += 1
        else:
            which = "amount_differs" if mine[0] != other[0] else "points_differ"
            breaks.append({**base, "break": which, "ours": list(mine), "theirs": list(other)})
    return matched, breaks


def as_reconciliation(row: Any) -> Reconciliation:
    return Reconciliation(
        row.id,
        row.partner_id,
        row.business_date,
        row.uploaded_at,
        row.matched,
        row.breaks,
        row.resolved_at,
    )


def reconcile(
    session: Session, partner_id: str, business_date: date, content: bytes
) -> Reconciliation:
    """Compare the partner's file with our records and keep the result (the same file again
    returns the first result)."""
    theirs = parse(content)
    digest = hashlib.sha256(content).digest()
    existing = session.execute(
        select(reconciliations).where(
            reconciliations.c.partner_id == partner_id,
            reconciliations.c.business_date == business_date,
            reconciliations.c.file_sha256 == digest,
        )
    ).first()
    if existing is not None:
        return as_reconciliation(existing)
    matched, breaks = compare(our_lines(session, partner_id, business_date), theirs)
    row = session.execute(
        reconciliations.insert()
        .values(
            partner_id=partner_id,
            business_date=business_date,
            file_sha256=digest,
            file=content,
            matched=matched,
            breaks=breaks,
        )
        .returning(reconciliations)
    ).one()
    return as_reconciliation(row)


def get(session: Session, reconciliation_id: int, partner_id: str | None = None) -> Any:
    query = select(reconciliations).where(reconciliations.c.id == reconciliation_id)
    if partner_id is not None:
        query = query.where(reconciliations.c.partner_id == partner_id)
    row = session.execute(query).first()
    if row is None:
        raise ReconciliationNotFound(f"no reconciliation {reconciliation_id}")
    return row


# Listings leave the uploaded files out.
_LISTED = [c for c in reconciliations.c if c.name != "file"]


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
        .returning(reconciliations)
    ).one()
    return as_reconciliation(row)
