"""`clearinghouse ledger ...`: read the books."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.cli_support import fail, points, transaction
from clearinghouse.config import get_settings
from clearinghouse.ledger import partitions

ledger_app = typer.Typer(no_args_is_help=True)


def print_trial_balance(lines: list[ledger.TrialBalanceLine]) -> None:
    typer.echo(f"{'asset':<6} {'non-zero':>8} {'debit':>14} {'credit':>14} {'net':>8}")
    for line in lines:
        typer.echo(
            f"{line.asset:<6} {line.accounts:>8} {points(line.debit):>14} "
            f"{points(line.credit):>14} {points(line.net):>8}"
        )


def _require_offset(as_of: datetime | None) -> None:
    """An instant without its offset would be read in the database session's zone: refused."""
    if as_of is not None and as_of.tzinfo is None:
        raise fail("--as-of needs a time zone offset, e.g. 2026-11-25T00:00:00+08:00")


@ledger_app.command("balance")
def ledger_balance(
    address: str,
    as_of: Annotated[
        datetime | None, typer.Option(help="An ISO 8601 instant with its offset.")
    ] = None,
) -> None:
    """Show an account's balance, now or as of an instant."""
    _require_offset(as_of)
    with transaction() as session:
        account = ledger.get_account(session, address)
        amount = ledger.balance(session, address, as_of)
    typer.echo(f"{account.address} {points(amount)} {account.asset}")


# Accounts read at a time by `trial-balance --accounts`.
_ACCOUNTS_PAGE = 5000


@ledger_app.command("trial-balance")
def ledger_trial_balance(
    as_of: Annotated[
        datetime | None, typer.Option(help="An ISO 8601 instant with its offset.")
    ] = None,
    accounts: Annotated[
        bool,
        typer.Option(
            "--accounts", help="First every account with a balance, as a debit or a credit."
        ),
    ] = False,
) -> None:
    """Per asset, the sum of debit and credit balances; the net is always zero. With
    --accounts, one line per account before the totals."""
    _require_offset(as_of)
    with transaction() as session:
        if accounts:
            _print_accounts(session, as_of)
        print_trial_balance(ledger.trial_balance(session, as_of))


def _print_accounts(session: Session, as_of: datetime | None) -> None:
    typer.echo(f"{'account':<48} {'asset':<6} {'debit':>14} {'credit':>14}")
    after: str | None = None
    while True:
        page = ledger.trial_balance_accounts(session, as_of, after=after, limit=_ACCOUNTS_PAGE)
        for line in page:
            typer.echo(
                f"{line.address:<48} {line.asset:<6} {points(line.debit):>14} "
                f"{points(line.credit):>14}"
            )
        if len(page) < _ACCOUNTS_PAGE:
            typer.echo("")
            return
        after = page[-1].address


@ledger_app.command("statement")
def ledger_statement(
    address: str,
    limit: int = 50,
    cursor: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
) -> None:
    """An account's postings with their running balance, oldest first."""
    with transaction() as session:
        page = ledger.statement(session, address, limit=limit, cursor=cursor)
    zone = get_settings().zone
    typer.echo(f"{page.address} ({page.asset}), opening balance {points(page.opening_balance)}")
    for line in page.lines:
        recorded = line.recorded_at.astimezone(zone).isoformat(timespec="seconds")
        typer.echo(
            f"{recorded}  entry {line.entry_id:<8} {line.kind:<12} "
            f"{points(line.amount):>12} {points(line.balance):>14}"
        )
    if page.next_cursor:
        typer.echo(f"next page: --cursor {page.next_cursor}")


@ledger_app.command("check")
def ledger_check() -> None:
    """Check that every materialised balance equals the sum of its postings and that the trial
    balance nets to zero; exit non-zero otherwise."""
    with transaction() as session:
        mismatches = ledger.check_consistency(session)
        lines = ledger.trial_balance(session)
    for m in mismatches:
        typer.echo(f"MISMATCH {m.address}: kept {m.materialised}, postings {m.from_postings}")
    for line in lines:
        if line.net != 0:
            typer.echo(f"UNBALANCED {line.asset}: net {line.net}")
    if mismatches or any(line.net != 0 for line in lines):
        raise typer.Exit(code=1)
    typer.echo("ledger consistent: balances equal postings, every asset nets to zero")


@ledger_app.command("partitions")
def ledger_partitions(
    add: Annotated[
        bool,
        typer.Option(help="First make the months ahead that are missing, as the daily job does."),
    ] = False,
) -> None:
    """The journal's month partitions: rows (counted for archived months; for the others, the
    planner's estimate as of the last ANALYZE), size, and where archived months went."""
    with transaction() as session:
        made = partitions.add_ahead(session) if add else None
        found = partitions.list_partitions(session)
    if made is not None:
        typer.echo(f"made {made} months")
    typer.echo(f"{'month':<8} {'state':<9} {'entries':>12} {'postings':>12} {'MB':>8}  archive")
    for p in found.months:
        state = "archived" if p.archived_at else "attached"
        size = "" if p.size_bytes is None else f"{p.size_bytes / 1_048_576:.1f}"
        typer.echo(
            f"{p.month:%Y-%m}  {state:<9} {points(p.entries or 0):>12} "
            f"{points(p.postings or 0):>12} {size:>8}  {p.archive_folder or ''}"
        )
    typer.echo(f"default partition: {found.default_entries} entries")
