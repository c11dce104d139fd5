"""Webhook tests run the worker, which delivers every due delivery of its database: each test has
a database of its own, and settings that let webhooks go to a receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clearinghouse.config import get_settings
from tests.builders.databases import World, own_world
from tests.builders.webhooks import allow_local_receivers
from tests.conftest import Databases


@pytest.fixture
def world(databases: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    allow_local_receivers(monkeypatch)
    with own_world(databases, "ch_hooks") as own:
        yield own
    monkeypatch.undo()
    get_settings.cache_clear()
