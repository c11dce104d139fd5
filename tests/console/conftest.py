"""Console tests run on a throwaway database each (settlement settles the whole database),
with the app on it and as many browsers as a test opens."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.builders.console import Console
from tests.builders.databases import World, own_world
from tests.conftest import Databases


@pytest.fixture
def world(databases: Databases) -> Iterator[World]:
    with own_world(databases) as own:
        yield own


@pytest.fixture
def browser(world: World) -> Iterator[Callable[..., Console]]:
    """Opens a new browser (cookie jar) on the world's app; all closed afterwards."""
    opened: list[Console] = []

    def open_browser(base_url: str = "http://testserver") -> Console:
        console = Console(world.http.app, base_url)  # type: ignore[arg-type]
        opened.append(console)
        return console

    yield open_browser
    for console in opened:
        console.close()
