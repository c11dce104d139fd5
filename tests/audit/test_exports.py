"""Journal exports: canonical entries, CSV, a beancount ledger that bean-check accepts, and a
manifest that catches a changed byte. On a database of their own, so that ranges are exact."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from beancount import loader
from beancount.core import account as bc_account
from beancount.core import account_types, realization
from beancount.core import data as bc_data
from beancount.core.amount import Amount
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.audit import exports
from clearinghouse.audit.canonical import encode, entries_recorded, instant_text
from clearinghouse.database import make_engine, session_factory
from clearinghouse.ledger.tables import ADDRESS_PATTERN
from tests.conftest import Databases

ZONE = ZoneInfo("Asia/Shanghai")

MEMBER = "member:M0123456789AB:available"
MEMBER_2 = "member:M000000000001:available"
ODD_MEMBER = "member:m_x.y-z:available"  # '_', '.', '-' and lower case in the id
TEA_ISSUED = "partner:tea_house.sh:issued"
BOOK_ISSUED = "partner:bookchain:issued"
TEA_PAYABLE = "partner:tea_house.sh:payable"
STORE_TILL = "store:Book.Chain_01:till"  # a capital that must survive the round trip
TEA_PROGRAMME = "partner:Tea.House:programme"
MEMBER_TEA = "member:M000000000001:tea_points"
CREDIT_LINES = "coalition:credit_lines"
BOOK_HEADROOM = "partner:bookchain:headroom"
ACCOUNTS = {
    MEMBER: "PTS",
    MEMBER_2: "PTS",
    ODD_MEMBER: "PTS",
    TEA_ISSUED: "PTS",
    BOOK_ISSUED: "PTS",
    TEA_PAYABLE: "CNY",
    STORE_TILL: "CNY",
    TEA_PROGRAMME: "TEA_",  # beancount refuses a commodity ending in '_': escaped
    MEMBER_TEA: "TEA_",
    CREDIT_LINES: "CNY",
    BOOK_HEADROOM: "CNY",
}


@dataclass(frozen=True)
class Journal:
    sessions: sessionmaker[Session]
    t0: datetime  # before any entry
    t1: datetime  # after phase 1
    t2: datetime  # after phase 2
    t3: datetime  # after phase 3 (the last entry)


def _now(session: Session) -> datetime:
    time.sleep(0.005)
    instant: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    session.rollback()
    time.sleep(0.005)
    return instant


def _entry(
    *legs: tuple[str, int],
    kind: str = "accrual",
    origin: str = "partner:tea_house.sh",
    key: str,
    metadata: dict[str, object] | None = None,
    reverses: int | None = None,
) -> ledger.Entry:
    return ledger.Entry(
        kind=kind,
        origin=origin,
        idempotency_key=key,
        postings=tuple(ledger.Posting(a, n, ACCOUNTS[a]) for a, n in legs),
        occurred_at=datetime(2026, 11, 25, 9, 30, tzinfo=ZONE),
        metadata=metadata or {},
        reverses=reverses,
    )


def _post(session: Session, *entries: ledger.Entry) -> list[int]:
    with session.begin():
        return [ledger.post(session, e).id for e in entries]


@pytest.fixture(scope="module")
def journal(databases: Databases) -> Iterator[Journal]:
    engine = make_engine(databases.create("ch_export"))
    sessions = session_factory(engine)
    with sessions() as s:
        with s.begin():
            s.execute(
                text("INSERT INTO assets (code, name, unit) VALUES ('TEA_', 'Tea points', 'pt')")
            )
            ledger.open_accounts(s, [ledger.AccountSpec(a, asset) for a, asset in ACCOUNTS.items()])
        t0 = _now(s)
        _post(
            s,
            _entry((TEA_ISSUED, -500), (MEMBER, 500), key="a1"),
            _entry((BOOK_ISSUED, -300), (MEMBER_2, 300), origin="partner:bookchain", key="a2"),
            _entry((TEA_ISSUED, -120), (ODD_MEMBER, 120), key="a3"),
            _entry((TEA_PAYABLE, -8_800), (STORE_TILL, 8_800), kind="settlement", key="c1"),
            _entry((TEA_PROGRAMME, -40), (MEMBER_TEA, 40), key="t1"),
            # A ¥1,000,000 issuance limit.
            _entry(
                (CREDIT_LINES, -100_000_000),
                (BOOK_HEADROOM, 100_000_000),
                kind="issuance_limit",
                origin="operator",
                key="l1",
            ),
        )
        t1 = _now(s)
        (redeem,) = _post(
            s,
            _entry(
                (MEMBER, -200),
                (BOOK_ISSUED, 200),
                kind="redemption",
                origin="partner:bookchain",
                key='r1 "quoted" \\ key',
                metadata={"store": "bookchain-sh-001", "note": '茶 "tea"\nline two'},
            ),
        )
        _post(
            s,
            # Two assets in one entry, each balancing on its own.
            _entry(
                (TEA_ISSUED, 100),
                (ODD_MEMBER, -100),
                (TEA_PAYABLE, 2_500),
                (STORE_TILL, -2_500),
                kind="refund.partial",
                key="m1",
            ),
            _entry(
                (MEMBER, 200),
                (BOOK_ISSUED, -200),
                kind="reversal",
                origin="ops",
                key="rev1",
                reverses=redeem,
            ),
        )
        t2 = _now(s)
        _post(
            s,
            _entry((TEA_ISSUED, -7), (MEMBER_2, 7), key="a4"),
            _entry((MEMBER_TEA, -15), (TEA_PROGRAMME, 15), kind="redemption", key="t2"),
        )
        t3 = _now(s)
    yield Journal(sessions, t0, t1, t2, t3)
    engine.dispose()


def _export(journal: Journal, start: datetime, end: datetime, out: Path) -> exports.Manifest:
    with journal.sessions() as s:
        return exports.export_journal(s, start, end, out, zone=ZONE)


def _bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "bean-check"
    found = str(beside) if beside.exists() else shutil.which("bean-check")
    assert found, "bean-check not installed: pip install -e '.[dev]'"
    return subprocess.run(
        [found, str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def _assert_checks(path: Path) -> None:
    result = _bean_check(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _units(amount: Amount | None) -> int:
    """An amount of the beancount file in the ledger's units: CNY back to fen (exactly)."""
    assert amount is not None
    assert amount.number is not None
    units = amount.number * 100 if amount.currency == "CNY" else amount.number
    assert units == units.to_integral_value()
    return int(units)


