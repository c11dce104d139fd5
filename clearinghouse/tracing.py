"""Optional OpenTelemetry tracing of the web app's requests and of every statement sent to
PostgreSQL (through SQLAlchemy or straight through psycopg, as the request path does).

Off by default, it is switched on by the standard environment variables alone:
`OTEL_TRACES_EXPORTER` names the exporters (`otlp`, which posts to `OTEL_EXPORTER_OTLP_ENDPOINT`
over HTTP, and/or `console`); unset or `none`, or `OTEL_SDK_DISABLED=true`, leaves tracing off
and imports none of it. The SDK reads the rest (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
the exporter's endpoint and headers, the sampler)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from sqlalchemy import Engine, event

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

EXPORTERS = ("otlp", "console")


def exporters(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the environment asks for; none when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [n for n in named if n and n != "none"]
    unknown = sorted(set(named) - set(EXPORTERS))
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}; "
            f"known: {', '.join(EXPORTERS)}, none"
        )
    return named


@cache
def configured() -> TracerProvider | None:
    """This process's tracer provider, exporting where the environment says; None when
    tracing is off."""
    names = exporters()
    if not names:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider()
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """A span for every request the app serves, named by its route."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)


def instrument_engine(engine: Engine, provider: TracerProvider) -> None:
    """A span for every statement sent on the engine's connections opened from now on, through
    SQLAlchemy or straight through psycopg."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    def traced(connection: Any, _record: Any) -> None:
        PsycopgInstrumentor.instrument_connection(connection, tracer_provider=provider)

    event.listen(engine, "connect", traced)
