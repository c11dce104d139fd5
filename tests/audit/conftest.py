"""Fixtures for the audit tests: a throwaway migrated database per test (sealing and verification
cover the whole database), and sealing without its two-second delay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from clearinghouse.audit import sealing
from tests.builders.databases import Books, own_books
from tests.conftest import Databases


@pytest.fixture
def books(databases: Databases) -> Iterator[Books]:
    with own_books(databases) as own:
        yield own


@pytest.fixture
def no_seal_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seal entries as soon as they are committed (in this process, the `clearinghouse` command
    run by tests/cli_fixtures.py too; a child process keeps the real delay)."""
    monkeypatch.setattr(sealing, "SEAL_DELAY", timedelta(0))
