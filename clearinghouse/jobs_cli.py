"""`clearinghouse jobs ...` and `clearinghouse rules ...`: the recurring jobs, run by a
scheduler (cron, a systemd timer) or by hand, and the versioned rule sets."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse import clock
from clearinghouse.cli_support import fail, sessions, transaction
from clearinghouse.points.expiry import expire_lots
from clearinghouse.rules import policy

jobs_app = typer.Typer()
rules_app = typer.Typer()

# The commands of `clearinghouse jobs` that are not periodic jobs, and why. Every other one is a
# job the server runs by the same name (clearinghouse.jobs.JOBS), as tests/test_jobs.py checks:
# a job added here and not scheduled would never run in the deployed service.
NOT_SCHEDULED = {"run": "runs the server's schedule itself"}


@jobs_app.command("expire-lots")
def expire() -> None:
    """Move what is left of expired lots to coalition:breakage."""
    run = expire_lots(sessions())
    typer.echo(f"expired {run.points:,} points in {run.lots} lots of {run.members} members")


@jobs_app.command("release-holds")
def release_holds() -> None:
    """Give back the points of holds past their expiry."""
    from clearinghouse.jobs import release_holds as release

    released = release(sessions())
    typer.echo(f"released {released} expired holds")


@jobs_app.command("expire-orders")
def expire_orders() -> None:
    """Give back the points, stock and codes of reward orders whose reservation expired."""
    from clearinghouse.rewards.orders import expire_orders as expire

    typer.echo(f"expired {expire(sessions())} reward orders")


@jobs_app.command("batches")
def batches() -> None:
    """Apply the pending lines of every open batch file."""
    from clearinghouse.batches.worker import process_batches

    typer.echo(f"applied {process_batches(sessions()):,} batch lines")


@jobs_app.command("webhooks")
def webhooks() -> None:
    """Post the webhook deliveries that are due, once."""
    from clearinghouse.webhooks.worker import process_webhooks

    typer.echo(f"delivered {process_webhooks(sessions()):,} webhooks")


@jobs_app.command("reminders")
def reminders() -> None:
    """Write the notices due now: members' points about to expire, keys about to retire."""
    from clearinghouse.jobs import send_reminders

    sent = send_reminders(sessions())
    typer.echo(f"{sent.expiring:,} expiring-points reminders, {sent.retiring:,} key notices")


@jobs_app.command("purge")
def purge() -> None:
    """Forget request nonces and idempotency records past their retention."""
    from clearinghouse.jobs import purge_expired

    nonces, records = purge_expired(sessions())
    typer.echo(f"purged {nonces} nonces and {records} idempotency records")


@jobs_app.command("run")
def run() -> None:
    """Run the periodic jobs (purge, seal, settle, liability snapshots, release holds, expire
    lots and reward orders, batches, webhooks, reminders) until stopped, where the web processes run
    with `serve --no-jobs`. Several may run: one leads at a time."""
    import asyncio
    import contextlib

    from clearinghouse.jobs import Scheduler

    scheduler = Scheduler(sessions())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(scheduler.run())


@rules_app.command("show")
def rules_show(
    at: Annotated[datetime | None, typer.Option(help="An instant; now by default.")] = None,
) -> None:
    """The rule set in effect, as JSON."""
    with transaction() as session:
        rule_set = policy.rule_set_at(session, at or clock.now())
    typer.echo(
        json.dumps(
            {
                "version": rule_set.version,
                "effective_from": rule_set.effective_from.isoformat(),
                "earning": rule_set.earning.model_dump(mode="json"),
                "policy": rule_set.policy.model_dump(mode="json"),
            },
            indent=2,
            ensure_ascii=False,
        )
    )


@rules_app.command("publish")
def rules_publish(
    document: Annotated[Path, typer.Argument(help='JSON: {"earning": {...}, "policy": {...}}')],
    effective_from: Annotated[
        datetime | None, typer.Option(help="ISO 8601 instant with offset; now by default.")
    ] = None,
) -> None:
    """Publish the next version of the rules; earlier versions stay as they were."""
    try:
        content = json.loads(document.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {document}: {exc}") from exc
    with transaction() as session:
        published = policy.publish(
            session,
            content.get("earning", {}),
            content.get("policy", {}),
            effective_from,
        )
    typer.echo(f"published rules v{published.version}, effective {published.effective_from}")
