"""The application: the signed partner API, the finance, audit and operator routes, and the
finance console."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from clearinghouse import migrate
from clearinghouse.api import health, idempotency, openapi, problems
from clearinghouse.api.gate import PartnerGate
from clearinghouse.audit import endpoints as audit_endpoints
from clearinghouse.audit.sealing import seal_all
from clearinghouse.config import get_settings
from clearinghouse.console import auth as console_auth
from clearinghouse.console import pages as console_pages
from clearinghouse.database import make_engine, resolve_url, session_factory
from clearinghouse.fraud import endpoints as fraud_endpoints
from clearinghouse.members import endpoints as member_endpoints
from clearinghouse.points import endpoints as points_endpoints
from partners import auth as partner_auth
from partners import endpoints as partner_endpoints
from settlement import endpoints as settlement_endpoints
from settlement.netting import settle_due

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 60.0
SEAL_EVERY_SECONDS = 5.0
SETTLE_EVERY_SECONDS = 300.0


def purge_expired(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Forget nonces and idempotency records past their retention; return how many of each."""
    with sessions() as session, session.begin():
        return partner_auth.purge_nonces(session), idempotency.purge(session)


async def _every(seconds: float, job: Callable[[], object], name: str) -> None:
    """Run a job in a worker thread at start and then every so often, off the request path;
    log and go on when it fails. At start, so that a server started in the morning shows
    yesterday's settlement at once."""
    while True:
        try:
            result = await run_in_threadpool(job)
            log.info(name, extra={"result": repr(result)})
        except Exception:
            log.exception("%s failed; will retry", name)
        await asyncio.sleep(seconds)


def create_app(sessions: sessionmaker[Session] | None = None) -> FastAPI:
    """The API on `sessions`, or on the configured (else embedded) database, which must be
    migrated: the app refuses to start otherwise."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if sessions is None:
            engine = make_engine(resolve_url(get_settings()))
            migrate.require_current_schema(engine)
            app.state.sessions = session_factory(engine)
        jobs = [
            asyncio.create_task(
                _every(PURGE_EVERY_SECONDS, partial(purge_expired, app.state.sessions), "purge")
            ),
            asyncio.create_task(
                _every(SEAL_EVERY_SECONDS, partial(seal_all, app.state.sessions), "seal")
            ),
            asyncio.create_task(
                _every(SETTLE_EVERY_SECONDS, partial(settle_due, app.state.sessions), "settle")
            ),
        ]
        yield
        for job in jobs:
            job.cancel()

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
    app.include_router(audit_endpoints.router)
    app.include_router(fraud_endpoints.operator)
    app.include_router(fraud_endpoints.partner)
    # The stylesheet's mount comes before the console's routes, whose last one answers every
    # other /console path with a page saying it does not exist.
    app.mount(
        f"{console_auth.PREFIX}/static",
        StaticFiles(directory=console_pages.STATIC),
        name="console-static",
    )
    app.include_router(console_auth.router)
    app.include_router(console_pages.router)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app
