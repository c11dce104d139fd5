"""The `clearinghouse` command, the composition root.

Each group of subcommands is imported only when one of its commands runs, so that `--help` and
a simple command load no more than they use: no web app, console or PDF library for
`partner list`, and no database driver for `--help`."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from clearinghouse import logs
from clearinghouse.cli_support import close_engines, fail, points

# name: (module:attribute, help). The attribute is a Typer (a group of commands) or a function
# (one command); the help is here so that listing the commands imports none of them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "db": ("clearinghouse.db_cli:db_app", "The database schema."),
    "ledger": ("clearinghouse.ledger.cli:ledger_app", "Read the books."),
    "partner": ("partners.cli:partner_app", "Partners, their rates, keys and issuance limits."),
    "store": ("partners.cli:store_app", "Partners' stores and terminals."),
    "jobs": (
        "clearinghouse.jobs_cli:jobs_app",
        "Recurring jobs; each is safe to run twice or at once.",
    ),
    "rules": ("clearinghouse.jobs_cli:rules_app", "Earning rules and points policy, versioned."),
    "batch": ("clearinghouse.batches.cli:batch_app", "Partners' batch files of operations."),
    "reward": ("clearinghouse.rewards.cli:reward_app", "The coalition's rewards catalogue."),
    "campaign": (
        "clearinghouse.rewards.campaign_cli:campaign_app",
        "Campaigns of engagement points and their budgets.",
    ),
    "webhook": (
        "clearinghouse.webhooks.cli:webhook_app",
        "Partners' webhook endpoints and their signing secrets.",
    ),
    "settle": (
        "settlement.cli:settle_command",
        "Settle a business date (and any earlier open dates first). Safe to repeat.",
    ),
    "settlement": ("settlement.cli:settlement_app", "Settlement reports and their approval."),
    "user": ("settlement.cli:user_app", "People: finance, approver, auditor, operator."),
    "audit": ("clearinghouse.audit.cli:audit_app", "Seal, verify and export the journal."),
    "fraud": ("clearinghouse.fraud.cli:fraud_app", "Risk-control thresholds."),
    "console": ("clearinghouse.console.cli:console_app", "The finance console."),
}


class LazyCommands(TyperGroup):
    """The root group: resolves a subcommand by importing its module, and lists them from
    SUBCOMMANDS alone. (Contexts and formatters are typed Any: which click classes they are
    depends on the typer version, which may bring a click of its own.)"""

    listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *SUBCOMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        target, help_text = SUBCOMMANDS[cmd_name]
        if self.listing:
            return TyperCommand(cmd_name, help=help_text)
        module, attribute = target.split(":")
        found = getattr(importlib.import_module(module), attribute)
        if isinstance(found, typer.Typer):
            # A group even when it holds one command, as add_typer makes it.
            command: Any = typer.main.get_group(found)
        else:
            single = typer.Typer(add_completion=False)
            single.command()(found)
            command = typer.main.get_command(single)
        command.name, command.help = cmd_name, help_text
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    cls=LazyCommands, help="Coalition loyalty-points clearing house.", no_args_is_help=True
)


@app.callback()
def main(
    ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False
) -> None:
    ctx.call_on_close(close_engines)
    logs.configure(logging.INFO if verbose else logging.WARNING)


@app.command()
def demo() -> None:
    """Start the database (embedded unless DATABASE_URL is set), migrate it, and run a small
    coalition day through the signed partner API; print what happened and the trial balance."""
    # The demo serves the web app: only this command loads it, uvicorn and the console.
    from clearinghouse import demo as demo_module
    from clearinghouse import ledger, migrate
    from clearinghouse.config import get_settings
    from clearinghouse.database import make_engine, resolve_url, session_factory
    from clearinghouse.ledger.cli import print_trial_balance
    from clearinghouse.numbers import yuan_text
    from clearinghouse.points import lots
    from settlement.cli import print_run

    # A development run: the tea house's webhook receiver is plain http on 127.0.0.1.
    os.environ.setdefault("CLEARINGHOUSE_WEBHOOKS_DEV_HTTP", "true")
    get_settings.cache_clear()
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
        f"{yuan_text(redemption['value_fen'], grouped=True)} yuan (hold {redemption['hold_id']}, "
        f"{redemption['state']})"
    )
    order = day.order
    typer.echo(
        f"\nteahouse app: ordered bookchain's book token from the catalogue for "
        f"{points(order['points'])} points, code {', '.join(order['codes'])} "
        f"(order {order['order_id']}, {order['state']}; bookchain is owed "
        f"{yuan_text(order['value_fen'], grouped=True)} yuan)"
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
    reminder = day.reminder.body["data"]
    typer.echo(
        f"\nteahouse's webhook receiver got {day.reminder.body['type']} {day.reminder.event_id}"
        f"{' (sent again)' if day.reminder.redelivered else ''}: "
        f"{points(reminder['points'])} points of {reminder['customer_ref']} expire "
        f"{reminder['expires_at']}; signature verified with the Standard Webhooks library"
    )
    typer.echo(
        f"\njournal sealed; its digest is {day.digest}\n"
        f"  keep it: `clearinghouse audit verify --digest {day.digest}` fails if any entry "
        "up to it is changed"
    )
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
    from clearinghouse import migrate, server
    from clearinghouse.config import get_settings
    from clearinghouse.database import make_engine, resolve_url
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
    from clearinghouse.api.openapi import render
    from clearinghouse.app import create_app

    output.write_text(render(create_app()))
    typer.echo(f"wrote {output}")
