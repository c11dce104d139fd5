"""The `clearinghouse` command, run as a user would: in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Databases


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`clearinghouse ARGS` with this process's environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "clearinghouse", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_embedded_database_prints_zero_trial_balance_and_replays(tmp_path: Path) -> None:
    # An empty DATABASE_URL means "not configured": the embedded server in CLEARINGHOUSE_HOME.
    env = {"DATABASE_URL": "", "CLEARINGHOUSE_HOME": str(tmp_path)}
    first = run("demo", env=env)
    assert first.returncode == 0, first.stderr
    assert "posted 6 entries (0 already posted" in first.stdout
    assert "PTS           6          1,000          1,000        0" in first.stdout
    # The server stopped with the process; the next run starts it on the same data.
    second = run("demo", env=env)
    assert second.returncode == 0, second.stderr
    assert "posted 0 entries (6 already posted, replayed)" in second.stdout
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


def test_commands_refuse_an_unmigrated_database(databases: Databases) -> None:
    url = databases.create(migrated=False)
    result = run("ledger", "trial-balance", env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert "has no schema" in result.stderr
    assert "clearinghouse db upgrade" in result.stderr

    upgraded = run("db", "upgrade", env={"DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    result = run("ledger", "check", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "ledger consistent" in result.stdout


def test_balance_of_unknown_account_is_a_clear_error(database_url: str) -> None:
    result = run("ledger", "balance", "member:nobody:available", env={"DATABASE_URL": database_url})
    assert result.returncode == 1
    assert "unknown account: member:nobody:available" in result.stderr
