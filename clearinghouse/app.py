"""The application, composed on the top floor: the signed partner API, the finance, audit and
operator routes, the finance console, and the periodic jobs when asked. Nothing below imports
it (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import metrics, migrate, tracing
from clearinghouse.api import health, openapi, problems, schemas
from clearinghouse.api.guard import Guard
from clearinghouse.api.metrics import WatchedPool, watch_pool
from clearinghouse.api.request_ids import RequestIds
from clearinghouse.api.request_metrics import RequestMetrics
from clearinghouse.api.throttle import Throttle
from clearinghouse.audit import endpoints as audit_endpoints
from clearinghouse.batches import endpoints as batch_endpoints
from clearinghouse.config import get_settings
from clearinghouse.console import auth as console_auth
from clearinghouse.console import documents as console_documents
from clearinghouse.console import pages as console_pages
from clearinghouse.database import configured_replica, make_engine, resolve_url, session_factory
from clearinghouse.fraud import endpoints as fraud_endpoints
from clearinghouse.jobs import JOBS, Scheduler
from clearinghouse.members import endpoints as member_endpoints
from clearinghouse.points import endpoints as points_endpoints
from clearinghouse.points import review
from clearinghouse.rewards import campaign_endpoints
from clearinghouse.rewards import endpoints as reward_endpoints
from clearinghouse.webhooks import endpoints as webhook_endpoints
from partners import endpoints as partner_endpoints
from partners import key_endpoints as partner_key_endpoints
from partners.gate import Limits, PartnerGate
from settlement import endpoints as settlement_endpoints

# The jobs' own connections, one for each job (they run side by side); the leader's lock is
# held on another, outside any pool.
JOB_CONNECTIONS = len(JOBS)


def create_app(
    sessions: sessionmaker[Session] | None = None,
    *,
    limits: Limits | None = None,
    jobs: bool | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The API on `sessions`, or on the configured (else embedded) database, which must be
    migrated: the app refuses to start otherwise. With `jobs` (by default the setting
    CLEARINGHOUSE_JOBS), the process takes part in running the periodic jobs
    (clearinghouse.jobs); a test client that does not enter the app's lifespan runs none.
    `clock` is the rate limits' (seconds since the epoch)."""
    limits = limits or Limits()
    run_jobs = get_settings().jobs if jobs is None else jobs
    traces = tracing.configured()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        job_sessions = sessions
        if sessions is None:
            url = resolve_url(get_settings())
            engine = make_engine(
                url, pool_size=limits.connections, max_overflow=2, poolclass=WatchedPool
            )
            watch_pool(engine)
            if traces is not None:
                tracing.instrument_engine(engine, traces)
            migrate.require_current_schema(engine)
            app.state.sessions = session_factory(engine)
            app.state.replica = configured_replica(get_settings(), pool_size=limits.connections)
            if run_jobs:
                job_engine = make_engine(
                    url, pool_size=JOB_CONNECTIONS, max_overflow=0, name="clearinghouse jobs"
                )
                if traces is not None:
                    tracing.instrument_engine(job_engine, traces)
                job_sessions = session_factory(job_engine)
        scheduler = None
        if run_jobs:
            assert job_sessions is not None
            scheduler = asyncio.create_task(Scheduler(job_sessions).run())
        yield
        if scheduler is not None:
            scheduler.cancel()

    app = FastAPI(
        title="Coalition points clearing house",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(schemas.refuse_nul)],
    )
    if sessions is not None:
        app.state.sessions = sessions
    problems.install(app)
    app.state.throttle = throttle = Throttle(limits.rates, clock)
    app.add_middleware(PartnerGate, throttle=throttle, limits=limits)
    # Each added outside the ones before: the guard refuses what no route may read, the request
    # ids mark its refusals too, and the metrics count and time every answer, refusals
    # included.
    app.add_middleware(Guard)
    app.add_middleware(RequestIds)
    app.add_middleware(RequestMetrics)
    if traces is not None:
        tracing.instrument_app(app, traces)
    # Routes are matched in order: the partners' busiest first.
    app.include_router(points_endpoints.router)
    app.include_router(reward_endpoints.supplier)
    app.include_router(reward_endpoints.router)
    app.include_router(reward_endpoints.orders_router)
    app.include_router(campaign_endpoints.router)
    app.include_router(batch_endpoints.router)
    app.include_router(member_endpoints.router)
    app.include_router(partner_endpoints.router)
    app.include_router(partner_key_endpoints.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(settlement_endpoints.partner)
    app.include_router(fraud_endpoints.partner)
    app.include_router(health.router)
    app.include_router(settlement_endpoints.finance)
    app.include_router(console_documents.finance)
    app.include_router(audit_endpoints.router)
    app.include_router(fraud_endpoints.operator)
    app.include_router(review.operator)
    app.include_router(metrics.router)
    # The stylesheet's mount comes before the console's routes, whose last one answers every
    # other /console path with a page saying it does not exist.
    app.mount(
        f"{console_auth.PREFIX}/static",
        StaticFiles(directory=console_pages.STATIC),
        name="console-static",
    )
    app.include_router(console_auth.router)
    app.include_router(console_pages.router)

    app.webhooks.include_router(points_endpoints.webhooks)
    app.webhooks.include_router(fraud_endpoints.webhooks)
    app.webhooks.include_router(settlement_endpoints.webhooks)
    app.webhooks.include_router(webhook_endpoints.webhooks)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app
