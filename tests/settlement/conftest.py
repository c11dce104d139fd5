"""Each settlement test runs on a throwaway migrated database of its own: settlement settles
every unsettled entry of the database up to a cut-off, so no two tests may share one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.builders.databases import World, own_world
from tests.conftest import Databases


@pytest.fixture
def world(databases: Databases) -> Iterator[World]:
    with own_world(databases) as own:
        yield own
