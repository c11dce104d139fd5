"""`clearinghouse settle`, `clearinghouse settlement ...` and `clearinghouse user create`."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse import clock
from clearinghouse.cli_support import fail, sessions, transaction
from clearinghouse.config import get_settings
from clearinghouse.numbers import yuan_text
from clearinghouse.users.service import User, create_user, user_by_token
from settlement import approval, reports, runs, schedule
from settlement.categories import CATEGORIES

settlement_app = typer.Typer(no_args_is_help=True)
# The user commands import sign-in where they run: it loads argon2 and hashes a decoy password,
# which no other command should wait for.
user_app = typer.Typer(no_args_is_help=True)

Token = Annotated[
    str | None,
    typer.Option(help="Your API token (or set CLEARINGHOUSE_TOKEN).", show_default=False),
]


def _yesterday() -> date:
    return clock.today(get_settings().zone) - timedelta(days=1)


def _yuan(fen: int) -> str:
    return yuan_text(fen, grouped=True)


# A category's column on the command line: room for 1,234,567.89 yuan.
AMOUNT_WIDTH = 12


def table_header() -> str:
    """The run's table heading: the partner, each category in its order, the net."""
    amounts = " ".join(f"{category.heading:>{AMOUNT_WIDTH}}" for category in CATEGORIES)
    return f"  {'partner':<16} {amounts} {'net (yuan)':>14}"


def print_run(run: runs.Run) -> None:
    typer.echo(
        f"settlement {run.business_date} (attempt {run.attempt}): {run.state}, "
        f"{run.entries} entries, cut-off {run.cutoff.isoformat()}"
        + (f"; computed early, at {run.computed_at.isoformat()}" if run.computed_early else "")
    )
    typer.echo(table_header())
    for line in run.lines:
        amounts = " ".join(
            f"{_yuan(getattr(line, category.fen_column)):>{AMOUNT_WIDTH}}"
            for category in CATEGORIES
        )
        typer.echo(f"  {line.partner_id:<16} {amounts} {_yuan(line.net_fen):>14}")
    blank = " ".join(f"{'':>{AMOUNT_WIDTH}}" for _category in CATEGORIES)
    typer.echo(f"  {'coalition keeps':<16} {blank} {_yuan(run.coalition_fen):>14}")
    verdict = "cancel to the fen" if run.zero_sum else "DO NOT CANCEL"
    typer.echo(f"  partner nets and the coalition's revenue {verdict} (net > 0: the partner pays)")


def settle_command(
    business_date: Annotated[
        str | None, typer.Option("--date", help="YYYY-MM-DD; yesterday by default.")
    ] = None,
) -> None:
    target = date.fromisoformat(business_date) if business_date else _yesterday()
    try:
        done = schedule.settle_through(sessions(), target)
    except schedule.DayNotOver as exc:
        raise fail(exc.detail) from exc
    for run in done.runs:
        print_run(run)
    for failed, _error in done.errors:
        typer.secho(
            f"error: the settlement of {failed.business_date.isoformat()} failed: {failed.error}",
            fg=typer.colors.RED,
            err=True,
        )
    if done.errors:
        raise typer.Exit(code=1)


def _user(token: str | None) -> User:
    value = token or os.environ.get("CLEARINGHOUSE_TOKEN")
    if not value:
        raise fail("give --token or set CLEARINGHOUSE_TOKEN")
    with transaction() as session:
        return user_by_token(session, value)


@settlement_app.command("show")
def show(
    business_date: str,
    csv: Annotated[Path | None, typer.Option(help="Also write the CSV report here.")] = None,
) -> None:
    with transaction() as session:
        run = runs.load_run(session, date.fromisoformat(business_date))
        report = reports.report_of(session, run)
    print_run(run)
    if csv is not None:
        csv.write_text(reports.settlement_csv(report))
        typer.echo(f"wrote {csv}")


@settlement_app.command("approve")
def approve(business_date: str, token: Token = None) -> None:
    user = _user(token)
    with transaction() as session:
        run, warnings = approval.approve(session, date.fromisoformat(business_date), user)
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    typer.echo(f"{user.id} approved; settlement {run.business_date} is {run.state}")


@settlement_app.command("reject")
def reject(business_date: str, reason: Annotated[str, typer.Option()], token: Token = None) -> None:
    user = _user(token)
    with transaction() as session:
        approval.reject(session, date.fromisoformat(business_date), user, reason)
    typer.echo(f"rejected; run `clearinghouse settle --date {business_date}` to compute it anew")


@settlement_app.command("paid")
def paid(
    business_date: str, bank_reference: Annotated[str, typer.Option()], token: Token = None
) -> None:
    user = _user(token)
    with transaction() as session:
        run = approval.mark_paid(session, date.fromisoformat(business_date), user, bank_reference)
    typer.echo(f"settlement {run.business_date} is paid ({bank_reference})")


@settlement_app.command("liability")
def liability() -> None:
    with transaction() as session:
        report = reports.liability_report(session)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False))


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@user_app.command("create")
def user_create(
    user_id: str,
    role: Annotated[str, typer.Option()],
    password_stdin: PasswordStdin = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="API token only: no console sign-in.")
    ] = False,
) -> None:
    """Create a user: a password for the console (prompted for, unless --password-stdin or
    --no-password) and an API token printed once; only an argon2 hash and a digest are kept."""
    from clearinghouse.users import signin

    password = None if no_password else _new_password(password_stdin)
    with transaction() as session:
        user, token = create_user(session, user_id, role)
        if password is not None:
            signin.set_password(session, user.id, password)
    signs_in = "signs in with a password" if password is not None else "API token only"
    typer.echo(f"user {user.id} ({user.role}), {signs_in}; API token, shown once:\n{token}")


@user_app.command("password")
def user_password(user_id: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new console password; the user's open sessions end."""
    from clearinghouse.users import signin

    password = _new_password(password_stdin)
    with transaction() as session:
        signin.set_password(session, user_id, password)
    typer.echo(f"password of {user_id} changed; its console sessions have ended")


@user_app.command("unlock")
def user_unlock(user_id: str) -> None:
    """Lift a sign-in lock-out now."""
    from clearinghouse.users import signin

    with transaction() as session:
        signin.unlock(session, user_id)
    typer.echo(f"{user_id} may sign in again")


@user_app.command("disable")
def user_disable(user_id: str) -> None:
    """No more sign-in or API token for the user; open sessions end."""
    from clearinghouse.users import signin

    with transaction() as session:
        signin.disable(session, user_id)
    typer.echo(f"{user_id} is disabled")
