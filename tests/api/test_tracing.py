"""Optional tracing: off unless the standard OTEL_* variables switch it on; on, a signed request
gives a server span for its route and a span for each statement it sends to PostgreSQL, the
request path's own (straight through psycopg) included. Spans go to the SDK's in-memory
exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearinghouse import tracing
from clearinghouse.app import create_app
from clearinghouse.database import make_engine, session_factory
from tests.builders.http import client_for, own_client
from tests.builders.partners import ApiPartner


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_standard_variables_switch_tracing_on(
    environ: dict[str, str], names: list[str]
) -> None:
    assert tracing.exporters(environ) == names


def test_an_unknown_exporter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown exporter zipkin"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_a_signed_request_is_traced_with_its_statements(
    database_url: str, partner: ApiPartner
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = make_engine(database_url, pool_size=2)
    try:
        app = create_app(session_factory(engine))
        tracing.instrument_app(app, provider)
        tracing.instrument_engine(engine, provider)
        # Not entered as a context manager: the lifespan's jobs stay off, every statement is
        # the request's.
        http = own_client(app)
        client_for(partner, http).get("/v1/partner")
        http.close()
    finally:
        engine.dispose()
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind.name == "SERVER"]
    assert server.name == "GET /v1/partner"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/partner"
    statements = [s for s in spans if s.kind.name == "CLIENT"]
    assert statements, [s.name for s in spans]
    # The request path's statements are children of the request's span.
    trace = server.context.trace_id
    assert [s.name for s in statements if s.context.trace_id != trace] == []


def test_tracing_is_off_without_the_variables() -> None:
    assert tracing.configured() is None
