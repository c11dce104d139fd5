"""The partner API application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from clearinghouse import migrate
from clearinghouse.api import health, idempotency, openapi, problems
from clearinghouse.api.gate import PartnerGate
from clearinghouse.config import get_settings
from clearinghouse.database import make_engine, resolve_url, session_factory
from clearinghouse.members import endpoints as member_endpoints
from clearinghouse.points import endpoints as points_endpoints
from partners import auth as partner_auth
from partners import endpoints as partner_endpoints
from settlement import endpoints as settlement_endpoints

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 60.0


def purge_expired(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Forget nonces and idempotency records past their retention; return how many of each."""
    with sessions() as session, session.begin():
        return partner_auth.purge_nonces(session), idempotency.purge(session)


async def _purge_periodically(sessions: sessionmaker[Session]) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS)
        try:
            nonces, records = await run_in_threadpool(purge_expired, sessions)
            log.info("purged", extra={"nonces": nonces, "idempotency_records": records})
        except Exception:
            log.exception("purge failed; will retry")


def create_app(sessions: sessionmaker[Session] | None = None) -> FastAPI:
    """The API on `sessions`, or on the configured (else embedded) database, which must be
    migrated: the app refuses to start otherwise."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if sessions is None:
            engine = make_engine(resolve_url(get_settings()))
            migrate.require_current_schema(engine)
            app.state.sessions = session_factory(engine)
        purger = asyncio.create_task(_purge_periodically(app.state.sessions))
        yield
        purger.cancel()

    app = FastAPI(
        title="Coalition points clearing house",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    if sessions is not None:
        app.state.sessions = sessions
    problems.install(app)
    app.add_middleware(PartnerGate)
    app.include_router(health.router)
    app.include_router(partner_endpoints.router)
    app.include_router(member_endpoints.router)
    app.include_router(points_endpoints.router)
    app.include_router(settlement_endpoints.partner)
    app.include_router(settlement_endpoints.finance)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app