def _balance_assertions(path: Path) -> dict[str, tuple[int, str]]:
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    return {
        exports.account_to_address(e.account): (
            _units(e.amount),
            exports.commodity_to_asset(e.amount.currency),
        )
        for e in entries
        if isinstance(e, bc_data.Balance)
    }


def test_full_export_passes_bean_check_and_asserts_every_balance(
    journal: Journal, tmp_path: Path
) -> None:
    manifest = _export(journal, journal.t0, journal.t3, tmp_path / "full")
    path = tmp_path / "full" / exports.BEANCOUNT_FILE
    _assert_checks(path)
    text_ = path.read_text()
    assert 'option "operating_currency" "CNY"' in text_
    assert "Equity:Opening-Balances" not in text_  # nothing before the journal's first entry
    assert "commodity TEA_-X" in text_
    # One assertion per account, equal to the ledger's own balance.
    with journal.sessions() as s:
        expected = {a: (ledger.balance(s, a), asset) for a, asset in ACCOUNTS.items()}
    assert _balance_assertions(path) == expected
    assert manifest.counts == exports.Counts(entries=11, postings=24, accounts=len(ACCOUNTS))


# What each account is in the coalition's books (docs/audit.md), and so its beancount type.
ACCOUNT_TYPES = {
    MEMBER: "Assets",
    MEMBER_2: "Assets",
    ODD_MEMBER: "Assets",
    TEA_ISSUED: "Liabilities",
    BOOK_ISSUED: "Liabilities",
    TEA_PAYABLE: "Assets",
    STORE_TILL: "Assets",
    TEA_PROGRAMME: "Liabilities",
    MEMBER_TEA: "Assets",
    CREDIT_LINES: "Equity",
    BOOK_HEADROOM: "Equity",
}


