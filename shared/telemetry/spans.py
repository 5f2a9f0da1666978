"""What leaves a service in its spans (shared.telemetry.tracing): which spans are kept
(`RequestsOnly`) and what they never carry (`ScrubbingExporter`): a value a caller sent or a
row holds. URLs lose their query string (and credentials), `url.query` and statement parameters are dropped,
credentials headers too, exceptions keep their type only (their message may quote a value;
the service's log has it) and statuses their code only. SQL statements stay, as text: every
value in them is a bound parameter, so the text holds only what the declarations named."""

from __future__ import annotations

import re
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, TraceState, get_current_span
from opentelemetry.util.types import Attributes, AttributeValue

# attributes holding a URL (or a path), whose query and fragment are cut off
URLS = ("http.url", "url.full", "http.target")
# attributes never exported: the query string, statement parameters (were an instrumentation
# told to capture them)
DROPPED = ("url.query", "db.statement.parameters")
DROPPED_PREFIXES = ("db.query.parameter.",)
# headers captured on request (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*) never exported
HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy_authorization", "cookie", "set_cookie"})
# a URL's user and password
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
# what an exception event keeps
EXCEPTION_KEPT = ("exception.type", "exception.escaped")


class RequestsOnly(Sampler):
    """A trace starts at a request a service answers: a span without a parent that is not a
    server span starts none (SQL outside any request: the view refresher's polling, scheduled
    quality runs, startup checks; the mesh's requests to the domains' probes, its own probe
    being untraced). Everything else as the configured sampler (OTEL_TRACES_SAMPLER,
    parent-based always-on by default) decides."""

    def __init__(self, sampler: Sampler):
        self._sampler = sampler

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind is not SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self._sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestsOnly{{{self._sampler.get_description()}}}"


class ScrubbingExporter(SpanExporter):
    """Exports through `exporter` the spans without what they must never carry (the module's
    docstring): done at export, off the request's path (in the batch's thread when on)."""

    def __init__(self, exporter: SpanExporter):
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """The span without query strings, statement parameters, credentials headers, exception
    messages and status descriptions."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_scrubbed_attributes(span.attributes),
        events=[_scrubbed_event(event) for event in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _scrubbed_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key in DROPPED or key.startswith(DROPPED_PREFIXES):
            continue
        if key.startswith(HEADER_PREFIXES) and key.rsplit(".", 1)[-1] in CREDENTIAL_HEADERS:
            continue
        kept[key] = _without_query(value) if key in URLS and isinstance(value, str) else value
    return kept


def _scrubbed_event(event: Event) -> Event:
    if event.name != "exception":
        return event
    attributes = {k: v for k, v in (event.attributes or {}).items() if k in EXCEPTION_KEPT}
    return Event(event.name, attributes, event.timestamp)


def _without_query(url: str) -> str:
    """The URL (or path) without its query, fragment and credentials (the instrumentations
    take the credentials out already)."""
    return _CREDENTIALS.sub(r"\1", url.split("#", 1)[0].split("?", 1)[0])
