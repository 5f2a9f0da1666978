"""A domain service: the FastAPI app the framework builds from a domain's declarations."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from shared.declarations.products import Domain
from shared.errors import ServiceUnavailable, install_problem_handlers
from shared.governance.contracts import contract_router
from shared.governance.metadata import metadata_router
from shared.governance.quality import QualityRun, latest_scores
from shared.governance.quality_routes import quality_router, quality_schedule
from shared.governance.readings import quality_reading, state_reader
from shared.openapi import document_service_responses, problem
from shared.publishing.lake import lake_exports
from shared.publishing.routes import snapshots_router
from shared.reading.lane import install_read_lane
from shared.reading.routes import ProductReader, product_router, read_handlers
from shared.security.auth import AuthSettings, TokenVerifier, require
from shared.serving.docs import install_docs
from shared.serving.hygiene import METRICS_PATH, install_hygiene
from shared.settings import ServiceSettings, database_url_for
from shared.storage.db import Database
from shared.storage.leader import Leadership, leadership
from shared.storage.views import view_refresher
from shared.telemetry.metrics import CONTENT_TYPE, ProductStates, exposition
from shared.telemetry.tracing import install_tracing
from shared.writing.routes import write_router

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def service_app(
    name: str,
    title: str,
    description: str,
    *,
    lifespan: Lifespan,
    rate_limit_per_minute: int,
    auth: AuthSettings | None = None,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """A FastAPI app under /<name>, with its docs (Swagger UI, its files served by the app:
    shared.serving.docs), OpenAPI, problem+json errors, a token verifier (created at startup: a service
    without a token key refuses to start) and the request hygiene of shared.serving.hygiene (rate limit,
    body cap, CORS, headers, access log)."""

    @asynccontextmanager
    async def with_tokens(app: FastAPI) -> AsyncIterator[None]:
        app.state.token_verifier = TokenVerifier(auth or AuthSettings())
        async with lifespan(app):
            # what is alive once started (modules, the app, pools) lives as long as the
            # process: kept out of the collector's scans, a full collection under load takes
            # a millisecond instead of tens (p99 latency)
            gc.collect()
            gc.freeze()
            yield

    app = FastAPI(
        title=title,
        description=description,
        version="1",
        openapi_url=f"/{name}/openapi.json",
        docs_url=None,  # shared.serving.docs: Swagger UI served by the service itself
        redoc_url=None,
        lifespan=with_tokens,
    )
    install_docs(app, name)
    install_problem_handlers(app)
    install_hygiene(
        app, name, settings or ServiceSettings(), rate_limit_per_minute=rate_limit_per_minute
    )
    document_service_responses(app)
    install_tracing(app, name)  # OpenTelemetry, when an OTLP endpoint is configured

    if (settings or ServiceSettings()).metrics_enabled:

        @app.get(METRICS_PATH, include_in_schema=False)
        async def prometheus_metrics() -> Response:
            """Prometheus metrics of the service (docs/observability.md): open, like healthz."""
            states = getattr(app.state, "product_states", None)
            return Response(exposition(states), media_type=CONTENT_TYPE)

    @app.get(f"/{name}/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    return app


def create_domain_app(
    domain: Domain,
    *,
    database_url: str | None = None,
    settings: ServiceSettings | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """The HTTP service of one domain, serving every declared product from its database."""
    settings = settings or ServiceSettings()
    states = ProductStates(domain.name)

    def after_run(run: QualityRun) -> None:
        states.quality = quality_reading(run)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or database_url_for(domain.name)
        if not url:
            raise RuntimeError(
                f"No database for the {domain.name} domain: set {domain.name.upper()}_DATABASE_URL "
                "or start it with `datamesh up`."
            )
        app.state.database = Database(domain.name, url, settings)
        try:
            # a server that could lose acknowledged writes: the service refuses to start
            await app.state.database.verify_durability()
            database = app.state.database
            # the jobs on the whole database run in one process of those serving the domain
            # (workers, replicas): the leader; the metrics' readings are each process's own
            # (a scrape renders the answering worker's), and none without metrics
            async with leadership(domain.name, url, settings) as leader:
                app.state.leadership = leader
                leads = leader.leads
                interval = settings.quality_interval_seconds
                async with (
                    quality_schedule(domain, database, interval, after_run, leads),
                    view_refresher(domain, database, settings.view_refresh_seconds, leads),
                    state_reader(domain, database, states, settings.metrics_state_seconds)
                    if settings.metrics_enabled
                    else nullcontext(),
                    lake_exports(domain, url, settings, leads),
                ):
                    yield
        finally:
            await app.state.database.dispose()

    app = service_app(
        domain.name,
        f"DataMesh {domain.title} domain",
        f"{domain.description}. Owner: {domain.owner}. Data products of the {domain.name} "
        "domain, read with PostgREST's grammar, in JSON, CSV, NDJSON, Arrow or Parquet.",
        lifespan=lifespan,
        rate_limit_per_minute=domain.rate_limit_per_minute,
        auth=auth,
        settings=settings,
    )

    app.state.product_states = states

    def database() -> Database:
        database: Database = app.state.database
        return database

    def leader() -> Leadership | None:
        return getattr(app.state, "leadership", None)

    app.include_router(readiness_router(domain.name, database, leader))

    # fixed paths (metadata, quality, contracts) go before the products: the product router
    # ends with a catch-all that answers unknown products
    readers = [Depends(require(f"{domain.name}:read"))]
    app.include_router(contract_router(domain, settings.public_url), dependencies=readers)
    app.include_router(snapshots_router(domain, settings), dependencies=readers)
    app.include_router(quality_router(domain, database, after_run), dependencies=readers)
    app.include_router(metadata_router(domain, database, latest_scores), dependencies=readers)
    reader = ProductReader(domain, database, settings)
    # writes need the write scope besides the read one (shared.writing.routes)
    app.include_router(write_router(domain, database, reader), dependencies=readers)
    products = product_router(domain, reader)
    app.include_router(products, dependencies=readers)
    # the reads dispatched by their exact paths, ahead of the router (shared.reading.lane)
    install_read_lane(app, f"{domain.name}:read", read_handlers(domain, reader), products)
    return app


def readiness_router(
    name: str,
    database: Callable[[], Database],
    leader: Callable[[], Leadership | None] = lambda: None,
) -> APIRouter:
    """`GET /<domain>/readyz`: the database answers and is migrated to the newest revision;
    `leader` says whether the answering process leads the domain's background jobs."""
    router = APIRouter()

    @router.get(
        f"/{name}/readyz",
        tags=["health"],
        summary="Readiness",
        responses={503: problem("The database does not answer or is not migrated.")},
    )
    async def readyz() -> JSONResponse:
        """The database answers and is migrated to the newest revision (`leader`: whether the
        process that answers leads the domain's background jobs)."""
        state = await database().readiness()
        elected = leader()
        state["leader"] = elected is not None and elected.leading
        if not state["ready"]:
            raise ServiceUnavailable(
                f"The {name} database is not ready: {state}.", headers={"Retry-After": "1"}
            )
        return JSONResponse(state)

    return router
