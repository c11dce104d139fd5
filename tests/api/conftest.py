"""Fixtures for the signed partner API: the app on this worker's database, a TestClient as the
partner's HTTP transport, and partners with freshly generated keys."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest

from tests.api_fixtures import NewPartner
from tests.builders.partners import make_partner


@pytest.fixture
def new_partner() -> NewPartner:
    """Partners as the onboarding leaves them today: rates set now (issue price 0.8 fen a
    point, redemption value 0.7), no issuance limit."""
    return partial(
        make_partner,
        issue_price="0.8",
        redemption_value="0.7",
        rates_since=timedelta(0),
        limit_fen=0,
    )
