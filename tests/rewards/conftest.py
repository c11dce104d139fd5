"""Fixtures for the rewards catalogue: the signed API on this worker's database, and partners
with rates and a generous issuance limit."""

from __future__ import annotations

import pytest

from tests.api_fixtures import NewPartner
from tests.builders.partners import make_partner


@pytest.fixture
def new_partner() -> NewPartner:
    return make_partner
