"""Verifying an export with no database: `clearinghouse audit export` writes a range of the
journal with the sealed blocks, and `clearinghouse audit verify --export DIR` recomputes the
blocks from those files alone (no DATABASE_URL, an empty CLEARINGHOUSE_HOME that stays empty),
naming the block and entry of a changed, missing or slipped-in line."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from clearinghouse.audit import sealing, verify
from clearinghouse.audit.canonical import EntryRecord, encode
from clearinghouse.audit.verify import Problem
from tests.builders.audit import Posted, transfers
from tests.builders.databases import Books
from tests.cli_fixtures import run_cli

exports = pytest.importorskip("clearinghouse.audit.exports")

CHANGED = "entry changed after sealing"
MISSING = "sealed entry is missing"
INSERTED = "recorded before the last seal but never sealed: inserted after the fact"
DATABASE_VARIABLES = ("DATABASE_URL", "CLEARINGHOUSE_DATABASE_URL", "TEST_DATABASE_URL")


def _two_blocks(books: Books) -> list[Posted]:
    """Seven entries, sealed in a block of four and a block of three."""
    first = transfers(books.sessions, 4)
    sealing.seal_all(books.sessions)
    second = transfers(books.sessions, 3)
    sealing.seal_all(books.sessions)
    return first + second


def _cli_export(books: Books, start: datetime, end: datetime, out: Path) -> None:
    result = run_cli(
        "audit",
        "export",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--out",
        str(out),
        env={"DATABASE_URL": books.url},
    )
    assert result.exit_code == 0, result.stderr


def _export(books: Books, start: datetime, end: datetime, out: Path) -> None:
    """What `audit export` does, in this process."""
    with books.sessions() as session:
        exports.export_journal(session, start, end, out)
        verify.write_seals(session, out)
        exports.record_file(out, verify.SEALS_FILE)


def _verify_offline(folder: Path, tmp_path: Path) -> tuple[int, str, str]:
    """`audit verify --export` with no database configured and an empty home, which must stay
    empty: no embedded server was started."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"  # no .env to find either
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    result = run_cli(
        "audit",
        "verify",
        "--export",
        str(folder),
        env={"CLEARINGHOUSE_HOME": str(home), **dict.fromkeys(DATABASE_VARIABLES)},
        cwd=cwd,
    )
    assert list(home.iterdir()) == []
    return result.exit_code, result.stdout, result.stderr


def _lines(folder: Path) -> list[str]:
    lines: list[str] = (folder / exports.ENTRIES_FILE).read_text().splitlines()
    return lines


def _rewrite(folder: Path, lines: list[str]) -> None:
    (folder / exports.ENTRIES_FILE).write_text("".join(line + "\n" for line in lines))


def _with_amounts_shifted(line: str, by: int) -> str:
    data = json.loads(line)
    data["postings"][0][2] -= by
    data["postings"][1][2] += by
    return encode(EntryRecord.from_json(data)).decode()


def test_an_exported_range_verifies_with_no_database(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _two_blocks(books)
    out = tmp_path / "export"
    _cli_export(
        books,
        posted[0].recorded_at - timedelta(seconds=1),
        posted[-1].recorded_at + timedelta(microseconds=1),
        out,
    )
    assert exports.verify_manifest(out) == []
    assert [json.loads(line)["id"] for line in _lines(out)] == [p.id for p in posted]
    assert len((out / verify.SEALS_FILE).read_text().splitlines()) == 2

    code, stdout, stderr = _verify_offline(out, tmp_path)
    assert code == 0, stderr
    assert "verified 2 blocks and 7 entries: intact" in stdout

    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    lines = _lines(changed)
    lines[5] = _with_amounts_shifted(lines[5], 1)
    _rewrite(changed, lines)
    code, _, stderr = _verify_offline(changed, tmp_path)
    assert code == 1
    assert stderr.splitlines()[0] == f"FAILED: block 2, entry {posted[5].id}: {CHANGED}"

    dropped = tmp_path / "dropped"
    shutil.copytree(out, dropped)
    _rewrite(dropped, [line for i, line in enumerate(_lines(dropped)) if i != 1])
    code, _, stderr = _verify_offline(dropped, tmp_path)
    assert code == 1
    assert stderr.splitlines()[0] == f"FAILED: block 1, entry {posted[1].id}: {MISSING}"


def test_a_partial_range_verifies_and_catches_changes(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _two_blocks(books)
    out = tmp_path / "export"
    # From the third entry on: block 1 is only half in the range.
    _export(books, posted[2].recorded_at, posted[-1].recorded_at + timedelta(seconds=1), out)
    assert [json.loads(line)["id"] for line in _lines(out)] == [p.id for p in posted[2:]]
    verdict = verify.verify_export(out)
    assert (verdict.blocks, verdict.entries, verdict.problems) == (2, 5, [])

    lines = _lines(out)
    lines[0] = _with_amounts_shifted(lines[0], 3)
    _rewrite(out, lines)
    assert verify.verify_export(out).problems[0] == Problem(1, posted[2].id, CHANGED)


def test_a_line_slipped_into_an_export_is_caught(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _two_blocks(books)
    out = tmp_path / "export"
    _export(
        books,
        posted[0].recorded_at - timedelta(hours=2),
        posted[-1].recorded_at + timedelta(seconds=1),
        out,
    )
    forged = json.loads(_lines(out)[0])
    forged["id"] = posted[-1].id + 100
    forged["idempotency_key"] = "slipped-in"
    forged["recorded_at"] = (posted[0].recorded_at - timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    _rewrite(out, [*_lines(out), encode(EntryRecord.from_json(forged)).decode()])
    problems = verify.verify_export(out).problems
    assert problems[0] == Problem(None, forged["id"], INSERTED)
    # The file no longer matches its manifest either.
    assert problems[1:]
    assert all(p.message.startswith("manifest: entries.jsonl") for p in problems[1:])


def test_a_changed_entry_with_its_leaf_in_a_partly_exported_block_is_caught(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _two_blocks(books)
    out = tmp_path / "export"
    _export(books, posted[2].recorded_at, posted[-1].recorded_at + timedelta(seconds=1), out)
    lines = _lines(out)
    lines[0] = _with_amounts_shifted(lines[0], 50)
    _rewrite(out, lines)
    leaf = sealing.leaf_hash(lines[0].encode()).hex()
    seals = [json.loads(line) for line in (out / verify.SEALS_FILE).read_text().splitlines()]
    for item in seals[0]["items"]:
        if item[0] == posted[2].id:
            item[1] = leaf
    (out / verify.SEALS_FILE).write_text("".join(json.dumps(b) + "\n" for b in seals))
    with books.sessions() as session:
        newest = sealing.newest_block(session)
    assert newest is not None
    assert seals[-1]["block_hash"] == newest.block_hash.hex()  # the digest still matches
    assert verify.verify_export(out).problems != []
