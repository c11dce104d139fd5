"""A batch file's lines: JSON Lines, plain or gzip, one operation per line, each with the
partner's own transaction id as its idempotency key.

    {"type": "purchase", "partner_txn_id": "T-1", "member_id": "M…", "amount_fen": 5200,
     "occurred_at": "2026-11-30T18:02:11+08:00", "store_id": "sh-001"}
    {"type": "refund", "partner_txn_id": "R-1", "purchase_txn_id": "T-1", "amount_fen": 1200}
    {"type": "redemption", "partner_txn_id": "D-1", "member_id": "M…", "points": 800,
     "occurred_at": "2026-11-30T18:10:00+08:00", "store_id": "sh-001"}
    {"type": "void", "partner_txn_id": "V-1", "voids": "T-1"}

A line is read the way its single call's body is (the same strict models): one that does not
parse is kept with the problem it would have had, and the others go on."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from clearinghouse.api.schemas import JsonInstant, RequestBody
from clearinghouse.errors import InvalidRequest
from clearinghouse.members.schemas import MEMBER_ID
from clearinghouse.points.schemas import REF, PurchaseIn

MAX_LINES = 10_000
MAX_LINE_BYTES = 4_096
# A gzip file is read no further than this once inflated (10,000 lines of the longest kind).
MAX_FILE_BYTES = MAX_LINES * (MAX_LINE_BYTES + 1)
GZIP_MAGIC = b"\x1f\x8b"


class PurchaseLine(PurchaseIn):
    """A purchase, as `POST /v1/purchases` takes it."""

    type: Literal["purchase"]


class RefundLine(RequestBody):
    """A refund of a purchase, as `POST /v1/purchases/{purchase_txn_id}/refunds` takes it, the
    refund's own id being the line's `partner_txn_id`."""

    type: Literal["refund"]
    partner_txn_id: str = Field(pattern=REF, description="Your own id of this refund.")
    purchase_txn_id: str = Field(pattern=REF, description="The purchase refunded.")
    amount_fen: int = Field(gt=0, le=10**12)


class RedemptionLine(RequestBody):
    """Points spent at a till while it was offline, within the store's offline allowance."""

    type: Literal["redemption"]
    partner_txn_id: str = Field(pattern=REF)
    member_id: str = Field(pattern=MEMBER_ID)
    points: int = Field(gt=0, le=10**12)
    store_id: str | None = None
    occurred_at: JsonInstant


class VoidLine(RequestBody):
    """Cancels an earlier purchase (what remains of it is refunded) or offline redemption (what
    remains of it is given back), named by its `partner_txn_id`."""

    type: Literal["void"]
    partner_txn_id: str = Field(pattern=REF)
    voids: str = Field(pattern=REF)


Operation = Annotated[
    PurchaseLine | RefundLine | RedemptionLine | VoidLine, Field(discriminator="type")
]
_OPERATION: TypeAdapter[Operation] = TypeAdapter(Operation)


@dataclass(frozen=True)
class Line:
    """One line as read: its operation, or the problem it has instead (`errors`)."""

    number: int
    body: dict[str, Any] | None
    operation: Operation | None
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None

    @property
    def kind(self) -> str | None:
        return self.operation.type if self.operation else _text(self.body, "type")

    @property
    def partner_txn_id(self) -> str | None:
        return (
            self.operation.partner_txn_id if self.operation else _text(self.body, "partner_txn_id")
        )

    @property
    def member_id(self) -> str | None:
        member = getattr(self.operation, "member_id", None)
        return member if isinstance(member, str) else _text(self.body, "member_id")


def _text(body: dict[str, Any] | None, name: str) -> str | None:
    value = (body or {}).get(name)
    return value[:64] if isinstance(value, str) else None


def _refused(number: int, body: dict[str, Any] | None, detail: str, errors: Any = None) -> Line:
    return Line(number, body, None, detail, errors or [])


def parse_operation(body: Any) -> Operation:
    """A stored line's operation (it parsed when the file was taken in)."""
    return _OPERATION.validate_python(body)


def read_line(number: int, raw: bytes) -> Line:
    """One line, read as its single call's body would be."""
    if len(raw) > MAX_LINE_BYTES:
        return _refused(number, None, f"the line is longer than {MAX_LINE_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _refused(number, None, f"the line is not JSON: {exc}")
    if not isinstance(body, dict):
        return _refused(number, None, "the line is not a JSON object")
    try:
        return Line(number, body, parse_operation(body))
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return _refused(number, body, "the line does not match the schema; see errors", errors)


def _opened(file: IO[bytes]) -> IO[bytes]:
    file.seek(0)
    head = file.read(2)
    file.seek(0)
    if head != GZIP_MAGIC:
        return file
    inflated = gzip.GzipFile(fileobj=file, mode="rb")
    try:
        data = inflated.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidRequest(f"the gzip file cannot be read: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise InvalidRequest(f"the file is larger than {MAX_FILE_BYTES} bytes once inflated")
    return io.BytesIO(data)


def read_file(file: IO[bytes]) -> list[Line]:
    """The file's lines, read from its start (blank lines skipped, numbered as in the file from
    1). A file that is not readable at all, empty or longer than MAX_LINES is refused whole."""
    lines: list[Line] = []
    for number, raw in enumerate(_lines(_opened(file)), start=1):
        if not raw.strip():
            continue
        if len(lines) == MAX_LINES:
            raise InvalidRequest(f"a batch holds at most {MAX_LINES} operations")
        lines.append(read_line(number, raw))
    if not lines:
        raise InvalidRequest("the file holds no operation")
    return lines


def _lines(file: IO[bytes]) -> Iterator[bytes]:
    # readline's limit keeps one overlong line from being read whole into memory.
    while chunk := file.readline(MAX_LINE_BYTES + 2):
        if len(chunk) > MAX_LINE_BYTES + 1 and not chunk.endswith(b"\n"):
            while (rest := file.readline(MAX_LINE_BYTES + 2)) and not rest.endswith(b"\n"):
                pass
            yield chunk  # refused by read_line as too long
            continue
        yield chunk.rstrip(b"\r\n")
