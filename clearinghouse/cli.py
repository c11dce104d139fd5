"""The `clearinghouse` command."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse import ledger, migrate
from clearinghouse.audit.cli import audit_app
from clearinghouse.cli_support import fail, points, transaction
from clearinghouse.config import get_settings
from clearinghouse.console.cli import console_app
from clearinghouse.database import make_engine, resolve_url, session_factory
from clearinghouse.fraud.cli import fraud_app
from clearinghouse.jobs_cli import jobs_app, rules_app
from clearinghouse.points import lots
from partners.cli import key_app, partner_app, store_app
from settlement.cli import print_run, settle_command, settlement_app, user_app

app = typer.Typer(help="Coalition loyalty-points clearing house.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read the books.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
app.add_typer(partner_app, name="partner")
partner_app.add_typer(key_app, name="key")
app.add_typer(store_app, name="store")
app.add_typer(jobs_app, name="jobs")
app.add_typer(rules_app, name="rules")
app.add_typer(settlement_app, name="settlement")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(fraud_app, name="fraud")
app.add_typer(console_app, name="console")
app.command("settle")(settle_command)


def print_trial_balance(lines: list[ledger.TrialBalanceLine]) -> None:
    typer.echo(f"{'asset':<6} {'non-zero':>8} {'debit':>14} {'credit':>14} {'net':>8}")
    for line in lines:
        typer.echo(
            f"{line.asset:<6} {line.accounts:>8} {points(line.debit):>14} "
            f"{points(line.credit):>14} {points(line.net):>8}"
        )


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database schema (to the newest revision by default)."""
    url = resolve_url(get_settings())
    migrate.upgrade(url, revision)
    engine = make_engine(url, pool_size=1)
    typer.echo(f"schema at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database, and the one this version needs."""
    engine = make_engine(resolve_url(get_settings()), pool_size=1)
    typer.echo(f"database: {migrate.current_revision(engine) or '(no schema)'}")
    typer.echo(f"code:     {migrate.head_revision()}")
    engine.dispose()


@ledger_app.command("balance")
def ledger_balance(
    address: str,
    as_of: Annotated[
        datetime | None, typer.Option(help="An ISO 8601 instant with its offset.")
    ] = None,
) -> None:
    """Show an account's balance, now or as of an instant."""
    if as_of is not None and as_of.tzinfo is None:
        raise fail("--as-of needs a time zone offset, e.g. 2026-11-25T00:00:00+08:00")
    with transaction() as session:
        account = ledger.get_account(session, address)
        amount = ledger.balance(session, address, as_of)
    typer.echo(f"{account.address} {points(amount)} {account.asset}")


@ledger_app.command("trial-balance")
def ledger_trial_balance(
    as_of: Annotated[datetime | None, typer.Option(help="An ISO 8601 instant.")] = None,
) -> None:
    """Per asset, the sum of debit and credit balances; the net is always zero."""
    with transaction() as session:
        print_trial_balance(ledger.trial_balance(session, as_of))


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


@app.command()
def demo() -> None:
    """Start the database (embedded unless DATABASE_URL is set), migrate it, and run a small
    coalition day through the signed partner API; print what happened and the trial balance."""
    # The demo serves the web app: only this command loads it, uvicorn and the console.
    from clearinghouse import demo as demo_module

    settings = get_settings()
    url = resolve_url(settings)
    migrate.upgrade(url)
    factory = session_factory(make_engine(url, pool_size=4))
    day = demo_module.run(factory, settings.home.expanduser())
    accrual, redemption, member = day.accrual, day.redemption, day.member
    typer.echo(f"member {day.member_id} (Alice), linked at the tea house and the book chain")
    typer.echo(
        f"\nteahouse: purchase of {accrual['partner_txn_id']} for 520.00 yuan earned "
        f"{points(accrual['points'])} points (rules v{accrual['rules_version']})"
    )
    for line in accrual["breakdown"]:
        typer.echo(f"  {line['rule']:<22} {line['points']:>10}  {line['description']}")
    typer.echo(
        f"\nbookchain: redeemed {points(redemption['captured'])} points as "
        f"{redemption['value_fen'] / 100:,.2f} yuan (hold {redemption['hold_id']}, "
        f"{redemption['state']})"
    )
    typer.echo(
        f"\nAlice: {points(member['available_points'])} points available, tier "
        f"{member['tier']['tier']}, {points(member['tier']['points_to_next_tier'] or 0)} "
        "points to the next tier"
    )
    for lot in day.lots:
        typer.echo(f"  lot of {points(lot['points'])} points expiring {lot['expires_at']}")
    with factory() as session:
        typer.echo("\npartner accounts")
        for partner in demo_module.PARTNERS:
            for kind in ("issued", "redeemed"):
                address = f"partner:{partner}:{kind}"
                typer.echo(f"  {address:<30} {points(ledger.balance(session, address)):>10}")
        typer.echo("\ntrial balance")
        print_trial_balance(ledger.trial_balance(session))
        mismatches = ledger.check_consistency(session)
        lot_mismatches = lots.check_lots(session)
    typer.echo("")
    print_run(day.settlement)
    typer.echo(f"settlement report written to {day.report}")
    if mismatches or lot_mismatches:
        raise fail("the books are inconsistent: run `clearinghouse ledger check`")
    typer.echo(
        "\nevery balance equals the sum of its postings; every member's lots equal their balance"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes: as many as the machine has cores.")
    ] = 1,
    jobs: Annotated[
        bool,
        typer.Option(
            help="Run the periodic jobs in the server (one worker at a time); --no-jobs where "
            "`clearinghouse jobs run` runs them."
        ),
    ] = True,
    loop: Annotated[str, typer.Option(help="Event loop: uvloop or asyncio.")] = "uvloop",
    http: Annotated[str, typer.Option(help="HTTP parser: httptools or h11.")] = "httptools",
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Trust X-Forwarded-Proto and -For from these addresses (the TLS proxy in "
            "front, e.g. 127.0.0.1); console cookies are then Secure."
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="Serve TLS with this certificate.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Seconds a request's head may take, from the connection's opening or the "
            "request's first byte.",
        ),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds a request's body may take after its head."),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(min=1, help="Connections each worker keeps open; beyond them, 503."),
    ] = None,
) -> None:
    """Run the API and the finance console (on the configured database, or the embedded one)."""
    from clearinghouse import server
    from clearinghouse.http_limits import ConnectionLimits

    if loop not in ("uvloop", "asyncio") or http not in ("httptools", "h11"):
        raise fail("--loop is uvloop or asyncio; --http is httptools or h11")
    engine = make_engine(resolve_url(get_settings()), pool_size=1)
    try:
        migrate.require_current_schema(engine)
    except migrate.SchemaNotMigrated as exc:
        raise fail(str(exc)) from exc
    finally:
        engine.dispose()
    server.serve(
        host=host,
        port=port,
        workers=workers,
        jobs=jobs,
        loop=loop,
        http=http,
        forwarded_allow_ips=forwarded_allow_ips,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        limits=ConnectionLimits.given(
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_connections=max_connections,
        ),
    )


@app.command("openapi")
def write_openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document.")] = Path(
        "openapi/openapi.json"
    ),
) -> None:
    """Write the OpenAPI document generated from the application."""
    from clearinghouse.api.app import create_app
    from clearinghouse.api.openapi import render

    output.write_text(render(create_app()))
    typer.echo(f"wrote {output}")
