"""Fixtures for the rewards catalogue: the signed API on this worker's database, or on one of a
test's own, and partners with rates and a generous issuance limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_fixtures import NewPartner
from tests.builders.databases import World, own_world
from tests.builders.partners import make_partner
from tests.conftest import Databases


@pytest.fixture
def new_partner() -> NewPartner:
    return make_partner


@pytest.fixture
def world(databases: Databases) -> Iterator[World]:
    """A database of its own: for the orders' expiry job and a day's settlement, which reach
    every order and entry of their database."""
    with own_world(databases, "ch_rewards") as own:
        yield own
