"""`clearinghouse db ...`: the database schema."""

from __future__ import annotations

import typer

from clearinghouse import migrate
from clearinghouse.config import get_settings
from clearinghouse.database import make_engine, resolve_url

db_app = typer.Typer(no_args_is_help=True)


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
