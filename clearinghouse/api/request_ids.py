"""Every request's id, and its one line in the access log.

The id is the Request-Id header's when the request comes from a trusted proxy
(CLEARINGHOUSE_TRUSTED_PROXIES) and the header is a plausible id; otherwise the server makes
one. It is returned in the Request-Id header of every answer, put in every problem+json
(clearinghouse.api.problems) and bound to every log record written while the request is served.
When the answer is sent, the `clearinghouse.access` logger writes the request's line: its id,
method, route (the path's template), status and latency, and for a signed request what the
partner gate noted (partners.gate): the partner, the key, the idempotency key's SHA-256 and
whether the answer was a replay.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address

from fastapi.routing import iter_route_contexts
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearinghouse import logs
from clearinghouse.config import get_settings

HEADER = "request-id"
MAX_LENGTH = 128

access = logging.getLogger("clearinghouse.access")


@dataclass
class RequestLog:
    """What a request's access line says beyond its method, route, status and latency."""

    id: str
    partner_id: str | None = None
    key_id: str | None = None
    idempotency_key_sha256: str | None = None
    replayed: bool = False

    def signed(self, partner_id: str, key_id: str, idempotency_key: str | None) -> None:
        """Note the partner and key that signed the request, and its idempotency key (hashed:
        the key itself stays out of the logs)."""
        self.partner_id, self.key_id = partner_id, key_id
        if idempotency_key is not None:
            self.idempotency_key_sha256 = hashlib.sha256(idempotency_key.encode()).hexdigest()


_current: ContextVar[RequestLog | None] = ContextVar("request_log", default=None)


def current() -> RequestLog | None:
    """The request being served, or None outside one."""
    return _current.get()


def current_id() -> str | None:
    request = _current.get()
    return None if request is None else request.id


def plausible(value: str) -> bool:
    """Whether a proxy's id may be kept: 1 to MAX_LENGTH visible ASCII characters."""
    return 0 < len(value) <= MAX_LENGTH and all("!" <= c <= "~" for c in value)


Network = IPv4Network | IPv6Network


def trusted(scope: Scope, proxies: Sequence[Network]) -> bool:
    client = scope.get("client")
    if not proxies or not client:
        return False
    try:
        peer = ip_address(client[0])
    except ValueError:
        return False
    return any(peer in network for network in proxies)


@dataclass(frozen=True)
class RouteTemplate:
    """A route's path template, and what the router matches it by."""

    path: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None


def templates_of(app: Starlette) -> tuple[RouteTemplate, ...]:
    """The app's routes in the order they are matched, those of included routers with their
    full paths."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        path, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
        if path is not None and pattern is not None:
            methods = getattr(route, "methods", None)
            found.append(RouteTemplate(path, pattern, frozenset(methods) if methods else None))
    return tuple(found)


def route_of(scope: Scope, templates: Sequence[RouteTemplate]) -> str | None:
    """The template of the route that answers the request (`/v1/members/{member_id}`), None
    when none does. As the router matches, by the path's pattern and then the method, but
    without converting the path's parameters: the access line is written on every request."""
    path, method = scope["path"], scope["method"]
    other_method = None
    for template in templates:
        if template.pattern.match(path):
            if template.methods is None or method in template.methods:
                return template.path
            other_method = other_method or template.path
    return other_method


class RequestIds:
    """Pure ASGI middleware, outside the guard and the partner gate, whose answers carry the
    request's id too."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network] | None = None) -> None:
        self.app = app
        self.proxies = tuple(
            get_settings().trusted_proxies if trusted_proxies is None else trusted_proxies
        )
        # Read at the first request, when the app has all its routes.
        self.templates: tuple[RouteTemplate, ...] | None = None

    def id_of(self, scope: Scope) -> str:
        if trusted(scope, self.proxies):
            for name, value in scope["headers"]:
                if name.lower() == b"request-id":
                    offered: str = value.decode("latin-1")
                    if plausible(offered):
                        return offered
                    break
        return secrets.token_hex(16)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = RequestLog(self.id_of(scope))
        # Left set when the request is done: the server error handler, which runs outside every
        # middleware, answers a 500 with them. Each request is served in a task of its own, so
        # they end with it.
        _current.set(request)
        logs.bind(request_id=request.id)
        header = (HEADER.encode(), request.id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access.isEnabledFor(logging.INFO):
                self._log(scope, request, status, time.perf_counter() - started)

    def _log(self, scope: Scope, request: RequestLog, status: int, seconds: float) -> None:
        if self.templates is None:
            self.templates = templates_of(scope["app"])
        route = route_of(scope, self.templates)
        access.info(
            "%s %s %s",
            scope["method"],
            route or scope["path"],
            status,
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "latency_ms": int(seconds * 1_000_000) / 1000,
                "partner_id": request.partner_id,
                "key_id": request.key_id,
                "idempotency_key_sha256": request.idempotency_key_sha256,
                "replayed": request.replayed,
            },
        )
