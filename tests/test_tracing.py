"""Traces (docs/observability.md, Traces): one mesh request is one trace, from the mesh's server
span through its client spans to each domain's server span and down to the domain's SQL; no
span carries a value the caller sent; with OTEL_EXPORTER_OTLP_ENDPOINT set spans leave with
OTLP, and without it nothing is traced, instrumented or even imported."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services import domain
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.serving.app import create_domain_app
from shared.telemetry import tracing
from shared.telemetry.spans import RequestsOnly, scrubbed
from tests.conftest import ADMIN
from tests.servers import served

# what the request sends: the period (pushed to the domains as filters on order_date) and a
# filter on the metric; none of it may reach a span
SINCE, UNTIL, PROBE = "2024-08-04", "2024-09-03", "Zq7probe"
# the values the mesh itself sends the domains as filters (metrics.py)
MESH_FILTER_VALUES = ("Cancelled", "Converted")
_OTEL = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME")


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test's apps, every span exported to memory as it ends."""
    for name in _OTEL:
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    assert tracing.start_tracing("tests", exporter) is not None
    try:
        yield exporter
    finally:
        tracing.stop_tracing()


def _wait_for(exporter: InMemorySpanExporter, root_name: str) -> tuple[ReadableSpan, ...]:
    """The spans once the mesh's server span (which ends after the last byte) is exported."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = exporter.get_finished_spans()
        if any(s.name == root_name and s.kind is SpanKind.SERVER for s in spans):
            return spans
        time.sleep(0.05)
    raise AssertionError(f"no span {root_name!r} in {[s.name for s in spans]}")


def _url(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _values(spans: Sequence[ReadableSpan]) -> list[str]:
    """Everything a span says in text: names, attributes, events, statuses."""
    found = []
    for span in spans:
        found.append(span.name)
        found += [f"{k}={v!s}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            found += [f"{k}={v!s}" for k, v in (event.attributes or {}).items()]
        found.append(span.status.description or "")
    return found


def test_one_mesh_request_is_one_trace_down_to_the_sql(
    exported: InMemorySpanExporter, database_urls: dict[str, str]
) -> None:
    names = ("sales", "marketing")
    apps = {n: create_domain_app(domain(n), database_url=database_urls[n]) for n in names}
    with served(apps["sales"]) as sales_url, served(apps["marketing"]) as marketing_url:
        bases = {"sales": sales_url, "marketing": marketing_url}
        mesh = create_app(FederationSettings.model_validate({"domains": bases}))
        # idempotent: an app built (and so traced) once more is not traced twice, nor the
        # driver and the client (a second server span, or SQL span, would nest in the first)
        for name, app in (*apps.items(), ("mesh", mesh)):
            assert tracing.install_tracing(app, name)
        with served(mesh) as mesh_url:
            # the test's own client is not traced: the mesh's server span is the trace's root
            with suppress_http_instrumentation():
                response = httpx.get(
                    f"{mesh_url}/mesh/v1/campaign-roi",
                    params={"since": SINCE, "until": UNTIL, "channel": f"neq.{PROBE}"},
                    headers=ADMIN,
                    timeout=30,
                )
            assert response.status_code == 200, response.text
            assert response.json(), "the period holds attributed orders"
            spans = _wait_for(exported, "GET /mesh/v1/campaign-roi")

    # one trace, one root: the mesh's server span, named by its route's template
    assert len({s.context.trace_id for s in spans}) == 1, [s.name for s in spans]
    by_id = {s.context.span_id: s for s in spans}
    roots = [s for s in spans if s.parent is None]
    assert [(r.name, r.kind) for r in roots] == [("GET /mesh/v1/campaign-roi", SpanKind.SERVER)]
    root = roots[0]
    assert (root.attributes or {})["http.route"] == "/mesh/v1/campaign-roi"
    assert root.resource.attributes["service.name"] == "tests"

    # the mesh's client spans, to each domain, under the mesh's server span
    clients = [s for s in spans if s.kind is SpanKind.CLIENT and _url(s)]
    for name in names:
        to_domain = [c for c in clients if _url(c).startswith(f"{bases[name]}/{name}/v1")]
        assert to_domain, f"no client span to {name}: {[_url(c) for c in clients]}"
        assert all(
            c.parent is not None and c.parent.span_id == root.context.span_id for c in to_domain
        )

    # each domain's server spans: their parent is the mesh's client span to that domain
    servers = [s for s in spans if s.kind is SpanKind.SERVER and s is not root]
    for name in names:
        mine = [s for s in servers if s.name.startswith(f"GET /{name}/")]
        assert mine, f"no server span in {name}: {[s.name for s in servers]}"
        for server in mine:
            assert server.parent is not None and server.parent.is_remote
            client = by_id[server.parent.span_id]
            assert client in clients and _url(client).startswith(f"{bases[name]}/{name}/")
            # named by the route's template, which its attribute gives
            assert server.name == "GET " + str((server.attributes or {})["http.route"])
    assert {by_id[s.parent.span_id].context.span_id for s in servers if s.parent} <= {
        c.context.span_id for c in clients
    }

    # the SQL: one span per statement, under a domain's server span, in both domains
    sql = [s for s in spans if (s.attributes or {}).get("db.system") == "postgresql"]
    under = {name: 0 for name in names}
    for statement in sql:
        assert statement.kind is SpanKind.CLIENT
        assert (statement.attributes or {}).get("db.statement")
        # its parent: the server span, or the COPY whose parameters asyncpg quotes first
        assert statement.parent is not None
        parent = by_id[statement.parent.span_id]
        assert parent.kind is SpanKind.SERVER or parent.name == "COPY", parent.name
        served_by = [a for a in _ancestors(statement, by_id) if a.kind is SpanKind.SERVER]
        assert served_by[0] is not root, statement.name
        under[served_by[0].name.split("/")[1]] += 1
    assert all(under.values()), under
    # the domains' reads (Arrow, so COPY): the statement with its placeholders, not the values
    copies = [s for s in sql if s.name == "COPY"]
    databases = {(s.attributes or {})["db.name"] for s in copies}
    assert databases == {domain(name).database for name in names}
    orders = [s for s in copies if '"orders"' in str((s.attributes or {})["db.statement"])]
    assert orders and "$1" in str((orders[0].attributes or {})["db.statement"])
    # every span is one of these: the root, client spans, domain server spans, SQL
    assert len(spans) == 1 + len(clients) + len(servers) + len(sql)

    # nothing the caller sent or the mesh filtered on: no query string, no bound parameter
    said = _values(spans)
    for value in (SINCE, UNTIL, PROBE, *MESH_FILTER_VALUES):
        assert not [text for text in said if value in text], value
    assert not [url for url in map(_url, spans) if "?" in url]
    keys = {k for s in spans for k in (s.attributes or {})}
    assert not keys & {"url.query", "db.statement.parameters"}


def test_a_service_takes_its_parent_from_traceparent_and_exports_with_otlp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set: OTLP over HTTP/protobuf, service.name the
    service's, the caller's `traceparent` the server span's parent, no query in any span."""
    received: list[bytes] = []

    async def collect(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        received.append(body)
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with served(collector) as collector_url:
        for name in _OTEL:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
        mesh = create_app(FederationSettings.model_validate({"domains": {}}))
        try:
            with served(mesh) as mesh_url, suppress_http_instrumentation():
                response = httpx.get(
                    f"{mesh_url}/mesh/v1/metrics",
                    params={"q": PROBE},
                    headers={**ADMIN, "traceparent": f"00-{trace_id}-{parent_id}-01"},
                )
                assert response.status_code == 200, response.text
                assert httpx.get(f"{mesh_url}/mesh/healthz").status_code == 200
        finally:
            tracing.stop_tracing()  # exports what the batch holds

    assert received, "nothing reached the collector"
    assert not [body for body in received if PROBE.encode() in body]
    spans: list[tuple[dict[str, Any], Any]] = []
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            spans += [(resource, s) for scope in resource_spans.scope_spans for s in scope.spans]
    # the probe is not traced; the read is, with the caller's trace as its parent
    assert [(r["service.name"], s.name) for r, s in spans] == [("mesh", "GET /mesh/v1/metrics")]
    server = spans[0][1]
    assert server.trace_id.hex() == trace_id
    assert server.parent_span_id.hex() == parent_id


def test_what_a_span_never_carries_is_taken_out_before_export() -> None:
    """Whatever an instrumentation (or an operator's OTEL_* setting) put in a span: query
    strings, parameters, credentials headers, exception messages and status descriptions go."""
    span = ReadableSpan(
        name="GET /sales/v1/orders",
        attributes={
            "http.url": f"http://u:pw@sales:8001/sales/v1/orders?region=eq.{PROBE}#x",
            "url.full": f"http://sales:8001/sales/v1/orders?region=eq.{PROBE}",
            "http.target": f"/sales/v1/orders?region=eq.{PROBE}",
            "url.query": f"region=eq.{PROBE}",
            "url.path": "/sales/v1/orders",
            "db.statement": 'SELECT "order_id" FROM "orders" s WHERE "region" = $1',
            "db.statement.parameters": f"('{PROBE}',)",
            "db.query.parameter.0": PROBE,
            "http.request.header.authorization": (f"Bearer {PROBE}",),
            "http.request.header.cookie": (PROBE,),
            "http.response.header.set_cookie": (PROBE,),
            "http.request.header.accept": ("application/json",),
        },
        events=[
            Event(
                "exception",
                {
                    "exception.type": "DataError",
                    "exception.message": f"invalid input value {PROBE}",
                    "exception.stacktrace": f"DataError: invalid input value {PROBE}",
                    "exception.escaped": "False",
                },
            )
        ],
        status=Status(StatusCode.ERROR, f"DataError: invalid input value {PROBE}"),
    )
    clean = scrubbed(span)
    assert not [text for text in _values([clean]) if PROBE in text]
    assert clean.attributes == {
        "http.url": "http://sales:8001/sales/v1/orders",
        "url.full": "http://sales:8001/sales/v1/orders",
        "http.target": "/sales/v1/orders",
        "url.path": "/sales/v1/orders",
        "db.statement": 'SELECT "order_id" FROM "orders" s WHERE "region" = $1',
        "http.request.header.accept": ("application/json",),
    }
    assert [dict(e.attributes or {}) for e in clean.events] == [
        {"exception.type": "DataError", "exception.escaped": "False"}
    ]
    assert clean.status.status_code is StatusCode.ERROR and clean.status.description is None
    assert (clean.name, clean.context, clean.kind) == (span.name, span.context, span.kind)


def test_a_trace_starts_at_a_request_only() -> None:
    """SQL or a client request outside any request (background jobs, the mesh's probe
    fan-out) starts no trace; a request does, and what happens within it is kept."""
    sampler = RequestsOnly(ParentBased(ALWAYS_ON))
    root = sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT, {"db.system": "postgresql"})
    assert root.decision is Decision.DROP
    assert sampler.should_sample(None, 1, "GET", SpanKind.CLIENT).decision is Decision.DROP
    request = sampler.should_sample(None, 1, "GET /sales/v1/orders", SpanKind.SERVER)
    assert request.decision is Decision.RECORD_AND_SAMPLE
    parent = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    within = set_span_in_context(NonRecordingSpan(parent))
    statement = sampler.should_sample(within, 1, "SELECT", SpanKind.CLIENT)
    assert statement.decision is Decision.RECORD_AND_SAMPLE


