"""The `clearinghouse` command. Most tests run it in this process (tests/cli_fixtures.py); those
about the process itself run it as a user would, in a child process: which modules a command
imports, and the demo, which serves the API and starts the embedded database with the process
and stops it with the process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from clearinghouse.cli import SUBCOMMANDS, app
from clearinghouse.database import libpq_url
from tests.cli_fixtures import Cli, run_cli
from tests.conftest import Databases


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`clearinghouse ARGS` in a child process, with this process's environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "clearinghouse", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# What only the server, the console, the demo or sign-in need: a simple command loads none of it.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "fpdf",
    "argon2",
    "babel",
    "jinja2",
    "clearinghouse.app",
    "clearinghouse.console.pages",
    "clearinghouse.demo",
)


def imported(*args: str, env: dict[str, str]) -> set[str]:
    """The modules `clearinghouse ARGS` imports, as `python -X importtime` lists them."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "clearinghouse", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_partner_list_imports_neither_the_web_app_nor_the_console_nor_pdf(
    database_url: str,
) -> None:
    loaded = imported("partner", "list", env={"DATABASE_URL": database_url})
    assert "partners.directory" in loaded
    assert sorted(loaded.intersection(HEAVY)) == []


def test_help_lists_every_command_without_loading_any_of_them() -> None:
    loaded = imported("--help", env={})
    assert "clearinghouse.cli" in loaded
    unwanted = {*HEAVY, "sqlalchemy", "psycopg", "alembic", "partners.cli", "settlement.cli"}
    assert sorted(loaded & unwanted) == []


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_listed_subcommand_loads_with_its_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f" {name} [OPTIONS]" in result.output
    assert SUBCOMMANDS[name][1].split()[0] in result.output


def test_demo_on_embedded_database_earns_spends_and_replays(home: Path) -> None:
    # An empty DATABASE_URL means "not configured": the embedded server in CLEARINGHOUSE_HOME.
    env = {"DATABASE_URL": "", "CLEARINGHOUSE_HOME": str(home)}
    first = run("demo", env=env)
    assert first.returncode == 0, first.stderr
    # 520 yuan reach the 2 % bracket: 1,040 points, plus the first-purchase bonus.
    assert "earned 1,540 points" in first.stdout
    assert "redeemed 1,000 points as 10.00 yuan" in first.stdout
    assert "ordered bookchain's book token from the catalogue for 200 points, code BOOK-" in (
        first.stdout
    )
    assert "Alice: 340 points available" in first.stdout
    assert "PTS           3          1,540          1,540        0" in first.stdout
    assert "every balance equals the sum of its postings" in first.stdout
    # The day is settled: the tea house pays 15.40 yuan, the book chain receives 10.00 for the
    # redemption and 1.50 for the book token.
    assert "teahouse                15.40" in first.stdout
    assert "-11.50" in first.stdout
    assert "coalition's revenue cancel to the fen" in first.stdout
    reports = list((home / "reports").glob("settlement-*.csv"))
    assert len(reports) == 1
    assert "COALITION_REVENUE" in reports[0].read_text()
    # The tea house's receiver got the reminder of Alice's points left, signed.
    reminded = re.search(
        r"webhook receiver got points.expiring (msg_\w+): 340 points of alice expire "
        r"\S+; signature verified",
        first.stdout,
    )
    assert reminded is not None, first.stdout
    # The day is sealed, and its digest verifies.
    digest = first.stdout.split("its digest is ")[1].split()[0]
    verified = run("audit", "verify", "--digest", digest, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The server stopped with the process; the next run starts it on the same data, and the
    # same day's requests are answered again without posting anything twice.
    second = run("demo", env=env)
    assert second.returncode == 0, second.stderr
    assert "Alice: 340 points available" in second.stdout
    assert "PTS           3          1,540          1,540        0" in second.stdout
    # The reminder was written once: the second run has it sent again, with the same id.
    assert f"points.expiring {reminded[1]} (sent again)" in second.stdout
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_demo_runs_on_any_databases_in_any_order(databases: Databases, tmp_path: Path) -> None:
    # The demo keeps its partners' private keys in the home, which outlives any one database.
    first, second = databases.create(), databases.create()
    home, other_home = tmp_path / "home", tmp_path / "other-home"
    # A day's demo is keyed by its UTC date: a run that crosses midnight starts the next day's.
    shown: dict[tuple[str, date], str] = {}
    for url, data in ((first, home), (second, home), (first, other_home), (first, home)):
        day = datetime.now(UTC).date()
        fresh = all(seen != url for seen, _ in shown)
        result = run("demo", env={"DATABASE_URL": url, "CLEARINGHOUSE_HOME": str(data)})
        assert result.returncode == 0, result.stderr
        found = re.search(r"Alice: ([\d,]+) points available", result.stdout)
        assert found is not None, result.stdout
        if datetime.now(UTC).date() != day:
            continue
        if fresh:
            assert found[1] == "340"
        # Running it again the same day, from any home, changes nothing.
        assert shown.setdefault((url, day), found[1]) == found[1]


def test_commands_refuse_an_unmigrated_database(databases: Databases) -> None:
    url = databases.create(migrated=False)
    result = run_cli("ledger", "trial-balance", env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "has no schema" in result.stderr
    assert "clearinghouse db upgrade" in result.stderr

    upgraded = run_cli("db", "upgrade", env={"DATABASE_URL": url})
    assert upgraded.exit_code == 0, upgraded.stderr
    result = run_cli("ledger", "check", env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.stderr
    assert "ledger consistent" in result.stdout

    # Each command closed its connections as it ended, the failed one too: the database drops
    # without FORCE (which waits a few seconds for sessions still open, then refuses).
    name = make_url(url).database
    assert name is not None
    with psycopg.connect(libpq_url(databases.server_url), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        except errors.ObjectInUse as exc:
            pytest.fail(f"a command left a connection open: {exc}")


def test_balance_of_unknown_account_is_a_clear_error(cli: Cli) -> None:
    result = cli.run("ledger", "balance", "member:nobody:available")
    assert result.exit_code == 1
    assert "unknown account: member:nobody:available" in result.stderr
