"""Traces: OpenTelemetry spans of every request a service answers, so that one mesh request is
one trace: the mesh's server span, its client spans to the domains (W3C `traceparent`
injected), each domain's server span (its parent taken from that header) and the domain's SQL
statements under it (docs/observability.md, Traces).

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): then no tracer provider exists, nothing is instrumented
(not even imported), and the OpenTelemetry API stays the no-op it is by default. On, one
tracer provider per process (a process serves one service) exports in batches with OTLP over
HTTP/protobuf, configured by the standard `OTEL_*` variables; `service.name` is the service's
name unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names it. What spans never
carry is in shared.telemetry.spans."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncpg.connection import Connection
from fastapi import FastAPI

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set, and neither
    `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


@dataclass
class _Tracing:
    provider: TracerProvider
    apps: weakref.WeakSet[FastAPI] = field(default_factory=weakref.WeakSet)


_tracing: _Tracing | None = None
_lock = threading.Lock()
# the driver's methods traced here, as they were
_untraced: dict[str, Any] = {}


def start_tracing(service: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The process's tracer provider, created on the first call: exporting to `exporter`
    (tests: an in-memory exporter, each span exported as it ends) or, when the environment
    asks for traces, with OTLP in batches; None when traces are off. The database driver
    (asyncpg) and the HTTP client (httpx) are instrumented once, for the whole process."""
    global _tracing
    with _lock:
        if _tracing is not None:
            return _tracing.provider
        if exporter is None and not tracing_configured():
            return None
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.trace import TracerProvider

        from shared.telemetry.spans import RequestsOnly

        provider = TracerProvider(resource=_resource(service))
        provider.sampler = RequestsOnly(provider.sampler)
        provider.add_span_processor(_processor(exporter))
        # statement parameters are never captured (the default, said here so that it stays so)
        AsyncPGInstrumentor(capture_parameters=False).instrument(tracer_provider=provider)
        _trace_copies(provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        _tracing = _Tracing(provider)
        return provider


def install_tracing(app: FastAPI, service: str) -> bool:
    """Trace the app's requests if traces are on (start_tracing): a server span per request,
    named by the matched route's template, its parent the caller's `traceparent`; the
    service's probes (`healthz`, `readyz`) and `/metrics` are not traced. Idempotent: an app
    is instrumented once, the process-wide instrumentations once per process. Whether the app
    is traced."""
    provider = start_tracing(service)
    if provider is None:
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    with _lock:
        assert _tracing is not None
        if app in _tracing.apps:
            return True
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls=_excluded_urls(service),
            # no span per ASGI message: a streamed answer sends thousands
            exclude_spans=["receive", "send"],
        )
        _tracing.apps.add(app)
    return True


def stop_tracing() -> None:
    """Undo start_tracing (tests): the apps and the process-wide instrumentations no longer
    traced, the provider's pending spans exported and the provider shut down."""
    global _tracing
    with _lock:
        if _tracing is None:
            return
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        for app in list(_tracing.apps):
            FastAPIInstrumentor.uninstrument_app(app)
        AsyncPGInstrumentor().uninstrument()
        _untrace_copies()
        HTTPXClientInstrumentor().uninstrument()
        _tracing.provider.shutdown()
        _tracing = None


def _trace_copies(provider: TracerProvider) -> None:
    """A span per `copy_from_query` too, which the asyncpg instrumentation leaves out: the
    streamed reads in CSV, Arrow and Parquet (and so every read of the mesh) are COPY
    statements. Their text is the query as given, its values bound parameters ($1, ...), not
    the COPY statement asyncpg sends, which holds the values quoted."""
    from opentelemetry.instrumentation.asyncpg import (
        AsyncPGInstrumentor,
        _hydrate_span_from_args,
    )
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer(__name__)
    original = Connection.copy_from_query
    # the semantic conventions the asyncpg instrumentation chose (OTEL_SEMCONV_STABILITY_OPT_IN)
    conventions = AsyncPGInstrumentor()._semconv_opt_in_mode

    @functools.wraps(original)
    async def copy_from_query(self: Connection, query: str, *args: Any, **kwargs: Any) -> str:
        if not is_instrumentation_enabled():
            return await original(self, query, *args, **kwargs)
        attributes = _hydrate_span_from_args(self, query, None, conventions)
        with tracer.start_as_current_span("COPY", kind=SpanKind.CLIENT, attributes=attributes):
            return await original(self, query, *args, **kwargs)

    _untraced["copy_from_query"] = original
    Connection.copy_from_query = copy_from_query  # type: ignore[method-assign,assignment]


def _untrace_copies() -> None:
    original = _untraced.pop("copy_from_query", None)
    if original is not None:
        Connection.copy_from_query = original  # type: ignore[method-assign]


def _resource(service: str) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    return Resource.create({} if named else {SERVICE_NAME: service})


def _processor(exporter: SpanExporter | None) -> SpanProcessor:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from shared.telemetry.spans import ScrubbingExporter

    if exporter is not None:
        return SimpleSpanProcessor(ScrubbingExporter(exporter))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*; batches: OTEL_BSP_*
    return BatchSpanProcessor(ScrubbingExporter(OTLPSpanExporter()))


def _excluded_urls(service: str) -> str:
    """The FastAPI instrumentation's excluded URLs (comma-separated regular expressions,
    searched in the request's URL without its query): the probes and the scrape, and what
    OTEL_PYTHON_FASTAPI_EXCLUDED_URLS (or OTEL_PYTHON_EXCLUDED_URLS) adds."""
    ours = [rf"^[a-z]+://[^/]+/{service}/(healthz|readyz)$", r"^[a-z]+://[^/]+/metrics$"]
    extra = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS", ""
    )
    return ",".join([*ours, *(u.strip() for u in extra.split(",") if u.strip())])
