"""`clearinghouse console ...`: the console's translation catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

console_app = typer.Typer(no_args_is_help=True)


@console_app.command("catalogue")
def write_catalogue(
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write the .pot file (default: the console's messages.pot)."),
    ] = None,
) -> None:
    """Gather every marked label into the gettext template a translator starts from."""
    from clearinghouse.console import catalogue

    output = output or catalogue.TEMPLATE_PATH
    count = catalogue.write(output)
    typer.echo(f"wrote {count} labels to {output}")
