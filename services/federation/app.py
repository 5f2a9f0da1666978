"""The mesh service: cross-domain metrics served as products, and the federation's health."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from services.federation.cache import Rendered, TableCache
from services.federation.catalog import catalog, metric_entry, quality_overview
from services.federation.engines import Engine, engine_for
from services.federation.fetch import DomainRegistry, Period, ServiceToken
from services.federation.metrics import METRICS, Metric
from services.federation.settings import RATE_LIMIT_PER_MINUTE, SERVICE, FederationSettings
from shared.errors import InvalidValue, ServiceUnavailable, UnknownProduct
from shared.openapi import problem
from shared.reading.lane import install_read_lane
from shared.reading.routes import (
    Handler,
    Representation,
    add_read_routes,
    parse_request,
    read_paths,
    respond,
    tagged,
    unchanged,
)
from shared.reading.tables import TableRows
from shared.security.auth import AuthSettings, Forbidden, principal_of, require
from shared.serving.app import service_app
from shared.settings import ServiceSettings

# the days a period may name: business dates (a date past these is a typo, and the day after
# 9999-12-31 does not exist)
PERIOD_RANGE = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))

_KEEPALIVE_SECONDS = 2.0

_YEARS = r"^(?:19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}$"
_PERIOD_PARAMETERS = (
    {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "First day of the period (ISO date, inclusive), from "
        f"{PERIOD_RANGE[0]} to {PERIOD_RANGE[1]}.",
        "schema": {"type": "string", "format": "date", "pattern": _YEARS},
    },
    {
        "name": "until",
        "in": "query",
        "required": False,
        "description": "Last day of the period (ISO date, inclusive), from "
        f"{PERIOD_RANGE[0]} to {PERIOD_RANGE[1]}.",
        "schema": {"type": "string", "format": "date", "pattern": _YEARS},
    },
)

_UPSTREAM_FAILURES: dict[int | str, dict[str, Any]] = {
    429: problem(
        "A domain the metric reads refused more reads on this caller's behalf (its rate limit "
        "per caller); retry after `Retry-After` seconds."
    ),
    503: problem(
        "A domain the metric reads is unreachable or failing; the problem names it. On the "
        "Spark engine: `engine_unavailable` (Spark cannot start or the query failed), "
        "`no_snapshot` or `invalid_snapshot` (an input's snapshot in the lake), naming it."
    ),
    504: problem("A domain the metric reads did not answer in time; the problem names it."),
}


def parse_period(params: list[tuple[str, str]]) -> tuple[Period, list[tuple[str, str]]]:
    """`since`/`until` taken out of the query parameters, the rest left for the read grammar."""
    dates: dict[str, dt.date] = {}
    rest: list[tuple[str, str]] = []
    for name, value in params:
        if name not in ("since", "until"):
            rest.append((name, value))
            continue
        if name in dates:
            raise InvalidValue(f"Parameter '{name}' is given more than once.", parameter=name)
        try:
            day = dt.date.fromisoformat(value) if value.isascii() else None
        except ValueError:
            day = None
        if day is None:
            raise InvalidValue(
                f"Parameter '{name}' has value '{value}'; expected an ISO 8601 date (YYYY-MM-DD).",
                parameter=name,
                value=value,
            )
        first, last = PERIOD_RANGE
        if not first <= day <= last:
            raise InvalidValue(
                f"Parameter '{name}' has value '{value}', outside the dates a period may name "
                f"({first} to {last}).",
                parameter=name,
                value=value,
                minimum=first.isoformat(),
                maximum=last.isoformat(),
            )
        dates[name] = day
    period = Period(dates.get("since"), dates.get("until"))
    if period.since and period.until and period.since > period.until:
        raise InvalidValue(
            f"Parameter 'since' ({period.since}) is after 'until' ({period.until}).",
            parameter="since",
        )
    return period, rest


def create_app(
    settings: FederationSettings | None = None,
    mesh_settings: ServiceSettings | None = None,
    auth: AuthSettings | None = None,
    engine: Engine | None = None,
) -> FastAPI:
    """The mesh app, federating the domains named in its settings; its metrics computed by
    `engine` (default: the one its settings name, MESH_ENGINE)."""
    settings = settings or FederationSettings()
    mesh_settings = mesh_settings or ServiceSettings()
    auth = auth or AuthSettings()

    def registry() -> DomainRegistry:
        current: DomainRegistry = app.state.registry
        return current

    computing = engine or engine_for(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(
            settings.read_timeout_seconds, connect=settings.connect_timeout_seconds
        )
        # an idle connection is dropped well before a domain closes it (uvicorn: after 5 s),
        # so that a read is never sent on a connection the domain is closing (a ReadError)
        limits = httpx.Limits(keepalive_expiry=_KEEPALIVE_SECONDS)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            cache = TableCache(settings.cache_max_bytes) if settings.cache_max_bytes else None
            app.state.registry = DomainRegistry(
                settings, client, ServiceToken(settings, auth), cache
            )
            warming = asyncio.create_task(computing.start())
            try:
                yield
            finally:
                warming.cancel()
                await asyncio.gather(warming, return_exceptions=True)
                await computing.close()

    app = service_app(
        SERVICE,
        "DataMesh federation (the mesh)",
        "Cross-domain metrics computed from the domains' published data products only (the "
        "mesh never connects to a domain database). Each metric reads like a domain product: "
        "PostgREST grammar, JSON/CSV/NDJSON/Arrow/Parquet, problem+json errors. A domain that "
        "is down answers 503 naming it; one that is too slow, 504.",
        lifespan=lifespan,
        rate_limit_per_minute=RATE_LIMIT_PER_MINUTE,
        auth=auth,
        settings=mesh_settings,
    )

    @app.get(
        "/mesh/readyz",
        tags=["health"],
        summary="Readiness",
        responses={503: problem("A domain does not answer its readiness check.")},
    )
    async def readyz() -> JSONResponse:
        """Every registered domain answers its readiness check."""

        async def probe(name: str, base: str) -> tuple[str, str]:
            try:
                response = await registry().client.get(f"{base}/{name}/readyz", timeout=2.0)
            except httpx.HTTPError as exc:
                return name, f"unreachable: {type(exc).__name__}"
            if response.status_code != 200:
                return name, f"not ready ({response.status_code})"
            return name, "ready"

        states = dict(await asyncio.gather(*(probe(n, b) for n, b in settings.domains.items())))
        if any(state != "ready" for state in states.values()):
            raise ServiceUnavailable(
                "Not every domain is ready: " + ", ".join(f"{n}: {s}" for n, s in states.items()),
                headers={"Retry-After": "1"},
                domains=states,
            )
        return JSONResponse({"ready": True, "domains": states})

    router = APIRouter()

    @router.get("/mesh/v1/catalog", tags=["catalogue"], summary="The mesh catalog")
    async def read_catalog(request: Request, q: str | None = None) -> JSONResponse:
        """Every domain's products with owner, classification, row count, freshness, quality
        score and contract link, and every metric with its inputs and the scopes it needs;
        `q` searches names, descriptions and columns."""
        return JSONResponse(await catalog(registry(), q, principal_of(request).subject))

    @router.get("/mesh/v1/quality", tags=["catalogue"], summary="Quality overview")
    async def read_quality(request: Request) -> JSONResponse:
        """The latest quality run of every domain; the failing-row samples of a domain only
        for callers holding its read scope."""
        principal = principal_of(request)
        return JSONResponse(await quality_overview(registry(), principal))

    @router.get("/mesh/v1/metrics", tags=["catalogue"], summary="List metrics")
    async def list_metrics() -> JSONResponse:
        """The mesh's metrics: description, output columns and the domain products they read;
        the engine that computes them and what each reads now (`lineage`: over HTTP, or on
        Spark the latest snapshot of each input in the lake, with its age)."""
        entries = []
        for metric in METRICS:
            entry = metric_entry(metric)
            entry["engine"] = computing.name
            entry["lineage"] = await computing.lineage(metric)
            entries.append(entry)
        return JSONResponse(entries)

    handlers: dict[str, Handler] = {}
    for metric in METRICS:
        handler = _metric_handler(metric, computing, mesh_settings, lambda: registry().cache)
        handlers |= dict.fromkeys(read_paths(SERVICE, metric.product), handler)
        add_read_routes(
            router,
            SERVICE,
            metric.product,
            handler,
            origin="computed by the mesh from "
            + ", ".join(f"`{lineage}`" for lineage in sorted({i.lineage for i in metric.inputs})),
            parameters=_PERIOD_PARAMETERS,
            notes=f"Period: {metric.period}.\n\n{_access_note(metric)}",
            responses=_UPSTREAM_FAILURES | _forbidden(metric),
        )
    known = ", ".join(m.name for m in METRICS)

    async def unknown_metric(name: str) -> Response:
        raise UnknownProduct(f"Unknown metric '{name}' in the mesh; known: {known}.", product=name)

    router.add_api_route(
        "/mesh/v1/{name}", unknown_metric, methods=["GET"], include_in_schema=False
    )
    app.include_router(router, dependencies=[Depends(require("mesh:read"))])
    # the metrics' reads dispatched by their exact paths, ahead of the router
    install_read_lane(app, "mesh:read", handlers, router)
    return app


# headers of one response, not of the answer: computed again for each
_PER_RESPONSE = {"content-length", "content-type", "etag", "cache-control", "vary"}


def _metric_handler(
    metric: Metric,
    engine: Engine,
    settings: ServiceSettings,
    rendered_cache: Callable[[], TableCache | None],
) -> Handler:
    async def read(request: Request) -> Response:
        principal = principal_of(request)
        for scope in metric.scopes:
            if not principal.allows(scope):
                raise Forbidden(
                    scope,
                    f"This request needs the scope '{scope}', which the token does not carry: "
                    f"the metric '{metric.name}' answers rows of the "
                    f"{' and '.join(metric.row_domains)} domain"
                    f"{'s' if len(metric.row_domains) > 1 else ''}, so it needs "
                    f"{', '.join(metric.scopes)} (derived products inherit their inputs' access).",
                    needs=list(metric.scopes),
                )
        period, params = parse_period(request.query_params.multi_items())
        # a metric has no PII column; were one declared, it would be masked for everyone
        read = parse_request(request, metric.product, settings, pii_scope=None, params=params)
        answer = await engine.answer(metric, period, principal.subject)
        # an answer computed from the same inputs (their ETags, or snapshots) is the same
        tag = None
        if answer.version is not None:
            shape = Representation.of(request, metric.product, None)
            tag = shape.tag(f"m{answer.version}", settings)

        async def rendered() -> Response:
            cache = rendered_cache()
            kept = cache.get(("rendered", tag)) if cache is not None and tag else None
            if kept is not None:
                sent: Rendered = kept.value
                return Response(sent.body, media_type=sent.media_type, headers=sent.headers)
            rows = TableRows(answer.table, metric.product.columns)
            response = await respond(request, read, rows, settings)
            if cache is not None and tag and not isinstance(response, StreamingResponse):
                media = response.media_type or ""
                kept_headers = {
                    k: v for k, v in response.headers.items() if k.lower() not in _PER_RESPONSE
                }
                body = bytes(response.body)
                cache.put(("rendered", tag), tag, Rendered(body, media, kept_headers))
            return response

        response = unchanged(request, tag) or tagged(await rendered(), tag)
        response.headers.update(answer.headers())
        return response

    return read


def _access_note(metric: Metric) -> str:
    if not metric.row_domains:
        return "Access: `mesh:read` (it answers aggregates only)."
    scopes = ", ".join(f"`{scope}`" for scope in metric.scopes)
    return (
        f"Access: {scopes}. It answers rows of the {' and '.join(metric.row_domains)} "
        "domain(s), one per output row, so it needs their read scopes too: a derived product "
        "inherits its inputs' access (403 otherwise)."
    )


def _forbidden(metric: Metric) -> dict[int | str, dict[str, Any]]:
    if not metric.row_domains:
        return {}
    return {403: problem(f"The token lacks one of {', '.join(metric.scopes)}.")}


app = create_app()