def test_without_an_otlp_endpoint_nothing_is_traced() -> None:
    """No endpoint: no provider, no instrumentation; the SDK and the instrumentations are not
    even imported, and a request's `traceparent` changes nothing."""
    assert not tracing.tracing_configured({})
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.tracing_configured({**on, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.tracing_configured({**on, "OTEL_TRACES_EXPORTER": "none"})

    script = """
import sys, asyncio, httpx, asyncpg, opentelemetry.trace as trace
from services import domain
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.serving.app import create_domain_app
from shared.telemetry import tracing

apps = [create_domain_app(domain("sales"), database_url="postgresql://u@127.0.0.1:9/x"),
        create_app(FederationSettings.model_validate({"domains": {}}))]

async def ask():
    transport = httpx.ASGITransport(app=apps[1])
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        header = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        return (await client.get("/mesh/healthz", headers=header)).status_code

assert asyncio.run(ask()) == 200
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation")))
assert not loaded, loaded
assert tracing._tracing is None
assert not any(getattr(app, "_is_instrumented_by_opentelemetry", False) for app in apps)
assert type(asyncpg.connection.Connection.fetch).__name__ == "function"
assert type(httpx.AsyncHTTPTransport.handle_async_request).__name__ == "function"
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
print("untraced")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "untraced"
