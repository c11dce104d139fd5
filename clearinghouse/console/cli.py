"""`clearinghouse console ...`: the console's translation catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearinghouse.console import catalogue

console_app = typer.Typer(help="The finance console.", no_args_is_help=True)


@console_app.command("catalogue")
def write_catalogue(
    output: Annotated[Path, typer.Option(help="Where to write the .pot file.")] = (
        catalogue.TEMPLATE_PATH
    ),
) -> None:
    """Gather every marked label into the gettext template a translator starts from."""
    count = catalogue.write(output)
    typer.echo(f"wrote {count} labels to {output}")