def test_beancount_loads_the_export_with_typed_accounts_and_the_ledgers_balances(
    journal: Journal, tmp_path: Path
) -> None:
    _export(journal, journal.t0, journal.t3, tmp_path / "typed")
    path = tmp_path / "typed" / exports.BEANCOUNT_FILE
    entries, errors, options = loader.load_file(str(path))
    assert errors == []
    opened = {
        e.meta["address"]: e.account for e in entries if isinstance(e, bc_data.Open) and e.meta
    }
    assert {
        address: account_types.get_account_type(name) for address, name in opened.items()
    } == ACCOUNT_TYPES
    assert opened[CREDIT_LINES] == "Equity:Coalition:Credit-Lines"
    assert opened[STORE_TILL] == "Assets:Store:X--Book-DChain-U01:Till"
    # Balances recomputed by beancount from the transactions, in the ledger's units.
    realized = realization.realize(entries)
    balances: dict[str, int] = {}
    for address, name in opened.items():
        (position,) = realization.get(realized, name).balance
        balances[address] = _units(position.units)
    with journal.sessions() as s:
        assert balances == {a: ledger.balance(s, a) for a in ACCOUNTS}
    # Money in yuan: the ¥1,000,000 limit is 1,000,000 CNY, not 100,000,000.
    text_ = path.read_text()
    assert "  Equity:Partner:Bookchain:Headroom  1000000.00 CNY\n" in text_
    assert "  Assets:Store:X--Book-DChain-U01:Till  88.00 CNY\n" in text_
    assert "  Liabilities:Partner:X--tea-Uhouse-Dsh:Issued  -500 PTS\n" in text_
    assert options["operating_currency"] == ["CNY"]


def test_bean_check_catches_a_wrong_balance(journal: Journal, tmp_path: Path) -> None:
    _export(journal, journal.t0, journal.t3, tmp_path / "x")
    path = tmp_path / "x" / exports.BEANCOUNT_FILE
    name = exports.address_to_account(MEMBER)
    lines = path.read_text().splitlines(keepends=True)
    (i,) = [i for i, line in enumerate(lines) if " balance " in line and name in line]
    lines[i] = lines[i].replace(" 500 PTS", " 501 PTS")
    path.write_text("".join(lines))
    result = _bean_check(path)
    assert result.returncode != 0
    assert "Balance failed" in result.stdout + result.stderr


def test_entries_jsonl_is_the_canonical_encoding(journal: Journal, tmp_path: Path) -> None:
    manifest = _export(journal, journal.t0, journal.t3, tmp_path / "e")
    with journal.sessions() as s:
        loaded = entries_recorded(s, journal.t0, journal.t3)
    data = (tmp_path / "e" / exports.ENTRIES_FILE).read_bytes()
    assert data == b"".join(encode(e) + b"\n" for e in loaded)
    assert data.splitlines() == [encode(e) for e in loaded]
    ids = [e.id for e in loaded]
    assert ids == sorted(ids)
    assert (manifest.first_entry_id, manifest.last_entry_id) == (ids[0], ids[-1])


