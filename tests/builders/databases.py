"""Throwaway migrated databases of a test's own, for what is global to a database (settlement
settles every unsettled entry, sealing and verification cover the whole journal, expiry and
the fraud rules' history reach across members) or for a test whose failure could leave the
books broken for every later one:

- World: the database, its sessions and the app on it, with partners, partner clients and
  finance users made on it; dropped afterwards (settlement, console, browser, jobs).
- Isolated: a World's database with a partner, its client and an operator (points, fraud).
- Books: the database, its engine and sessions, without the app (audit)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.app import create_app
from clearinghouse.database import libpq_url, make_engine, session_factory
from partners.client import PartnerClient
from tests.builders.http import client_for, own_client
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.users import Staff, staff
from tests.conftest import Databases


@dataclass(frozen=True)
class World:
    """A throwaway migrated database with the API on it."""

    url: str
    sessions: sessionmaker[Session]
    http: TestClient

    def merchant(
        self, *, issue_price: str = "1", redemption_value: str = "1", earn_rate: str = "1"
    ) -> ApiPartner:
        """An online merchant with a store, a key, rates (version 1, in effect for 60 days) and
        a generous issuance limit."""
        return make_partner(
            self.sessions,
            earn_rate=earn_rate,
            issue_price=issue_price,
            redemption_value=redemption_value,
        )

    def client(self, partner: ApiPartner) -> PartnerClient:
        return client_for(partner, self.http)

    def finance(self, role: str = "finance") -> tuple[str, dict[str, str]]:
        """A new user of the role: its id and the headers that carry its token."""
        user = staff(self.sessions, role)
        return user.id, user.headers


def _drop(databases: Databases, url: str) -> None:
    name = make_url(url).database
    assert name is not None
    with psycopg.connect(libpq_url(databases.server_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    databases.created.remove(name)


@contextmanager
def own_world(databases: Databases, prefix: str = "ch_settle") -> Iterator[World]:
    """A fresh migrated database, its sessions and the app on it; dropped afterwards."""
    url = databases.create(prefix)
    engine = make_engine(url, pool_size=5)
    sessions = session_factory(engine)
    http = own_client(create_app(sessions))
    try:
        yield World(url, sessions, http)
    finally:
        http.close()
        engine.dispose()
        _drop(databases, url)


@dataclass(frozen=True)
class Isolated:
    """A database of one test's own: its sessions, the signed API on it, a partner (make_partner's
    defaults) with its client, and an operator."""

    sessions: sessionmaker[Session]
    http: TestClient
    partner: ApiPartner
    client: PartnerClient
    operator: Staff


@contextmanager
def own_isolated(databases: Databases, prefix: str) -> Iterator[Isolated]:
    with own_world(databases, prefix) as world:
        partner = make_partner(world.sessions)
        yield Isolated(
            world.sessions,
            world.http,
            partner,
            world.client(partner),
            staff(world.sessions, "operator"),
        )


@dataclass(frozen=True)
class Books:
    """A throwaway migrated database of one test (or module) alone, without the app."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


@contextmanager
def own_books(databases: Databases) -> Iterator[Books]:
    engine = make_engine(databases.create("ch_audit"), pool_size=5)
    try:
        yield Books(
            engine.url.render_as_string(hide_password=False), engine, session_factory(engine)
        )
    finally:
        engine.dispose()
