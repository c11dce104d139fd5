"""RFC 9457 problem+json: one shape for every error the API returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clearinghouse.api import request_ids
from clearinghouse.errors import PROBLEM_BASE, DomainError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Problems raised by the HTTP layer itself, beside the domain errors (clearinghouse.errors).
HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    408: ("request_timeout", "Request timeout"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Invalid request"),
    431: ("request_header_fields_too_large", "Request header fields too large"),
    500: ("internal_error", "Internal error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """A problem's JSON object (the body of `problem`; a batch line's result), with the id of
    the request it answers."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    request_id = request_ids.current_id()
    if request_id is not None:
        body["request_id"] = request_id
    body.update(extensions)
    return body


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, instance=instance, errors=errors, **extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def domain_problem_body(exc: DomainError, instance: str | None = None) -> dict[str, Any]:
    """A domain error's problem object."""
    return problem_body(
        exc.status, exc.code, exc.title, exc.detail, instance=instance, **exc.extensions
    )


def from_domain_error(exc: DomainError, instance: str | None = None) -> JSONResponse:
    response = JSONResponse(
        domain_problem_body(exc, instance), status_code=exc.status, media_type=PROBLEM_JSON
    )
    response.headers.update(exc.headers)
    return response


def http_problem(
    status: int,
    detail: str,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    code, title = HTTP_PROBLEMS.get(status, ("http_error", "HTTP error"))
    response = problem(status, code, title, detail, instance=instance)
    if headers:
        response.headers.update(headers)
    return response


def install(app: FastAPI) -> None:
    """Render every error as problem+json; never leak a stack trace."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return from_domain_error(exc, request.url.path)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return problem(
            422,
            "validation_error",
            "Invalid request",
            "the request does not match the schema; see errors",
            instance=request.url.path,
            errors=errors,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        # Headers such as Allow (405) belong to the answer.
        return http_problem(exc.status_code, str(exc.detail), request.url.path, exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # The server closes the connection after an error it did not expect: saying so lets
        # the client open another for its next request instead of losing that one. This
        # handler answers outside the middleware that adds the request's id to the others.
        headers = {"Connection": "close"}
        request_id = request_ids.current_id()
        if request_id is not None:
            headers[request_ids.HEADER] = request_id
        return http_problem(500, "an internal error occurred; it has been logged", headers=headers)

    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