def test_csv_has_one_balanced_row_per_posting(journal: Journal, tmp_path: Path) -> None:
    manifest = _export(journal, journal.t0, journal.t3, tmp_path / "c")
    with (tmp_path / "c" / exports.CSV_FILE).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == exports.CSV_COLUMNS
    assert len(rows) == manifest.counts.postings
    sums: Counter[tuple[str, str]] = Counter()
    for row in rows:
        sums[(row["entry_id"], row["asset"])] += int(row["amount"])
        assert row["recorded_at"].endswith("Z")
        assert ACCOUNTS[row["account"]] == row["asset"]
    assert set(sums.values()) == {0}
    redemption = next(r for r in rows if r["idempotency_key"] == 'r1 "quoted" \\ key')
    assert json.loads(redemption["metadata"])["note"] == '茶 "tea"\nline two'
    reversal = next(r for r in rows if r["kind"] == "reversal")
    assert reversal["reverses_id"] == redemption["entry_id"]


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=2, max_size=12))
def test_csv_lines_read_back_as_their_fields(fields: list[str | int]) -> None:
    # journal.csv is written by hand, a line per posting, for speed: any reader gets the fields.
    line = exports._csv_line(fields)
    assert list(csv.reader([line], strict=True)) == [[str(f) for f in fields]]


