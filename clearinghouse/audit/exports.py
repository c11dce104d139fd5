"""Journal exports for auditors: the entries recorded in [start, end) written to a folder.

Files (all UTF-8, "\\n" line ends):

- `entries.jsonl`: one line per entry in id order, exactly its canonical encoding
  (`clearinghouse.audit.canonical.encode`), the bytes that sealing hashes.
- `journal.csv`: a header, then one row per posting (see `CSV_COLUMNS`); instants in UTC, the
  entry's metadata as compact JSON.
- `journal.beancount`: the same entries as a beancount ledger that `bean-check` accepts.
- `manifest.json`: the range, counts, first and last entry id, and each file's size and SHA-256.

Streamed, and resumable
-----------------------
Entries are read `BATCH_SIZE` at a time by keyset (ids above the last one written) and each
batch is appended to the three files before the next is read, so an export holds one batch in
memory whatever the range. After each batch, `progress.json` records the cursor (the last entry
id written), the counts so far and each file's length. An export interrupted, or stopped on
purpose after `max_entries` (`export_part`), is continued by running it again on the same
folder and range: the files are cut back to the recorded lengths and the entries after the
cursor follow. Once the last batch is written, the accounts close the beancount file, the
manifest is written and `progress.json` removed: the files are byte for byte those of an export
made at once. With `workers`, a whole export of many batches is read and encoded by worker
processes in the exporting transaction's snapshot and appended in the same order: the same
bytes again (`_encoded_by_workers`).

The beancount ledger
--------------------
Signs are the ledger's: a positive balance is a debit, as in beancount. Each account goes under
the beancount type that names what it is in the coalition's books and whose usual sign its
balance has (`ACCOUNT_TYPES`, the table in docs/audit.md): what people and the coalition hold
(members' points, stores', the coalition's breakage, fees and rounding, the programme points it
holds, the bank, partners' settlement balances) is `Assets`; points issued and owed (partners'
`issued`, the `redeemed` that come back against them, programmes' points, coalition bonuses)
are `Liabilities`; the settlement clearing account, where the coalition's net revenue from
settlement collects, is `Income`; issuance limits (`headroom`, `exposure` and
`coalition:credit_lines`, which sum to zero) are `Equity`: a limit is not money. No kind is an
expense. Each account is opened on the start date with its asset as the only commodity allowed
and its address as `address` metadata. Each entry is one transaction, dated by its
`recorded_at` in the coalition's time zone, with payee its origin, narration its kind, and
metadata `entry_id`, `kind`, `origin`, `idempotency_key`, `occurred_at`, `recorded_at`,
`metadata` (compact JSON) and `reverses_id` when set. CNY amounts are written in yuan with two
decimals (`amount_text`; exact, from the integer fen), every other asset in its own whole
units, without cost, so booking never comes into play.

The transactions come first, in id order; then, asset by asset, the commodity, each account's
`open` and closing `balance` assertion, and the asset's opening transaction (beancount orders
directives by date, not by their place in the file). A range that does not start at the
beginning of the journal has, on the start date, one "opening balances" transaction per asset
that brings every exported account to its balance as of `start`, against
`Equity:Opening-Balances`. On the day after `end`'s date, a `balance` assertion for every
exported account states its balance from the postings recorded before `end`, as the database
sums them: `bean-check` thereby recomputes every balance from the exported transactions and
compares.

Account names
-------------
`address_to_account` maps an address to its type followed by its `:`-separated components,
each written to read as it is; `account_to_address` is the inverse. A component with a
lower-case letter has its first letter upper-cased and each `_` followed by a letter turned into
`-` and that letter upper-cased (`credit_lines` is `Credit-Lines`, `bookchain-sh-001` is
`Bookchain-sh-001`); one without is kept as it is (`M0123456789AB`). When that would not read
back as the same component (a capital in a lower-case id, a `.`, a `_` before a digit, ...) or
is no valid beancount component, the component is escaped behind the marker `X--`, which no
readable component holds: `-` becomes `--`, `_` becomes `-U`, `.` becomes `-D`.

So `member:M123ABC:available` is `Assets:Member:M123ABC:Available`, `partner:teahouse:issued`
is `Liabilities:Partner:Teahouse:Issued`, `store:bookchain-sh-001:till` is
`Assets:Store:Bookchain-sh-001:Till`, `coalition:credit_lines` is
`Equity:Coalition:Credit-Lines`, and `partner:tea_house.sh:issued` is
`Liabilities:Partner:X--tea-Uhouse-Dsh:Issued`. To decode: unescape after a leading `X--`;
else, if the name has a lower-case letter, lower-case its first letter and turn each `-` before
a capital into `_` and the capital into its lower case.

Commodities are the asset codes, except that a code ending in `_`, which beancount refuses, gets
`-X` appended (asset codes never contain `-`).

Consistency: the entries and the balances are read with separate statements (and an export in
parts, in separate transactions). Run the export in a REPEATABLE READ transaction, or on a range
that ended some seconds ago (entries still being committed carry earlier `recorded_at` times).
The balances' statement also counts the postings recorded in the range; the journal being
append-only, the same count as the postings written means the same postings. If they differ,
the journal moved between the reads, and the export raises `ExportInconsistent` and takes back
what it wrote.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from clearinghouse.audit.canonical import (
    EntryRecord,
    encode,
    entries_in_batches,
    entries_where,
    instant_text,
)
from clearinghouse.config import get_settings
from clearinghouse.database import make_engine
from clearinghouse.errors import Conflict
from clearinghouse.ledger import Address, partitions
from clearinghouse.ledger.queries import archived_amount
from clearinghouse.ledger.tables import ADDRESS_PATTERN, accounts, journal_entries, postings
from clearinghouse.numbers import yuan_text

ENTRIES_FILE = "entries.jsonl"
CSV_FILE = "journal.csv"
BEANCOUNT_FILE = "journal.beancount"
MANIFEST_FILE = "manifest.json"
PROGRESS_FILE = "progress.json"
DATA_FILES = (ENTRIES_FILE, CSV_FILE, BEANCOUNT_FILE)

CSV_COLUMNS = (
    "entry_id",
    "recorded_at",
    "occurred_at",
    "kind",
    "origin",
    "idempotency_key",
    "reverses_id",
    "account",
    "asset",
    "amount",
    "metadata",
)

# Entries read, and written, at a time: what an export holds in memory.
BATCH_SIZE = 5000
_CHUNK = 1 << 20

OPENING_ACCOUNT = "Equity:Opening-Balances"
MONEY = "CNY"

# The beancount type of each account, by its owner and the first word of its kind; any other
# account is a holding (`Assets`). Why each is what it is: the module doc.
ACCOUNT_TYPES: dict[tuple[str, str], str] = {
    ("partner", "issued"): "Liabilities",
    ("partner", "redeemed"): "Liabilities",
    ("partner", "programme"): "Liabilities",
    ("coalition", "bonus"): "Liabilities",
    ("coalition", "clearing"): "Income",
    ("partner", "headroom"): "Equity",
    ("partner", "exposure"): "Equity",
    ("coalition", "credit_lines"): "Equity",
}
ROOTS = ("Assets", "Liabilities", "Equity", "Income", "Expenses")

_ADDRESS = re.compile(ADDRESS_PATTERN)
_ASSET = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
_COMPONENT = re.compile(r"^[A-Z0-9][A-Za-z0-9-]*$")
_SNAKE = re.compile(r"_([a-z])")
_TITLED = re.compile(r"-([A-Z])")
_ESCAPES = {"-": "--", "_": "-U", ".": "-D"}
_UNESCAPES = {"-": "-", "U": "_", "D": "."}
_MARK = "X--"
_COMMODITY_SUFFIX = "-X"


class ExportError(RuntimeError):
    """The export cannot be made as asked."""


class ExportInconsistent(ExportError):
    """The journal changed between the reads of one export; retry it (see the module doc)."""


class RangeArchived(Conflict):
    """The range starts in a month archived out of the database: its export is the archive's."""

    code = "range_archived"
    title = "Range archived"


