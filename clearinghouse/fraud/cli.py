"""`clearinghouse fraud ...`: the thresholds in force and new versions of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse import clock
from clearinghouse.cli_support import fail, transaction
from clearinghouse.fraud import service

fraud_app = typer.Typer(no_args_is_help=True)

Partner = Annotated[
    str | None,
    typer.Option(help="A partner's own thresholds; the coalition's defaults if omitted."),
]


@fraud_app.command("show")
def show(partner: Partner = None) -> None:
    """The thresholds in force (for a partner: the coalition's, overridden by its own)."""
    with transaction() as session:
        thresholds, versions = service.thresholds_for(session, partner or "", clock.now())
    typer.echo(json.dumps({"versions": versions, "thresholds": thresholds.model_dump()}, indent=2))


@fraud_app.command("set")
def set_thresholds(
    settings: Annotated[Path, typer.Argument(help="JSON object: the thresholds to change.")],
    partner: Partner = None,
) -> None:
    """Publish a new version; for a partner, only the keys given override the defaults."""
    try:
        values = json.loads(settings.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {settings}: {exc}") from exc
    if not isinstance(values, dict):
        raise fail("the file must hold a JSON object")
    with transaction() as session:
        version = service.publish_thresholds(session, partner, values)
    typer.echo(f"published thresholds v{version} for {partner or 'the coalition'}")