def test_manifest_verifies_and_names_a_tampered_file(journal: Journal, tmp_path: Path) -> None:
    out = tmp_path / "m"
    manifest = _export(journal, journal.t0, journal.t3, out)
    assert exports.verify_manifest(out) == []
    assert exports.Manifest.read(out) == manifest
    assert set(manifest.files) == set(exports.DATA_FILES)
    for name in exports.DATA_FILES:
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(out, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        problems = exports.verify_manifest(copy)
        assert problems, name
        assert all(p.startswith(f"{name}: sha256") for p in problems), problems
    truncated = tmp_path / "truncated"
    shutil.copytree(out, truncated)
    (truncated / exports.CSV_FILE).write_bytes((out / exports.CSV_FILE).read_bytes()[:-1])
    assert [p.split(":")[0] for p in exports.verify_manifest(truncated)] == [exports.CSV_FILE] * 2
    (truncated / "extra.txt").write_text("x")
    assert "extra.txt: not listed in the manifest" in exports.verify_manifest(truncated)
    (truncated / exports.ENTRIES_FILE).unlink()
    assert f"{exports.ENTRIES_FILE}: missing" in exports.verify_manifest(truncated)


def test_record_file_adds_a_file_to_the_manifest(journal: Journal, tmp_path: Path) -> None:
    out = tmp_path / "r"
    _export(journal, journal.t1, journal.t2, out)
    (out / "seals.jsonl").write_bytes(b"{}\n")
    assert exports.verify_manifest(out) == ["seals.jsonl: not listed in the manifest"]
    manifest = exports.record_file(out, "seals.jsonl")
    assert manifest.files["seals.jsonl"] == exports.FileDigest.of(b"{}\n")
    assert exports.verify_manifest(out) == []


def test_later_sub_range_opens_with_balances_and_passes_bean_check(
    journal: Journal, tmp_path: Path
) -> None:
    out = tmp_path / "sub"
    manifest = _export(journal, journal.t1, journal.t2, out)
    path = out / exports.BEANCOUNT_FILE
    _assert_checks(path)
    assert manifest.counts.entries == 3
    assert "Equity:Opening-Balances" in path.read_text()
    touched = {TEA_ISSUED, ODD_MEMBER, TEA_PAYABLE, STORE_TILL, MEMBER, BOOK_ISSUED}
    assert manifest.counts.accounts == len(touched)
    with journal.sessions() as s:
        expected = {a: (ledger.balance(s, a, as_of=journal.t2), ACCOUNTS[a]) for a in touched}
    assert _balance_assertions(path) == expected
    # Opening transactions: one per asset, dated on the start day, at the balances as of t1.
    entries, _, _ = loader.load_file(str(path))
    openings = [
        e for e in entries if isinstance(e, bc_data.Transaction) and e.payee == "opening balances"
    ]
    assert sorted(str(e.narration).split()[0] for e in openings) == ["CNY", "PTS"]
    assert {e.date for e in openings} == {journal.t1.astimezone(ZONE).date()}
    legs = {
        exports.account_to_address(p.account): _units(p.units)
        for e in openings
        for p in e.postings
        if p.account != "Equity:Opening-Balances"
    }
    with journal.sessions() as s:
        assert legs == {a: ledger.balance(s, a, as_of=journal.t1) for a in touched}


def test_consecutive_ranges_partition_the_journal(journal: Journal, tmp_path: Path) -> None:
    bounds = [journal.t0, journal.t1, journal.t2, journal.t3]
    parts = b""
    for i, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        out = tmp_path / f"p{i}"
        _export(journal, start, end, out)
        _assert_checks(out / exports.BEANCOUNT_FILE)
        parts += (out / exports.ENTRIES_FILE).read_bytes()
    _export(journal, journal.t0, journal.t3, tmp_path / "all")
    assert parts == (tmp_path / "all" / exports.ENTRIES_FILE).read_bytes()


def test_empty_range_gives_valid_empty_files(journal: Journal, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "empty"
    later = journal.t3 + timedelta(days=1)
    manifest = _export(journal, later, later + timedelta(hours=1), out)
    assert manifest.counts == exports.Counts(0, 0, 0)
    assert (manifest.first_entry_id, manifest.last_entry_id) == (None, None)
    assert (out / exports.ENTRIES_FILE).read_bytes() == b""
    assert (out / exports.CSV_FILE).read_text() == ",".join(exports.CSV_COLUMNS) + "\n"
    _assert_checks(out / exports.BEANCOUNT_FILE)
    assert exports.verify_manifest(out) == []
    saved = json.loads((out / exports.MANIFEST_FILE).read_text())
    assert saved["counts"] == {"entries": 0, "postings": 0, "accounts": 0}
    assert saved["first_entry_id"] is None


def test_refuses_a_non_empty_folder_and_naive_instants(journal: Journal, tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        _export(journal, journal.t0, journal.t3, tmp_path)
    with pytest.raises(ValueError, match="time zone"):
        _export(journal, datetime(2026, 1, 1), journal.t3, tmp_path / "naive")
    assert not (tmp_path / "naive").exists()


def test_a_range_ending_mid_day_asserts_balances_after_its_last_entry(
    journal: Journal, tmp_path: Path
) -> None:
    # Dates follow the coalition's zone: entries are dated on or before end's date.
    out = tmp_path / "z"
    _export(journal, journal.t0, journal.t2, out)
    entries, errors, _ = loader.load_file(str(out / exports.BEANCOUNT_FILE))
    assert errors == []
    last_day = max(e.date for e in entries if isinstance(e, bc_data.Transaction))
    balance_days = {e.date for e in entries if isinstance(e, bc_data.Balance)}
    assert balance_days == {journal.t2.astimezone(ZONE).date() + timedelta(days=1)}
    assert last_day < min(balance_days)


@pytest.mark.parametrize(
    ("address", "account"),
    [
        ("member:M123ABC:available", "Assets:Member:M123ABC:Available"),
        ("partner:teahouse:issued", "Liabilities:Partner:Teahouse:Issued"),
        ("partner:teahouse:redeemed", "Liabilities:Partner:Teahouse:Redeemed"),
        ("partner:teahouse:payable", "Assets:Partner:Teahouse:Payable"),
        ("partner:teahouse:headroom", "Equity:Partner:Teahouse:Headroom"),
        ("coalition:credit_lines", "Equity:Coalition:Credit-Lines"),
        ("coalition:clearing", "Income:Coalition:Clearing"),
        ("coalition:bonus", "Liabilities:Coalition:Bonus"),
        ("coalition:exchange:tea", "Assets:Coalition:Exchange:Tea"),
        ("store:bookchain-sh-001:till", "Assets:Store:Bookchain-sh-001:Till"),
        ("member:m_1.x:available", "Assets:Member:X--m-U1-Dx:Available"),
        ("partner:Teahouse:issued", "Liabilities:Partner:X--Teahouse:Issued"),
        ("partner:a_b:issued", "Liabilities:Partner:X--a-Ub:Issued"),  # would read as A-B
        ("partner:_x:a", "Assets:Partner:X---Ux:X--a"),
        ("coalition:breakage", "Assets:Coalition:Breakage"),
        ("member:M000000000001:points_debt", "Assets:Member:M000000000001:Points-Debt"),
    ],
)
def test_account_names(address: str, account: str) -> None:
    assert exports.address_to_account(address) == account
    assert exports.account_to_address(account) == address
    assert bc_account.is_valid(account)


@given(st.from_regex(ADDRESS_PATTERN, fullmatch=True))
def test_account_names_are_valid_and_reversible(address: str) -> None:
    account = exports.address_to_account(address)
    assert bc_account.is_valid(account)
    assert exports.account_to_address(account) == address


@given(st.from_regex(r"[A-Z][A-Z0-9_]{1,15}", fullmatch=True))
def test_commodities_are_valid_and_reversible(asset: str) -> None:
    commodity = exports.asset_to_commodity(asset)
    assert exports.commodity_to_asset(commodity) == asset
    entries, errors, _ = loader.load_string(f"2026-01-01 commodity {commodity}\n")
    assert errors == []
    assert [e.currency for e in entries if isinstance(e, bc_data.Commodity)] == [commodity]


def test_account_names_are_injective_on_case() -> None:
    variants = ["teahouse", "Teahouse", "TEAHOUSE", "tEAHOUSE", "m123", "M123", "0a", "0A"]
    names = {exports.address_to_account(f"partner:{v}:issued") for v in variants}
    assert len(names) == len(variants)


def test_stray_names_are_not_addresses() -> None:
    for name in [
        "Equity:Opening-Balances",
        "Assets:Member:X--m-Q:Available",
        "Assets:Member:Mx",
        "Assets:Partner:Teahouse:Issued",  # an issuer's account is a liability
        "Expenses:Member:M1:Available",
    ]:
        with pytest.raises(ValueError, match="not an exported account|bad escape"):
            exports.account_to_address(name)


def test_instants_in_the_manifest_are_utc(journal: Journal, tmp_path: Path) -> None:
    manifest = _export(journal, journal.t0, journal.t1, tmp_path / "u")
    saved = json.loads((tmp_path / "u" / exports.MANIFEST_FILE).read_text())
    assert saved["start"].endswith("Z")
    assert datetime.fromisoformat(saved["start"]) == journal.t0
    assert manifest.start.astimezone(UTC) == journal.t0


def test_a_journal_moving_mid_export_is_refused(
    journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = exports._accounts

    def late_entry(*args: Any, **kwargs: Any) -> Iterator[SimpleNamespace]:
        for row in real(*args, **kwargs):
            # As if a posting to the member committed between the entries' reads and this one.
            late = 1 if row.address == MEMBER else 0
            yield SimpleNamespace(**{**row._mapping, "moves": row.moves + late})

    monkeypatch.setattr(exports, "_accounts", late_entry)
    with pytest.raises(exports.ExportInconsistent, match="24 postings written, 25 recorded"):
        _export(journal, journal.t0, journal.t3, tmp_path / "moved")
    assert not (tmp_path / "moved").exists()


@given(st.datetimes(timezones=st.just(UTC)))
def test_instants_are_written_in_one_shape_that_reads_back(instant: datetime) -> None:
    # Years below 1000 too: strftime's %Y would write year 999 as "999".
    written = instant_text(instant)
    assert len(written) == len("2026-11-30T10:00:00.000000Z")
    assert written.endswith("Z")
    assert datetime.fromisoformat(written) == instant