# Account names and commodities


def _readable(component: str) -> str:
    """`credit_lines` → `Credit-Lines`, `bookchain-sh-001` → `Bookchain-sh-001`, an id in
    capitals and digits as it is (see the module doc)."""
    if any("a" <= ch <= "z" for ch in component):
        titled = _SNAKE.sub(lambda m: "-" + m.group(1).upper(), component)
        return titled[:1].upper() + titled[1:]
    return component


def _read_back(name: str) -> str:
    """The component a readable name was made from (the inverse of `_readable`)."""
    if any("a" <= ch <= "z" for ch in name):
        snake = _TITLED.sub(lambda m: "_" + m.group(1).lower(), name)
        return snake[:1].lower() + snake[1:]
    return name


def _encode_component(component: str) -> str:
    readable = _readable(component)
    if _COMPONENT.match(readable) and "--" not in readable and _read_back(readable) == component:
        return readable
    return _MARK + "".join(_ESCAPES.get(ch, ch) for ch in component)


def _decode_component(name: str) -> str:
    if not name.startswith(_MARK):
        return _read_back(name)
    body = name[len(_MARK) :]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "-":
            code = body[i + 1 : i + 2]
            if code not in _UNESCAPES:
                raise ValueError(f"bad escape in account component {name!r}")
            out.append(_UNESCAPES[code])
            i += 2
        else:
            out.append(ch)
            i += 1
    if not out:
        raise ValueError(f"empty account component {name!r}")
    return "".join(out)


