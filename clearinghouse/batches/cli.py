"""`clearinghouse batch ...`: an operator submits a partner's file and follows it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse.cli_support import sessions, transaction
from partners.auth import PARTNER_WIDE

batch_app = typer.Typer(no_args_is_help=True)

OPERATOR_KEY = "operator-cli"
"""The key id a batch submitted by an operator records."""


def _print(batch: object) -> None:
    from clearinghouse.batches.schemas import BatchOut

    shown = BatchOut.of(batch)
    typer.echo(
        f"batch {shown.batch_id} ({shown.state}): {shown.lines} lines, {shown.applied} applied,"
        f" {shown.replayed} replayed, {shown.failed} failed, {shown.pending} pending"
    )


@batch_app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="JSON Lines, plain or gzip.", exists=True)],
    partner: Annotated[str, typer.Option(help="The partner whose operations these are.")],
    store: Annotated[
        str | None, typer.Option(help="Apply every line at this store alone, as its key would.")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(help="Apply it now with a progress bar, rather than leave it to the jobs."),
    ] = True,
) -> None:
    """Take in a partner's batch file, as `POST /v1/batches` would, and apply it."""
    from clearinghouse.batches import service, worker
    from clearinghouse.database import Tx
    from clearinghouse.files import sha256_of
    from partners import directory
    from partners.auth import KeyScope

    with file.open("rb") as handle, transaction() as session:
        tx = Tx.of(session)
        directory.get_partner(tx, partner)
        scope = KeyScope(store)
        if store is not None:
            directory.get_store(tx, partner, store, scope)
        batch = service.submit(tx, partner, OPERATOR_KEY, scope, handle, sha256_of(handle))
    _print(batch)
    if not wait or batch.pending == 0:
        return
    made = sessions()
    with (
        ThreadPoolExecutor(1) as background,
        typer.progressbar(length=batch.lines, label="applying") as bar,
    ):
        applying = background.submit(worker.process_batches, made, batch_id=batch.id)
        shown = 0
        while True:
            finished = applying.done()
            with made() as session:
                batch = service.get(Tx.of(session), partner, batch.id, PARTNER_WIDE)
            bar.update(batch.lines - batch.pending - shown)
            shown = batch.lines - batch.pending
            if finished:
                applying.result()
                if batch.state == "done":
                    break
                # The server's worker holds some of it: follow its progress, then finish.
                applying = background.submit(worker.process_batches, made, batch_id=batch.id)
            time.sleep(0.5)
    _print(batch)


@batch_app.command("status")
def status(
    batch_id: str,
    problems: Annotated[int, typer.Option(help="Failed lines to show.")] = 20,
) -> None:
    """A batch's progress, and the problems of its first failed lines."""
    from clearinghouse.batches import service
    from clearinghouse.database import Tx

    with transaction() as session:
        tx = Tx.of(session)
        batch = service.get(tx, None, batch_id, PARTNER_WIDE)
        _print(batch)
        for line in service.failures(tx, batch_id, problems):
            result = line.result or {}
            typer.echo(
                f"  line {line.line} ({line.operation or '?'} {line.partner_txn_id or ''}):"
                f" {line.status} {result.get('code')}: {result.get('detail')}"
            )
