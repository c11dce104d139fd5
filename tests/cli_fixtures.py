"""The `clearinghouse` command, run in this process through Typer's CliRunner: what a child
process gave for free, each run gets here. Its environment is this process's plus the run's own
(a None unsets a variable), the settings are read afresh from it, it may start in a folder of
its own, its standard streams are its own, and its log lines go to its own standard error. Its
engines are disposed of by the command itself when it ends (clearinghouse.cli_support).

A test that needs a child process (which modules a command imports, `python -m clearinghouse`,
the server, the embedded database stopping with the process) starts one itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clearinghouse.cli import app
from clearinghouse.config import get_settings

Environment = Mapping[str, str | None]


@contextlib.contextmanager
def _root_logger_of_its_own() -> Iterator[None]:
    """The root logger with no handler, as a fresh process has it, so that the command's
    `logging.basicConfig` writes to the command's standard error; as it was, afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_cli(
    *args: str, env: Environment, input: str | None = None, cwd: Path | None = None
) -> Result:
    """`clearinghouse ARGS` with this process's environment plus `env`, `input` on its standard
    input, in `cwd` (where a `.env` would be read) if given. An exception the command does not
    handle is raised here, where a child process would have printed its traceback."""
    get_settings.cache_clear()
    try:
        with contextlib.chdir(cwd or Path.cwd()), _root_logger_of_its_own():
            return CliRunner().invoke(
                app,
                list(args),
                input=input,
                env=env,
                catch_exceptions=False,
                prog_name="clearinghouse",
            )
    finally:
        # Nothing of the run's environment stays in the settings this process goes on with.
        get_settings.cache_clear()


class Cli:
    """The command on one database, as an operator runs it."""

    def __init__(self, database_url: str) -> None:
        self.env: dict[str, str | None] = {"DATABASE_URL": database_url}

    def run(self, *args: str, input: str | None = None, cwd: Path | None = None) -> Result:
        return run_cli(*args, env=self.env, input=input, cwd=cwd)

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        """Its standard output; it must succeed."""
        result = self.run(*args, cwd=cwd)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    def refused(self, *args: str) -> str:
        """Its standard error; it must exit with status 1."""
        result = self.run(*args)
        assert result.exit_code == 1, result.stdout + result.stderr
        return result.stderr


@pytest.fixture
def cli(database_url: str) -> Cli:
    """The command on this worker's database."""
    return Cli(database_url)
