"""`clearinghouse audit ...`: seal, verify (the database or an export folder), prove an entry's
inclusion offline, export a date range, archive a month."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import text

from clearinghouse.audit import archive, sealing, verify
from clearinghouse.audit.exports import ExportError, Progress
from clearinghouse.cli_support import fail, sessions, transaction
from clearinghouse.ledger.partitions import suffix

audit_app = typer.Typer(no_args_is_help=True)


def _digest(value: str | None) -> str | None:
    """A --digest option: a block hash, or a usage error that says what one looks like."""
    if value is None:
        return None
    try:
        return sealing.parse_digest(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@audit_app.command("seal")
def seal() -> None:
    """Seal every committed entry not sealed yet (the server also does it every few seconds);
    exit 1 at an entry changed behind the ledger's back, having sealed those before it."""
    try:
        blocks = sealing.seal_all(sessions())
    except sealing.SealingHalted as halted:
        _print_sealed(halted.sealed)
        raise fail(f"{halted}; run `clearinghouse ledger check`") from halted
    _print_sealed(blocks)


def _print_sealed(blocks: list[sealing.Block]) -> None:
    for block in blocks:
        typer.echo(f"sealed block {block.number}: {block.entry_count} entries")
    if blocks:
        typer.echo(f"newest digest {blocks[-1].block_hash.hex()}")


@audit_app.command("verify")
def verify_command(
    export: Annotated[
        Path | None, typer.Option(help="Verify this export folder instead, with no database.")
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option(help="A digest you hold: some block must have it.", callback=_digest),
    ] = None,
) -> None:
    """Recompute every sealed block; exit 1 naming the first bad block and entry."""
    if export is not None:
        verdict = verify.verify_export(export, digest)
    else:
        with transaction() as session:
            verdict = verify.verify_database(session, digest)
    if verdict.oldest_unsealed is not None:
        oldest = verdict.oldest_unsealed
        typer.echo(
            f"{verdict.unsealed} entries not sealed yet; the oldest, entry {oldest.id}, "
            f"recorded at {oldest.recorded_at.isoformat()}"
        )
    if verdict.problems:
        first = verdict.problems[0]
        typer.secho(f"FAILED: {first}", fg=typer.colors.RED, err=True)
        for problem in verdict.problems[1:]:
            typer.echo(f"  also: {problem}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"verified {verdict.blocks} blocks and {verdict.entries} entries: intact")


@audit_app.command("prove")
def prove(
    entry_id: int,
    digest: Annotated[
        str, typer.Option(help="The published digest to prove against.", callback=_digest)
    ],
    proof: Annotated[
        Path | None,
        typer.Option(help="A proof from GET /audit/proofs/ENTRY_ID; else read from the database."),
    ] = None,
) -> None:
    """Check that an entry is in the journal that `digest` seals."""
    if proof is not None:
        document = json.loads(proof.read_text())
    else:
        with transaction() as session:
            found = sealing.prove(session, entry_id)
        if found is None:
            raise fail(f"entry {entry_id} is not sealed (yet)")
        document = found.as_json()
    if int(document["entry"]["id"]) != entry_id:
        raise fail(f"the proof is for entry {document['entry']['id']}, not {entry_id}")
    problems = sealing.check_proof(document, digest)
    if problems:
        for problem in problems:
            typer.secho(f"FAILED: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(f"entry {entry_id} is included in the journal sealed by {digest}")


@audit_app.command("export")
def export(
    start: Annotated[datetime, typer.Option("--from", help="Recorded at or after (ISO 8601).")],
    end: Annotated[datetime, typer.Option("--to", help="Recorded before (ISO 8601).")],
    out: Annotated[
        Path, typer.Option(help="A new folder, or one holding an unfinished export to continue.")
    ],
    max_entries: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many entries; the same command continues."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Processes encoding the entries of a large export (default: the CPUs)."
        ),
    ] = min(os.cpu_count() or 1, 4),
) -> None:
    """Write entries, CSV, beancount, seals and a manifest of digests for a date range, a batch
    at a time; an interrupted or partial export continues from its last entry."""
    if start.tzinfo is None or end.tzinfo is None:
        raise fail("--from and --to need a time zone offset")
    with transaction() as session:
        # One snapshot: the files and the seals describe the same journal.
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        try:
            done = verify.export_sealed(
                session, start, end, out, max_entries=max_entries, workers=workers
            )
        except (ExportError, FileExistsError) as exc:
            raise fail(str(exc)) from exc
    if isinstance(done, Progress):
        typer.echo(
            f"exported {done.entries} entries to {out} so far, up to entry {done.cursor}; "
            "run the same command again to continue"
        )
        return
    typer.echo(
        f"exported {done.counts.entries} entries to {out}; digests in {out / 'manifest.json'}"
    )


def _month(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m").date()
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a month such as 2026-10") from exc


@audit_app.command("archive")
def archive_command(
    month: Annotated[date, typer.Argument(help="The month, e.g. 2026-10.", parser=_month)],
    out: Annotated[Path, typer.Option(help="A new folder for the month's export.")],
    drop: Annotated[
        bool, typer.Option(help="Drop the detached tables too (the folder holds their rows).")
    ] = False,
) -> None:
    """Move a month of the journal out of the database: write its export (entries, postings,
    beancount, seals, manifest), verify it alone, detach the month's partitions. Refused while
    the month is not over, not sealed or not settled, or an earlier month is still in."""
    with transaction() as session:
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        try:
            done = archive.archive_month(session, month, out, drop=drop)
        except (ExportError, FileExistsError) as exc:
            raise fail(str(exc)) from exc
    part = done.partition
    kept = (
        "dropped"
        if done.dropped
        else f"detached as journal_entries_{suffix(month)} and postings_{suffix(month)}"
    )
    typer.echo(
        f"archived {month:%Y-%m}: {part.entries} entries, {part.postings} postings in {out}"
        f" (manifest sha256 {part.archive_digest}); the tables were {kept}"
    )
