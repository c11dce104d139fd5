"""`clearinghouse webhook ...`: an operator lists, adds, rotates and disables partners' webhook
endpoints, as partners do through /v1/webhook-endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from clearinghouse.cli_support import fail, transaction

webhook_app = typer.Typer(no_args_is_help=True)

DISABLED_BY_OPERATOR = "disabled by an operator"


def _print(endpoint: object) -> None:
    from clearinghouse.webhooks.schemas import EndpointOut

    shown = EndpointOut.model_validate(endpoint)
    failing = f", failing since {shown.failing_since:%Y-%m-%d %H:%M}" if shown.failing_since else ""
    reason = f" ({shown.disabled_reason})" if shown.disabled_reason else ""
    typer.echo(
        f"{shown.endpoint_id} {shown.status}{reason}{failing}: {shown.url}"
        f" [{', '.join(shown.event_types)}]"
    )


@webhook_app.command("list")
def list_endpoints(
    partner: Annotated[str | None, typer.Option(help="One partner's alone.")] = None,
) -> None:
    """Partners' webhook endpoints, with their state."""
    from clearinghouse.webhooks import service

    with transaction() as session:
        for endpoint in service.list_endpoints(session, partner):
            _print(endpoint)


@webhook_app.command("add")
def add(
    partner: str,
    url: str,
    event: Annotated[
        list[str] | None,
        typer.Option(
            help="An event type it receives (repeat it); if omitted, all but points.earned"
            " and points.redeemed, which it receives only when named."
        ),
    ] = None,
) -> None:
    """Register an endpoint for a partner and print its signing secret, shown only now."""
    from clearinghouse.webhooks import service
    from partners import directory

    unknown = sorted(set(event or ()) - set(service.EVENT_TYPES))
    if unknown:
        raise fail(
            f"unknown event types {', '.join(unknown)}; known: {', '.join(service.EVENT_TYPES)}"
        )
    with transaction() as session:
        directory.get_partner(session, partner)
        endpoint, secret = service.create_endpoint(
            session, partner, url, event or service.USUAL_EVENT_TYPES
        )
    _print(endpoint)
    typer.echo(f"secret: {secret}")


@webhook_app.command("rotate")
def rotate(
    endpoint_id: str,
    overlap_hours: Annotated[
        int, typer.Option(min=0, max=168, help="Hours the old secret keeps signing beside it.")
    ] = 24,
) -> None:
    """A new signing secret for an endpoint, printed once; the old one signs too until the
    overlap ends."""
    from clearinghouse.webhooks import service

    with transaction() as session:
        secret, until = service.rotate_secret(
            session, None, endpoint_id, timedelta(hours=overlap_hours)
        )
    typer.echo(f"secret: {secret}")
    typer.echo(f"the previous secret signs too until {until.isoformat()}")


@webhook_app.command("disable")
def disable(
    endpoint_id: str,
    reason: Annotated[str, typer.Option(help="Why, as the partner will read it.")] = (
        DISABLED_BY_OPERATOR
    ),
) -> None:
    """Stop delivering to an endpoint; its pending deliveries fail."""
    from clearinghouse.webhooks import service

    with transaction() as session:
        _print(service.disable_endpoint(session, None, endpoint_id, reason))


@webhook_app.command("enable")
def enable(endpoint_id: str) -> None:
    """Deliver to a disabled endpoint again: the events recorded from now on (ask for missed
    ones with `redeliver`)."""
    from clearinghouse.webhooks import service

    with transaction() as session:
        _print(service.enable_endpoint(session, None, endpoint_id))


@webhook_app.command("redeliver")
def redeliver(endpoint_id: str, event_id: str) -> None:
    """Send an event to an active endpoint again, now, with the same webhook-id and a fresh
    round of retries (as the console's button and the partner's API do)."""
    from clearinghouse.webhooks import service

    with transaction() as session:
        delivery = service.redeliver(session, None, endpoint_id, event_id)
    typer.echo(f"{delivery.event_id} ({delivery.type}) to {endpoint_id}: {delivery.state}")
