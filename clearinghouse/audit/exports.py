"""Journal exports for auditors: the entries recorded in [start, end) written to a folder.

Files (all UTF-8, "\\n" line ends):

- `entries.jsonl`: one line per entry in id order, exactly its canonical encoding
  (`clearinghouse.audit.canonical.encode`), the bytes that sealing hashes.
- `journal.csv`: a header, then one row per posting (see `CSV_COLUMNS`); instants in UTC, the
  entry's metadata as compact JSON.
- `journal.beancount`: the same entries as a beancount ledger that `bean-check` accepts.
- `manifest.json`: the range, counts, first and last entry id, and each file's size and SHA-256.

The beancount ledger
--------------------
Every account lives under `Assets` (our balances are signed) and is opened on the start date
with its asset as the only commodity allowed and its address as `address` metadata. Each entry
is one transaction, dated by its `recorded_at` in the coalition's time zone, with payee its
origin, narration its kind, and metadata `entry_id`, `kind`, `origin`, `idempotency_key`,
`occurred_at`, `recorded_at`, `metadata` (compact JSON) and `reverses_id` when set. Amounts are
the ledger's integers in each asset's unit (PTS: points; CNY: fen), without cost, so booking
never comes into play.

A range that does not start at the beginning of the journal begins, on the start date, with one
"opening balances" transaction per asset that brings every exported account to its balance as
of `start`, against `Equity:Opening-Balances`. On the day after `end`'s date, a `balance`
assertion for every exported account states its balance from the postings recorded before
`end`, as the database sums them: `bean-check` thereby recomputes every balance from the
exported transactions and compares.

Account names
-------------
`address_to_account` maps an address to `Assets:` followed by its `:`-separated components,
each encoded on its own; `account_to_address` is the inverse. A component (letters, digits,
`_`, `.`, `-`) is encoded in two steps:

1. `-` becomes `--`, `_` becomes `-U`, `.` becomes `-D`: every `-` in the result starts a
   two-character escape.
2. The first character must be an upper-case letter or a digit. A component is *plain* when it
   starts with a digit, or with a letter whose case is the expected one: lower case if a later
   letter of the component is lower case, upper case otherwise. A plain component gets its first
   letter upper-cased; any other one (including those starting with `_`, `.` or `-`) is kept as
   escaped behind the marker `0-X`, which no plain component can start with.

So `member:M123ABC:available` is `Assets:Member:M123ABC:Available`, `partner:teahouse:issued`
is `Assets:Partner:Teahouse:Issued`, `store:bookchain-sh-001:till` is
`Assets:Store:Bookchain--sh--001:Till`, `member:m_1.x:available` is
`Assets:Member:M-U1-Dx:Available`, and `partner:Teahouse:issued` (an unexpected capital) is
`Assets:Partner:0-XTeahouse:Issued`. To decode: drop a leading `0-X` (and then leave the case
alone) or else lower-case the first letter if a later letter is lower case; undo the escapes.

Commodities are the asset codes, except that a code ending in `_`, which beancount refuses, gets
`-X` appended (asset codes never contain `-`).

Consistency: the entries and the balances are read with separate statements. Run the export in a
REPEATABLE READ transaction, or on a range that ended some seconds ago (entries still being
committed carry earlier `recorded_at` times); if the journal moved between the reads so that
the files would disagree, `export_journal` raises `ExportInconsistent` and writes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Text, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clearinghouse.audit.canonical import EntryRecord, encode, entries_recorded, instant_text
from clearinghouse.config import get_settings
from clearinghouse.ledger.tables import ADDRESS_PATTERN, accounts, journal_entries, postings

ENTRIES_FILE = "entries.jsonl"
CSV_FILE = "journal.csv"
BEANCOUNT_FILE = "journal.beancount"
MANIFEST_FILE = "manifest.json"
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

ROOT = "Assets"
OPENING_ACCOUNT = "Equity:Opening-Balances"
OPERATING_CURRENCY = "CNY"

_ADDRESS = re.compile(ADDRESS_PATTERN)
_ASSET = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
_ESCAPES = {"-": "--", "_": "-U", ".": "-D"}
_UNESCAPES = {"-": "-", "U": "_", "D": "."}
_MARK = "0-X"
_COMMODITY_SUFFIX = "-X"


class ExportError(RuntimeError):
    """The export cannot be made as asked."""


class ExportInconsistent(ExportError):
    """The journal changed between the reads of one export; retry it (see the module doc)."""


# Account names and commodities


def _is_lower(ch: str) -> bool:
    return "a" <= ch <= "z"


def _is_upper(ch: str) -> bool:
    return "A" <= ch <= "Z"


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _expects_lower(component: str) -> bool:
    return any(_is_lower(ch) for ch in component[1:])


def _encode_component(component: str) -> str:
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in component)
    first = component[0]
    plain = _is_digit(first) or (
        (_is_lower(first) or _is_upper(first)) and _is_lower(first) == _expects_lower(component)
    )
    if plain:
        return first.upper() + escaped[1:]
    return _MARK + escaped


def _decode_component(name: str) -> str:
    marked = name.startswith(_MARK)
    body = name[len(_MARK) :] if marked else name
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
    text = "".join(out)
    if not text:
        raise ValueError(f"empty account component {name!r}")
    if not marked and _is_upper(text[0]) and _expects_lower(text):
        text = text[0].lower() + text[1:]
    return text


def address_to_account(address: str) -> str:
    """The beancount account name of a ledger address (see the module doc)."""
    if not _ADDRESS.match(address):
        raise ValueError(f"malformed account address {address!r}")
    return ":".join([ROOT, *(_encode_component(part) for part in address.split(":"))])


def account_to_address(account: str) -> str:
    """The ledger address a beancount account name was made from."""
    root, _, rest = account.partition(":")
    if root != ROOT or not rest:
        raise ValueError(f"not an exported account name: {account!r}")
    address = ":".join(_decode_component(part) for part in rest.split(":"))
    if not _ADDRESS.match(address) or address_to_account(address) != account:
        raise ValueError(f"not an exported account name: {account!r}")
    return address


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


# The manifest


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> FileDigest:
        return cls(len(data), hashlib.sha256(data).hexdigest())


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


# The export


def export_journal(
    session: Session,
    start: datetime,
    end: datetime,
    out_dir: Path,
    *,
    zone: ZoneInfo | None = None,
) -> Manifest:
    """Write the entries recorded in [start, end) into `out_dir` (created if missing; an existing
    folder must be empty) and return the manifest. `zone` defaults to the coalition's."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must carry a time zone")
    if end < start:
        raise ValueError("end must not be before start")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} is not empty")
    zone = zone or get_settings().zone

    entries = entries_recorded(session, start, end)
    assets_of: dict[str, str] = {}
    for entry in entries:
        for address, asset, _ in entry.postings:
            assets_of.setdefault(address, asset)
    opening, closing = _balances(session, sorted(assets_of), start, end)
    _check_consistent(entries, assets_of, opening, closing)

    contents = {
        ENTRIES_FILE: b"".join(encode(entry) + b"\n" for entry in entries),
        CSV_FILE: _csv(entries),
        BEANCOUNT_FILE: _beancount(entries, assets_of, opening, closing, start, end, zone),
    }
    manifest = Manifest(
        start=start,
        end=end,
        timezone=zone.key,
        counts=Counts(
            entries=len(entries),
            postings=sum(len(entry.postings) for entry in entries),
            accounts=len(assets_of),
        ),
        first_entry_id=entries[0].id if entries else None,
        last_entry_id=entries[-1].id if entries else None,
        files={name: FileDigest.of(data) for name, data in contents.items()},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (out_dir / name).write_bytes(data)
    (out_dir / MANIFEST_FILE).write_bytes(manifest.encode())
    return manifest


def record_file(out_dir: Path, name: str) -> Manifest:
    """Add (or refresh) another file of the export folder in its manifest, e.g. sealed blocks."""
    if name == MANIFEST_FILE or "/" in name or name in ("", ".", ".."):
        raise ValueError(f"cannot record {name!r} in the manifest")
    manifest = Manifest.read(out_dir)
    files = {**manifest.files, name: FileDigest.of((out_dir / name).read_bytes())}
    updated = Manifest(
        manifest.start,
        manifest.end,
        manifest.timezone,
        manifest.counts,
        manifest.first_entry_id,
        manifest.last_entry_id,
        files,
    )
    (out_dir / MANIFEST_FILE).write_bytes(updated.encode())
    return updated


def verify_manifest(out_dir: Path) -> list[str]:
    """Recompute every listed file's size and SHA-256; the problems found, none when all agree.
    Files in the folder that the manifest does not list are problems too."""
    try:
        manifest = Manifest.read(out_dir)
    except FileNotFoundError:
        return [f"{MANIFEST_FILE}: missing"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{MANIFEST_FILE}: unreadable ({exc})"]
    problems: list[str] = []
    for name, expected in sorted(manifest.files.items()):
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = FileDigest.of(path.read_bytes())
        if actual.size != expected.size:
            problems.append(f"{name}: {actual.size} bytes, manifest says {expected.size}")
        if actual.sha256 != expected.sha256:
            problems.append(f"{name}: sha256 {actual.sha256}, manifest says {expected.sha256}")
    listed = {*manifest.files, MANIFEST_FILE}
    for path in sorted(out_dir.iterdir()):
        if path.name not in listed:
            problems.append(f"{path.name}: not listed in the manifest")
    return problems


# Reading balances


def _balances(
    session: Session, addresses: list[str], start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """Each account's balance from the postings of entries recorded before `start`, and before
    `end`, in one statement (one snapshot)."""
    if not addresses:
        return {}, {}
    wanted = bindparam("addresses", addresses, type_=ARRAY(Text))
    before_start = journal_entries.c.recorded_at < start
    rows = session.execute(
        select(
            accounts.c.address,
            func.coalesce(func.sum(postings.c.amount).filter(before_start), 0).label("opening"),
            func.coalesce(func.sum(postings.c.amount), 0).label("closing"),
        )
        .select_from(
            postings.join(accounts, accounts.c.id == postings.c.account_id).join(
                journal_entries, journal_entries.c.id == postings.c.entry_id
            )
        )
        .where(accounts.c.address == any_(wanted), journal_entries.c.recorded_at < end)
        .group_by(accounts.c.address)
    ).all()
    opening = {address: 0 for address in addresses}
    closing = dict(opening)
    for row in rows:
        opening[row.address] = int(row.opening)
        closing[row.address] = int(row.closing)
    return opening, closing


def _check_consistent(
    entries: list[EntryRecord],
    assets_of: Mapping[str, str],
    opening: Mapping[str, int],
    closing: Mapping[str, int],
) -> None:
    moved: dict[str, int] = defaultdict(int)
    for entry in entries:
        for address, _, amount in entry.postings:
            moved[address] += amount
    drifted = sorted(a for a in assets_of if opening[a] + moved[a] != closing[a])
    if drifted:
        raise ExportInconsistent(
            "the journal changed during the export (accounts "
            + ", ".join(drifted[:5])
            + "): export in a REPEATABLE READ transaction or a range that ended earlier"
        )


# Writing the files


def _compact(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _csv(entries: Iterable[EntryRecord]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        head = (
            entry.id,
            instant_text(entry.recorded_at),
            instant_text(entry.occurred_at),
            entry.kind,
            entry.origin,
            entry.idempotency_key,
            "" if entry.reverses_id is None else entry.reverses_id,
        )
        metadata = _compact(entry.metadata)
        for address, asset, amount in entry.postings:
            writer.writerow((*head, address, asset, amount, metadata))
    return buffer.getvalue().encode()


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


def _posting(account: str, amount: int, commodity: str, width: int) -> str:
    return f"  {account.ljust(width)}  {amount} {commodity}"


def _beancount(
    entries: list[EntryRecord],
    assets_of: Mapping[str, str],
    opening: Mapping[str, int],
    closing: Mapping[str, int],
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
) -> bytes:
    def day(instant: datetime) -> date:
        return instant.astimezone(zone).date()

    first_day = day(start)
    names = {address: address_to_account(address) for address in assets_of}
    width = max([len(OPENING_ACCOUNT), *(len(n) for n in names.values())])
    assets = sorted(set(assets_of.values()))
    lines = [
        "; Journal export of the coalition clearing house.",
        f"; Entries recorded in [{instant_text(start)}, {instant_text(end)}), dated in {zone.key}.",
        "; Amounts are integers in each asset's unit (PTS: points, CNY: fen). Account names and",
        "; commodities map to ledger addresses and assets as documented in",
        "; clearinghouse/audit/exports.py; each account's `address` metadata gives it too.",
        f'option "title" {_quote("Clearing house journal " + instant_text(start))}',
        f'option "operating_currency" "{OPERATING_CURRENCY}"',
        "",
    ]
    lines += [f"{first_day} commodity {asset_to_commodity(asset)}" for asset in assets]
    if assets:
        lines.append("")

    openings = {a: opening[a] for a in sorted(assets_of) if opening[a] != 0}
    for address in sorted(assets_of):
        lines.append(f"{first_day} open {names[address]} {asset_to_commodity(assets_of[address])}")
        lines.append(f"  address: {_quote(address)}")
    if openings:
        lines.append(f"{first_day} open {OPENING_ACCOUNT}")
    if assets_of:
        lines.append("")

    for asset in assets:
        commodity = asset_to_commodity(asset)
        legs = {a: n for a, n in openings.items() if assets_of[a] == asset}
        if not legs:
            continue
        lines.append(
            f'{first_day} * "opening balances" {_quote(asset + " as of " + instant_text(start))}'
        )
        lines += [_posting(names[a], n, commodity, width) for a, n in legs.items()]
        total = sum(legs.values())
        if total:
            lines.append(_posting(OPENING_ACCOUNT, -total, commodity, width))
        lines.append("")

    for entry in entries:
        lines.append(f"{day(entry.recorded_at)} * {_quote(entry.origin)} {_quote(entry.kind)}")
        lines.append(f"  entry_id: {entry.id}")
        lines.append(f"  kind: {_quote(entry.kind)}")
        lines.append(f"  origin: {_quote(entry.origin)}")
        lines.append(f"  idempotency_key: {_quote(entry.idempotency_key)}")
        lines.append(f"  occurred_at: {_quote(instant_text(entry.occurred_at))}")
        lines.append(f"  recorded_at: {_quote(instant_text(entry.recorded_at))}")
        if entry.metadata:
            lines.append(f"  metadata: {_quote(_compact(entry.metadata))}")
        if entry.reverses_id is not None:
            lines.append(f"  reverses_id: {entry.reverses_id}")
        lines += [
            _posting(names[address], amount, asset_to_commodity(asset), width)
            for address, asset, amount in entry.postings
        ]
        lines.append("")

    if assets_of:
        closing_day = day(end) + timedelta(days=1)
        lines += [
            f"{closing_day} balance {names[a].ljust(width)}  {closing[a]} "
            f"{asset_to_commodity(assets_of[a])}"
            for a in sorted(assets_of)
        ]
    return ("\n".join(lines).rstrip("\n") + "\n").encode()