def account_type(address: str) -> str:
    """The beancount type (root) of a ledger address's account (see `ACCOUNT_TYPES`)."""
    parsed = Address.parse(address)
    return ACCOUNT_TYPES.get((parsed.owner_type, parsed.kind.split(":")[0]), "Assets")


@functools.lru_cache(maxsize=1 << 16)
def address_to_account(address: str) -> str:
    """The beancount account name of a ledger address (see the module doc); remembered, as an
    export names the same accounts over and over."""
    if not _ADDRESS.match(address):
        raise ValueError(f"malformed account address {address!r}")
    return ":".join([account_type(address), *map(_encode_component, address.split(":"))])


def account_to_address(account: str) -> str:
    """The ledger address a beancount account name was made from."""
    root, _, rest = account.partition(":")
    if root not in ROOTS or not rest:
        raise ValueError(f"not an exported account name: {account!r}")
    address = ":".join(_decode_component(part) for part in rest.split(":"))
    if not _ADDRESS.match(address) or address_to_account(address) != account:
        raise ValueError(f"not an exported account name: {account!r}")
    return address


@functools.lru_cache(maxsize=64)
def asset_to_commodity(asset: str) -> str:
    """The beancount commodity of an asset code (see the module doc)."""
    if not _ASSET.match(asset):
        raise ValueError(f"malformed asset code {asset!r}")
    return asset + _COMMODITY_SUFFIX if asset.endswith("_") else asset


def commodity_to_asset(commodity: str) -> str:
    asset = commodity.removesuffix(_COMMODITY_SUFFIX)
    if asset_to_commodity(asset) != commodity:
        raise ValueError(f"not an exported commodity: {commodity!r}")
    return asset


# The manifest, and the progress of an unfinished export


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> FileDigest:
        return cls(len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: Path) -> FileDigest:
        """Read a chunk at a time: an export's files can be far larger than memory."""
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return cls(size, digest.hexdigest())


