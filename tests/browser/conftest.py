"""Browser tests: Debian's Chromium, driven by Playwright, against the real server (uvicorn on
a free port of 127.0.0.1) on a throwaway database. The browser is never downloaded: it is the
system's, at CHROMIUM_PATH (default /usr/bin/chromium), which `.ci/run` and `make test` install
with apt; without it these tests fail, they are not skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from clearinghouse.demo import serving
from tests.builders.databases import World, own_world
from tests.conftest import Databases

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Headless, sandboxed by the container rather than by Chromium, and quiet: no calls home.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium) "
            "or set CHROMIUM_PATH"
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def world(databases: Databases) -> Iterator[World]:
    with own_world(databases) as own:
        yield own


@pytest.fixture
def server(world: World) -> Iterator[str]:
    """The application served over HTTP on 127.0.0.1, on the world's database."""
    with serving(world.sessions) as url:
        yield url


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> list[Path]:
    """Folders a test's screenshots go to: its own temporary one, and --screenshots if given."""
    kept: Path | None = request.config.getoption("--screenshots")
    return [tmp_path] if kept is None else [tmp_path, kept]
