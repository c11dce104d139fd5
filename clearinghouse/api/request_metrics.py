"""The HTTP requests' series: every request timed from its arrival to the end of its answer, by
route template, method and status class, and the answers replayed for an idempotency key (the
series themselves are clearinghouse.api.metrics', which the command line loads without the web
app)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearinghouse.api.metrics import http_requests, idempotent_replays
from clearinghouse.api.request_ids import RouteTemplate, route_of, templates_of


def _status_class(status: int) -> str:
    return f"{str(status)[0]}xx"


class RequestMetrics:
    """Times every HTTP request from its arrival to the end of its answer, and counts the
    answers replayed for an idempotency key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Read at the first request, when the app has all its routes.
        self.templates: tuple[RouteTemplate, ...] | None = None

    def _route_of(self, scope: Scope) -> str:
        """The template of the route the request is for (the gate, outside the router, may
        have answered before any route was chosen)."""
        if self.templates is None:
            self.templates = templates_of(scope["app"])
        return route_of(scope, self.templates) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if (b"idempotent-replayed", b"true") in message.get("headers", ()):
                    idempotent_replays.inc()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            http_requests.labels(
                self._route_of(scope), scope["method"], _status_class(status)
            ).observe(time.perf_counter() - started)
