"""Batch tests run the worker, which applies every open batch of its database: each test has a
database of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.builders.databases import World, own_world
from tests.conftest import Databases


@pytest.fixture
def world(databases: Databases) -> Iterator[World]:
    with own_world(databases, "ch_batch") as own:
        yield own
