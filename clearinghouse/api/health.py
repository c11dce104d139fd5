"""Liveness and readiness probes (unsigned)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clearinghouse import migrate
from clearinghouse.api.problems import http_problem
from clearinghouse.api.schemas import ResponseModel

router = APIRouter(tags=["health"])


class Health(ResponseModel):
    status: Literal["ok", "ready"]


@router.get("/healthz", summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database answers and its schema is current",
    response_model=Health,
    responses={503: {"description": "Not ready", "content": {"application/problem+json": {}}}},
)
def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.sessions.kw["bind"]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        migrate.require_current_schema(engine)
    except Exception as exc:  # any failure means "not ready"; the detail says why
        return http_problem(503, f"not ready: {exc.__class__.__name__}", "/readyz")
    return JSONResponse({"status": "ready"})
