"""What every `clearinghouse` subcommand shares: the database, errors, number formats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from clearinghouse.errors import DomainError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

# The engines `sessions` made for the command running; `close_engines` disposes of them.
_engines: list[Engine] = []


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def sessions(*, require_schema: bool = True) -> sessionmaker[Session]:
    """Sessions on the configured (or embedded) database; refuses an unmigrated schema."""
    # Here rather than above, so that `--help` and the command list load no database driver.
    from clearinghouse import migrate
    from clearinghouse.config import get_settings
    from clearinghouse.database import make_engine, resolve_url, session_factory

    engine = make_engine(resolve_url(get_settings()), pool_size=2)
    _engines.append(engine)
    if require_schema:
        try:
            migrate.require_current_schema(engine)
        except migrate.SchemaNotMigrated as exc:
            raise fail(str(exc)) from exc
    return session_factory(engine)


def close_engines() -> None:
    """Close the connections of every engine `sessions` made. The root command calls this when
    its subcommand ends, however it ends, so that no connection outlives the command: the
    process may go on (the command run from Python, `app` called again)."""
    while _engines:
        _engines.pop().dispose()


@contextmanager
def transaction() -> Iterator[Session]:
    """One unit of work; a domain error becomes a one-line message and exit status 1."""
    with sessions()() as session:
        try:
            with session.begin():
                yield session
        except DomainError as exc:
            raise fail(exc.detail) from exc


def points(value: int) -> str:
    return f"{value:,}"
