"""Fixtures shared by the packages that exercise the signed API: the app on the package's
`sessions`, a TestClient as the partner's transport, and two partners with clients built by
the package's own `new_partner` fixture. A conftest imports them by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.app import create_app
from partners.client import PartnerClient
from tests.builders.http import client_for, own_client
from tests.builders.partners import ApiPartner

NewPartner = Callable[[sessionmaker[Session]], ApiPartner]


@pytest.fixture
def app(sessions: sessionmaker[Session]) -> FastAPI:
    return create_app(sessions)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    # Not entered as a context manager: the lifespan (and its background jobs) stays off.
    client = own_client(app)
    yield client
    client.close()


@pytest.fixture
def partner(sessions: sessionmaker[Session], new_partner: NewPartner) -> ApiPartner:
    return new_partner(sessions)


@pytest.fixture
def other_partner(sessions: sessionmaker[Session], new_partner: NewPartner) -> ApiPartner:
    return new_partner(sessions)


@pytest.fixture
def client(partner: ApiPartner, http: TestClient) -> PartnerClient:
    return client_for(partner, http)


@pytest.fixture
def other_client(other_partner: ApiPartner, http: TestClient) -> PartnerClient:
    return client_for(other_partner, http)
