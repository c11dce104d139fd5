"""Fixtures for the signed partner API: the app on this worker's database, a TestClient as the
partner's HTTP transport, and partners with freshly generated keys."""

from __future__ import annotations

import pytest

from tests.api.builders import create_partner
from tests.api_fixtures import NewPartner


@pytest.fixture
def new_partner() -> NewPartner:
    return create_partner