@dataclass(frozen=True)
class Counts:
    entries: int
    postings: int
    accounts: int


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` says, field for field."""

    start: datetime
    end: datetime
    timezone: str
    counts: Counts
    first_entry_id: int | None
    last_entry_id: int | None
    files: dict[str, FileDigest] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "start": instant_text(self.start),
            "end": instant_text(self.end),
            "timezone": self.timezone,
            "counts": {
                "entries": self.counts.entries,
                "postings": self.counts.postings,
                "accounts": self.counts.accounts,
            },
            "first_entry_id": self.first_entry_id,
            "last_entry_id": self.last_entry_id,
            "files": {
                name: {"size": d.size, "sha256": d.sha256} for name, d in sorted(self.files.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        counts = data["counts"]
        return cls(
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            timezone=str(data["timezone"]),
            counts=Counts(int(counts["entries"]), int(counts["postings"]), int(counts["accounts"])),
            first_entry_id=data["first_entry_id"],
            last_entry_id=data["last_entry_id"],
            files={
                str(name): FileDigest(int(d["size"]), str(d["sha256"]))
                for name, d in data["files"].items()
            },
        )

    def encode(self) -> bytes:
        return (json.dumps(self.as_json(), sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def read(cls, out_dir: Path) -> Manifest:
        return cls.from_json(json.loads((out_dir / MANIFEST_FILE).read_bytes()))


@dataclass(frozen=True)
class Progress:
    """What `progress.json` says while an export is unfinished: the last entry id written (the
    cursor to continue after), the counts so far, and each data file's length up to that entry
    (anything written after it, by a run that was interrupted, is cut off before continuing)."""

    start: datetime
    end: datetime
    timezone: str
    cursor: int | None
    first_entry_id: int | None
    entries: int
    postings: int
    sizes: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "start": instant_text(self.start),
            "end": instant_text(self.end),
            "timezone": self.timezone,
            "cursor": self.cursor,
            "first_entry_id": self.first_entry_id,
            "entries": self.entries,
            "postings": self.postings,
            "sizes": dict(sorted(self.sizes.items())),
        }

    @classmethod
    def read(cls, out_dir: Path) -> Progress:
        data = json.loads((out_dir / PROGRESS_FILE).read_bytes())
        return cls(
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            timezone=str(data["timezone"]),
            cursor=data["cursor"],
            first_entry_id=data["first_entry_id"],
            entries=int(data["entries"]),
            postings=int(data["postings"]),
            sizes={str(name): int(size) for name, size in data["sizes"].items()},
        )

    def write(self, out_dir: Path) -> None:
        # Replaced whole, so that an interruption leaves the old progress or the new one.
        pending = out_dir / (PROGRESS_FILE + ".new")
        pending.write_text(json.dumps(self.as_json(), sort_keys=True, indent=2) + "\n")
        pending.replace(out_dir / PROGRESS_FILE)


# The export


def export_journal(
    session: Session,
    start: datetime,
    end: datetime,
    out_dir: Path,
    *,
    zone: ZoneInfo | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int = 1,
) -> Manifest:
    """Write the entries recorded in [start, end) into `out_dir`, or what is left of an
    unfinished export there, and return the manifest (see `export_part`)."""
    done = export_part(
        session, start, end, out_dir, zone=zone, batch_size=batch_size, workers=workers
    )
    assert isinstance(done, Manifest)  # only a part given max_entries stops early
    return done


def export_part(
    session: Session,
    start: datetime,
    end: datetime,
    out_dir: Path,
    *,
    max_entries: int | None = None,
    zone: ZoneInfo | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int = 1,
) -> Manifest | Progress:
    """Write the entries recorded in [start, end) into `out_dir`, `batch_size` at a time, each
    batch appended to the files as it is read. `out_dir` is created if missing; an existing
    folder must be empty, or hold an unfinished export of the same range and zone, which is
    continued after its last entry. With `max_entries`, stop after writing that many and return
    the progress; otherwise (or when fewer were left) finish: the accounts' balances close the
    beancount file, and the manifest is written and returned. `zone` defaults to the
    coalition's. With `workers` above 1, a whole export of many batches has them encoded by
    that many processes reading `session`'s snapshot (see `_encoded_by_workers`): the session
    must then be a REPEATABLE READ transaction, as `audit export` opens."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must carry a time zone")
    if end < start:
        raise ValueError("end must not be before start")
    archived = partitions.archived_until(session)
    if archived is not None and start < archived:
        raise RangeArchived(
            f"entries recorded before {archived.isoformat()} are archived: their export is in"
            " the archive's folder (`clearinghouse ledger partitions` lists them); export from"
            f" {archived.isoformat()} on",
            archived_until=archived.isoformat(),
        )
    zone = zone or get_settings().zone
    created = not out_dir.exists()
    progress = _resume_point(out_dir, start, end, zone)
    if progress is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        heads = {
            ENTRIES_FILE: b"",
            CSV_FILE: _csv_line(CSV_COLUMNS).encode(),
            BEANCOUNT_FILE: _beancount_head(start, end, zone),
        }
        for name, data in heads.items():
            (out_dir / name).write_bytes(data)
        progress = Progress(
            start, end, zone.key, None, None, 0, 0, {n: len(d) for n, d in heads.items()}
        )
        progress.write(out_dir)
    try:
        progress, stopped = _write_entries(
            session, out_dir, progress, zone, max_entries, batch_size, workers
        )
        return progress if stopped else _finish(session, out_dir, progress, zone)
    except ExportInconsistent:
        _remove(out_dir, created)
        raise


def _resume_point(out_dir: Path, start: datetime, end: datetime, zone: ZoneInfo) -> Progress | None:
    """The progress of the unfinished export in `out_dir`, its files cut back to it; None for a
    folder that is missing or empty."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not (out_dir / PROGRESS_FILE).exists():
        if any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} is not empty")
        return None
    progress = Progress.read(out_dir)
    if (progress.start, progress.end, progress.timezone) != (start, end, zone.key):
        raise ExportError(
            f"{out_dir} holds an unfinished export of [{instant_text(progress.start)}, "
            f"{instant_text(progress.end)}) in {progress.timezone}, not of this range"
        )
    for name, size in progress.sizes.items():
        with (out_dir / name).open("r+b") as f:
            if f.seek(0, os.SEEK_END) < size:
                raise ExportError(f"{out_dir / name} is shorter than its progress says")
            f.truncate(size)
    return progress


def _in_range(start: datetime, end: datetime) -> Any:
    return (journal_entries.c.recorded_at >= start) & (journal_entries.c.recorded_at < end)


@dataclass(frozen=True)
class _Encoded:
    """A batch of entries as the three data files hold them."""

    first_id: int
    last_id: int
    entries: int
    postings: int
    data: dict[str, bytes]


def _encoded(batch: list[EntryRecord], zone: ZoneInfo) -> _Encoded:
    return _Encoded(
        batch[0].id,
        batch[-1].id,
        len(batch),
        sum(len(entry.postings) for entry in batch),
        {
            ENTRIES_FILE: b"".join(encode(entry) + b"\n" for entry in batch),
            CSV_FILE: "".join(_csv_entry(entry) for entry in batch).encode(),
            BEANCOUNT_FILE: "".join(_beancount_entry(entry, zone) for entry in batch).encode(),
        },
    )


def _write_entries(
    session: Session,
    out_dir: Path,
    progress: Progress,
    zone: ZoneInfo,
    max_entries: int | None,
    batch_size: int,
    workers: int,
) -> tuple[Progress, bool]:
    """Append the entries after the cursor, a batch at a time, recording the progress after
    each; also whether `max_entries` stopped it."""
    in_range = _in_range(progress.start, progress.end)
    batches: Iterator[_Encoded]
    many = workers > 1 and max_entries is None
    if many and _bound(session, in_range, progress.cursor, 2 * workers * batch_size) is not None:
        batches = _encoded_by_workers(session, progress, zone, batch_size, workers)
    else:
        batches = (
            _encoded(batch, zone)
            for batch in entries_in_batches(
                session, in_range, after=progress.cursor, size=batch_size, limit=max_entries
            )
        )
    written = 0
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context((out_dir / name).open("ab")) for name in DATA_FILES}
        for encoded in batches:
            for name, f in files.items():
                f.write(encoded.data[name])
                f.flush()
            written += encoded.entries
            progress = replace(
                progress,
                cursor=encoded.last_id,
                first_entry_id=progress.first_entry_id or encoded.first_id,
                entries=progress.entries + encoded.entries,
                postings=progress.postings + encoded.postings,
                sizes={name: f.tell() for name, f in files.items()},
            )
            progress.write(out_dir)
    return progress, max_entries is not None and written == max_entries


def _bound(session: Session, in_range: Any, after: int | None, count: int) -> int | None:
    """The id of the `count`-th entry in range after `after`; None when fewer are left."""
    where = in_range if after is None else in_range & (journal_entries.c.id > after)
    bound: int | None = session.execute(
        select(journal_entries.c.id)
        .where(where)
        .order_by(journal_entries.c.id)
        .offset(count - 1)
        .limit(1)
    ).scalar_one_or_none()
    return bound


def _encoded_by_workers(
    session: Session, progress: Progress, zone: ZoneInfo, batch_size: int, workers: int
) -> Iterator[_Encoded]:
    """The batches after the cursor, in id order, read and encoded by `workers` processes that
    see the journal as `session` does (its snapshot, exported with pg_export_snapshot). This
    process finds where each batch ends and keeps two batches a worker in hand, so memory stays
    bounded whatever the range."""
    snapshot = session.execute(text("SELECT pg_export_snapshot()")).scalar_one()
    url = session.get_bind().engine.url.render_as_string(hide_password=False)
    in_range = _in_range(progress.start, progress.end)
    spawn = multiprocessing.get_context("spawn")
    setup = (url, snapshot, progress.start, progress.end, zone.key)
    with spawn.Pool(workers, _start_worker, setup) as pool:
        pending: deque[AsyncResult[_Encoded | None]] = deque()
        after, more = progress.cursor, True
        while pending or more:
            while more and len(pending) < 2 * workers:
                upto = _bound(session, in_range, after, batch_size)
                pending.append(pool.apply_async(_encode_range, (after, upto)))
                after, more = upto, upto is not None
            encoded = pending.popleft().get()
            if encoded is not None:
                yield encoded


# A worker's session in the exporting transaction's snapshot, the range and the zone.
_worker: tuple[Session, Any, ZoneInfo] | None = None


def _start_worker(url: str, snapshot: str, start: datetime, end: datetime, zone: str) -> None:
    global _worker
    if not re.fullmatch(r"[0-9A-F-]+", snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    session = Session(make_engine(url, pool_size=1, max_overflow=0, name="clearinghouse export"))
    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    session.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
    _worker = (session, _in_range(start, end), ZoneInfo(zone))


def _encode_range(after: int | None, upto: int | None) -> _Encoded | None:
    """The entries in range with ids in (after, upto], encoded; None if there are none."""
    assert _worker is not None, "a worker is started by _start_worker"
    session, where, zone = _worker
    if after is not None:
        where = where & (journal_entries.c.id > after)
    if upto is not None:
        where = where & (journal_entries.c.id <= upto)
    batch = entries_where(session, where)
    return _encoded(batch, zone) if batch else None


def _finish(session: Session, out_dir: Path, progress: Progress, zone: ZoneInfo) -> Manifest:
    with (out_dir / BEANCOUNT_FILE).open("ab") as out:
        accounts_count, moved = _write_accounts(session, out, progress.start, progress.end, zone)
    if moved != progress.postings:
        # The journal is append-only: the same number means the same postings.
        raise ExportInconsistent(
            f"the journal changed during the export ({progress.postings} postings written, "
            f"{moved} recorded in the range): export in a REPEATABLE READ transaction or a "
            "range that ended earlier"
        )
    manifest = Manifest(
        start=progress.start,
        end=progress.end,
        timezone=progress.timezone,
        counts=Counts(progress.entries, progress.postings, accounts_count),
        first_entry_id=progress.first_entry_id,
        last_entry_id=progress.cursor,
        files={name: FileDigest.of_file(out_dir / name) for name in DATA_FILES},
    )
    (out_dir / MANIFEST_FILE).write_bytes(manifest.encode())
    (out_dir / PROGRESS_FILE).unlink()
    return manifest


def _remove(out_dir: Path, created: bool) -> None:
    """Take back what the export wrote."""
    for name in (*DATA_FILES, PROGRESS_FILE, PROGRESS_FILE + ".new"):
        (out_dir / name).unlink(missing_ok=True)
    if created:
        out_dir.rmdir()


def record_file(out_dir: Path, name: str) -> Manifest:
    """Add (or refresh) another file of the export folder in its manifest, e.g. sealed blocks."""
    if name == MANIFEST_FILE or "/" in name or name in ("", ".", ".."):
        raise ValueError(f"cannot record {name!r} in the manifest")
    manifest = Manifest.read(out_dir)
    updated = replace(manifest, files={**manifest.files, name: FileDigest.of_file(out_dir / name)})
    (out_dir / MANIFEST_FILE).write_bytes(updated.encode())
    return updated


def verify_manifest(out_dir: Path) -> list[str]:
    """Recompute every listed file's size and SHA-256; the problems found, none when all agree.
    Files in the folder that the manifest does not list are problems too."""
    try:
        manifest = Manifest.read(out_dir)
    except FileNotFoundError:
        if (out_dir / PROGRESS_FILE).exists():
            return [f"{MANIFEST_FILE}: missing; the export is unfinished: run it again to continue"]
        return [f"{MANIFEST_FILE}: missing"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{MANIFEST_FILE}: unreadable ({exc})"]
    problems: list[str] = []
    for name, expected in sorted(manifest.files.items()):
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = FileDigest.of_file(path)
        if actual.size != expected.size:
            problems.append(f"{name}: {actual.size} bytes, manifest says {expected.size}")
        if actual.sha256 != expected.sha256:
            problems.append(f"{name}: sha256 {actual.sha256}, manifest says {expected.sha256}")
    listed = {*manifest.files, MANIFEST_FILE}
    for path in sorted(out_dir.iterdir()):
        if path.name not in listed:
            problems.append(f"{path.name}: not listed in the manifest")
    return problems


# Reading the accounts


def _accounts(session: Session, start: datetime, end: datetime) -> Iterable[Any]:
    """Each account that entries recorded in [start, end) touch, by asset and address, with its
    balance from the postings recorded before `start` (opening) and before `end` (closing),
    archived months' included, and its number of postings in the range: one statement (one
    snapshot), read in batches."""
    moved = postings.alias("moved")
    touched = select(moved.c.account_id).where(
        moved.c.recorded_at >= start, moved.c.recorded_at < end
    )
    archived = archived_amount(accounts.c.id)
    query = (
        select(
            accounts.c.asset,
            accounts.c.address,
            (
                func.coalesce(func.sum(postings.c.amount).filter(postings.c.recorded_at < start), 0)
                + archived
            ).label("opening"),
            (func.coalesce(func.sum(postings.c.amount), 0) + archived).label("closing"),
            func.count().filter(postings.c.recorded_at >= start).label("moves"),
        )
        .select_from(postings.join(accounts, accounts.c.id == postings.c.account_id))
        .where(postings.c.recorded_at < end, postings.c.account_id.in_(touched))
        .group_by(accounts.c.asset, accounts.c.address, accounts.c.id)
        .order_by(accounts.c.asset, accounts.c.address)
    )
    return session.execute(query, execution_options={"yield_per": BATCH_SIZE})


# Writing the files


_CSV_QUOTED = re.compile(r'[,"\r\n]')


def _csv_field(value: object) -> str:
    """One CSV field as the `csv` module's reader reads it back: quoted, with its quotes
    doubled, when it holds a comma, a quote or a line break (RFC 4180)."""
    text = str(value)
    if _CSV_QUOTED.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def _csv_line(fields: Iterable[object]) -> str:
    return ",".join(map(_csv_field, fields)) + "\n"


def _csv_entry(entry: EntryRecord) -> str:
    """The entry's rows, one per posting: the entry's own fields encoded once for all of them."""
    head = _csv_line(
        (
            entry.id,
            entry.recorded_text,
            entry.occurred_text,
            entry.kind,
            entry.origin,
            entry.idempotency_key,
            "" if entry.reverses_id is None else entry.reverses_id,
        )
    )[:-1]
    metadata = _csv_field(entry.metadata_json)
    return "".join(
        f"{head},{_csv_field(address)},{_csv_field(asset)},{amount},{metadata}\n"
        for address, asset, amount in entry.postings
    )


def _quote(text: str) -> str:
    """A beancount string literal (its lexer undoes C-style escapes)."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def amount_text(amount: int, asset: str) -> str:
    """An amount as the beancount file writes it: CNY in yuan with two decimals (the ledger
    keeps fen), any other asset in its own whole units."""
    return yuan_text(amount) if asset == MONEY else str(amount)


def _posting(account: str, amount: int, asset: str) -> str:
    return f"  {account}  {amount_text(amount, asset)} {asset_to_commodity(asset)}\n"


def _day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def _beancount_head(start: datetime, end: datetime, zone: ZoneInfo) -> bytes:
    lines = [
        "; Journal export of the coalition clearing house.",
        f"; Entries recorded in [{instant_text(start)}, {instant_text(end)}), dated in {zone.key}.",
        "; CNY amounts are in yuan (the ledger keeps fen); points and every other asset are",
        "; whole units. Account types, names and commodities map to ledger addresses and assets",
        "; as documented in docs/audit.md; each account's `address` metadata gives it too.",
        "; The transactions come first; each asset's accounts, opening balances and closing",
        "; balance assertions follow them.",
        f'option "title" {_quote("Clearing house journal " + instant_text(start))}',
        f'option "operating_currency" "{MONEY}"',
        "",
    ]
    return "".join(line + "\n" for line in lines).encode()


def _beancount_entry(entry: EntryRecord, zone: ZoneInfo) -> str:
    lines = [
        f"{_day(entry.recorded_at, zone)} * {_quote(entry.origin)} {_quote(entry.kind)}",
        f"  entry_id: {entry.id}",
        f"  kind: {_quote(entry.kind)}",
        f"  origin: {_quote(entry.origin)}",
        f"  idempotency_key: {_quote(entry.idempotency_key)}",
        f'  occurred_at: "{entry.occurred_text}"',
        f'  recorded_at: "{entry.recorded_text}"',
    ]
    if entry.metadata:
        lines.append(f"  metadata: {_quote(entry.metadata_json)}")
    if entry.reverses_id is not None:
        lines.append(f"  reverses_id: {entry.reverses_id}")
    text = "".join(line + "\n" for line in lines) + "".join(
        _posting(address_to_account(address), amount, asset)
        for address, asset, amount in entry.postings
    )
    return text + "\n"


def _write_accounts(
    session: Session, out: BinaryIO, start: datetime, end: datetime, zone: ZoneInfo
) -> tuple[int, int]:
    """Per asset: its commodity, each account's opening and closing balance assertion, and one
    transaction that opens them at their balances as of `start` (its legs kept in a temporary
    file, so that any number of accounts fits). Returns the number of accounts and of their
    postings in the range."""
    first_day = _day(start, zone)
    closing_day = _day(end, zone) + timedelta(days=1)
    count = moved = 0
    opened_any = False
    for asset, rows in itertools.groupby(_accounts(session, start, end), key=lambda r: r.asset):
        commodity = asset_to_commodity(asset)
        out.write(f"{first_day} commodity {commodity}\n".encode())
        total = 0
        with tempfile.TemporaryFile() as legs:
            for row in rows:
                name = address_to_account(row.address)
                out.write(
                    f"{first_day} open {name} {commodity}\n  address: {_quote(row.address)}\n"
                    f"{closing_day} balance {name}  {amount_text(int(row.closing), asset)} "
                    f"{commodity}\n".encode()
                )
                if row.opening:
                    legs.write(_posting(name, int(row.opening), asset).encode())
                    total += int(row.opening)
                count += 1
                moved += int(row.moves)
            out.write(b"\n")
            if legs.tell():
                opened_any = True
                title = _quote(asset + " as of " + instant_text(start))
                out.write(f'{first_day} * "opening balances" {title}\n'.encode())
                legs.seek(0)
                shutil.copyfileobj(legs, out)
                if total:
                    out.write(_posting(OPENING_ACCOUNT, -total, asset).encode())
                out.write(b"\n")
    if opened_any:
        out.write(f"{first_day} open {OPENING_ACCOUNT}\n".encode())
    return count, moved
