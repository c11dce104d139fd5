"""Exports and verification at any size, shown at a small one: both read the journal a batch at
a time (no statement returns more entries than a batch, and the answers do not depend on the
batch), an export stops and continues where it stopped — interrupted, or on purpose — into the
very files of one made at once, and the export route streams a zip that verifies."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from clearinghouse.app import create_app
from clearinghouse.audit import exports, sealing, verify
from tests.builders.audit import Posted, transfers
from tests.builders.databases import Books
from tests.builders.http import own_client
from tests.builders.users import staff
from tests.cli_fixtures import run_cli

HEADS = "SELECT journal_entries.id, journal_entries.kind"


def _three_blocks(books: Books) -> list[Posted]:
    """Eleven entries: sealed in blocks of four, three and four; one more not sealed yet."""
    posted: list[Posted] = []
    for count in (4, 3, 4):
        posted += transfers(books.sessions, count)
        sealing.seal_all(books.sessions)
    return posted + transfers(books.sessions, 1)


def _range(posted: list[Posted]) -> tuple[datetime, datetime]:
    return posted[0].recorded_at - timedelta(seconds=1), posted[-1].recorded_at + timedelta(
        seconds=1
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@contextmanager
def _entries_read(books: Books) -> Iterator[list[int]]:
    """The number of entries each statement that reads entries returns."""
    counts: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith(HEADS):
            counts.append(cursor.rowcount)

    event.listen(books.engine, "after_cursor_execute", after)
    try:
        yield counts
    finally:
        event.remove(books.engine, "after_cursor_execute", after)


def test_verification_reads_a_batch_at_a_time_and_finds_the_same(
    books: Books, no_seal_delay: None
) -> None:
    posted = _three_blocks(books)
    with books.sessions() as session:
        whole = verify.verify_database(session)
        with _entries_read(books) as counts:
            batched = verify.verify_database(session, batch_size=2)
    assert whole.problems == []
    assert batched == whole
    assert (batched.blocks, batched.entries, batched.unsealed) == (3, 11, 1)
    assert batched.oldest_unsealed is not None
    assert batched.oldest_unsealed.id == posted[-1].id
    # A block of four is read whole (a block is the least a batch holds); never more.
    assert max(counts) <= 4
    assert sum(counts) == len(posted)
    assert len(counts) >= 4


def test_an_export_reads_a_batch_at_a_time_into_the_same_files(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    with books.sessions() as session:
        exports.export_journal(session, start, end, tmp_path / "whole")
        with _entries_read(books) as counts:
            exports.export_journal(session, start, end, tmp_path / "pairs", batch_size=2)
    assert _files(tmp_path / "pairs") == _files(tmp_path / "whole")
    # Twelve entries in pairs; the sixth pair is full, so one more read finds the end.
    assert counts == [2, 2, 2, 2, 2, 2, 0]


def test_worker_processes_encode_an_export_into_the_same_files(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    with books.sessions() as session:
        exports.export_journal(session, start, end, tmp_path / "whole")
    with books.sessions() as session:
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        with _entries_read(books) as counts:
            exports.export_journal(
                session, start, end, tmp_path / "workers", batch_size=2, workers=2
            )
    assert _files(tmp_path / "workers") == _files(tmp_path / "whole")
    # Twelve entries, more than two pairs a worker: the workers read every one of them.
    assert counts == []


def test_an_export_in_parts_is_the_export_made_at_once(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    with books.sessions() as session:
        verify.export_sealed(session, start, end, whole)
    cursors: list[int | None] = []
    while True:
        # Each part in a transaction of its own, as separate runs of the command would be.
        with books.sessions() as session:
            done = verify.export_sealed(session, start, end, parts, max_entries=5)
        if isinstance(done, exports.Manifest):
            break
        cursors.append(done.cursor)
        assert (
            verify.verify_export(parts)
            .problems[0]
            .message.startswith("manifest: manifest.json: missing; the export is unfinished")
        )
    assert cursors == [posted[4].id, posted[9].id]
    assert done == exports.Manifest.read(whole)
    assert _files(parts) == _files(whole)
    verdict = verify.verify_export(parts)
    assert (verdict.blocks, verdict.entries, verdict.unsealed, verdict.problems) == (3, 11, 1, [])


def test_an_interrupted_export_continues_into_the_same_files(
    books: Books, no_seal_delay: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    with books.sessions() as session:
        exports.export_journal(session, start, end, whole)
    real = exports.Progress.write
    writes: list[int | None] = []

    def power_cut(self: exports.Progress, out_dir: Path) -> None:
        writes.append(self.cursor)
        if len(writes) == 3:  # the second batch is in the files, its progress is not
            raise RuntimeError("power cut")
        real(self, out_dir)

    monkeypatch.setattr(exports.Progress, "write", power_cut)
    with books.sessions() as session, pytest.raises(RuntimeError, match="power cut"):
        exports.export_journal(session, start, end, cut, batch_size=3)
    monkeypatch.setattr(exports.Progress, "write", real)
    assert exports.Progress.read(cut).cursor == posted[2].id
    assert (cut / exports.ENTRIES_FILE).read_bytes().count(b"\n") == 6  # three more than it says
    with books.sessions() as session:
        manifest = exports.export_journal(session, start, end, cut, batch_size=3)
    assert manifest == exports.Manifest.read(whole)
    assert _files(cut) == _files(whole)


def test_an_unfinished_export_of_another_range_is_not_continued(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    with books.sessions() as session:
        exports.export_part(session, start, end, tmp_path / "x", max_entries=2)
        with pytest.raises(exports.ExportError, match="unfinished export of"):
            exports.export_part(session, start, end + timedelta(hours=1), tmp_path / "x")
        finished = tmp_path / "done"
        exports.export_journal(session, start, end, finished)
        with pytest.raises(FileExistsError, match="not empty"):
            exports.export_journal(session, start, end, finished)


def test_the_command_exports_in_parts(books: Books, no_seal_delay: None, tmp_path: Path) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    with books.sessions() as session:
        verify.export_sealed(session, start, end, tmp_path / "whole")
    command = ("audit", "export", "--from", start.isoformat(), "--to", end.isoformat())
    out = ("--out", str(tmp_path / "parts"))
    env = {"DATABASE_URL": books.url}
    first = run_cli(*command, *out, "--max-entries", "7", env=env)
    assert first.exit_code == 0, first.stderr
    assert f"exported 7 entries to {tmp_path / 'parts'} so far, up to entry {posted[6].id}" in (
        first.stdout
    )
    second = run_cli(*command, *out, env=env)
    assert second.exit_code == 0, second.stderr
    assert "exported 12 entries" in second.stdout
    assert _files(tmp_path / "parts") == _files(tmp_path / "whole")


def test_the_export_route_streams_a_zip_that_verifies(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = _three_blocks(books)
    start, end = _range(posted)
    http = own_client(create_app(books.sessions))
    try:
        params = {"from": start.isoformat(), "to": end.isoformat()}
        auditor = staff(books.sessions, "auditor").headers
        with http.stream("GET", "/audit/export", params=params, headers=auditor) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == "application/zip"
            chunks = list(response.iter_raw())
    finally:
        http.close()
    zipfile.ZipFile(io.BytesIO(b"".join(chunks))).extractall(tmp_path / "zip")
    with books.sessions() as session:
        newest = sealing.newest_block(session)
        verify.export_sealed(session, start, end, tmp_path / "cli")
    assert newest is not None
    verdict = verify.verify_export(tmp_path / "zip", newest.block_hash.hex())
    assert (verdict.blocks, verdict.entries, verdict.unsealed, verdict.problems) == (3, 11, 1, [])
    assert _files(tmp_path / "zip") == _files(tmp_path / "cli")
