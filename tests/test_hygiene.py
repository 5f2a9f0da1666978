"""Request hygiene on every service: rate limits per token (and per address without one), the
body cap, CORS, security headers and the access log."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import limits.aio.storage.memory
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from pydantic import ValidationError

import shared.serving.hygiene
from services import DOMAINS, domain
from services.federation.app import create_app
from services.federation.settings import RATE_LIMIT_PER_MINUTE as MESH_RATE_LIMIT_PER_MINUTE
from services.federation.settings import FederationSettings
from shared.reading.lane import ReadLane
from shared.serving.app import create_domain_app, service_app
from shared.serving.docs import SWAGGER_UI, SWAGGER_UI_VERSION
from shared.serving.hygiene import RequestLimits, ResponseHygiene, page_csp, rate_limit_for
from shared.settings import ServiceSettings
from tests.conftest import ADMIN, token

PROBLEM = "application/problem+json"
MiB = 1_048_576
API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def bearer(subject: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes, subject=subject)}"}


def security_headers(response: httpx.Response) -> dict[str, str | None]:
    return {name: response.headers.get(name) for name in API_HEADERS}


class FrozenClock:
    """The wall clock the rate limiter reads, standing still until a test moves it."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(limits.aio.storage.memory, "time", frozen)
    monkeypatch.setattr(shared.serving.hygiene, "time", frozen)
    return frozen


@asynccontextmanager
async def client_of(
    app: FastAPI, base_url: str = "http://test", **transport: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        asgi = httpx.ASGITransport(app=manager.app, **transport)
        async with httpx.AsyncClient(transport=asgi, base_url=base_url) as client:
            yield client


def defaults(**changes: Any) -> ServiceSettings:
    """The shipped settings (the test session raises the rate limit for its shared clients)."""
    return ServiceSettings(**{"rate_limit_per_minute": None, **changes})


@asynccontextmanager
async def domain_client(
    name: str, database_urls: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain(name), database_url=database_urls[name], settings=settings)
    async with client_of(app) as client:
        yield client


def mesh_app(settings: ServiceSettings) -> FastAPI:
    return create_app(FederationSettings(domains={}), mesh_settings=settings)


def probe_app(settings: ServiceSettings) -> FastAPI:
    """A service built like every other, with two routes to probe the body cap and errors."""

    @asynccontextmanager
    async def nothing(app: FastAPI) -> AsyncIterator[None]:
        yield

    app = service_app(
        "probe",
        "Probe",
        "A service to probe.",
        lifespan=nothing,
        rate_limit_per_minute=600,
        settings=settings,
    )

    @app.post("/probe/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/probe/fail")
    async def fail() -> None:
        raise RuntimeError("a bug")

    return app


# --- rate limits ------------------------------------------------------------------------


def test_each_service_has_its_own_default_rate_and_the_setting_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declared = [domain("sales").rate_limit_per_minute, domain("marketing").rate_limit_per_minute]
    assert [*declared, MESH_RATE_LIMIT_PER_MINUTE] == [1000, 500, 600]
    assert [rate_limit_for(rate, defaults()) for rate in declared] == [1000, 500]
    monkeypatch.setenv("DATAMESH_RATE_LIMIT_PER_MINUTE", "42")
    assert rate_limit_for(1000, ServiceSettings()) == 42


async def test_the_1001st_request_within_a_minute_to_sales_gets_429_with_retry_after(
    database_urls: dict[str, str], clock: FrozenClock
) -> None:
    analyst = bearer("analyst-1", "sales:read")
    path = "/sales/v1/products?select=product_id&limit=1"
    async with domain_client("sales", database_urls, defaults()) as sales:
        answers = [await sales.get(path, headers=analyst) for _ in range(1000)]
        assert [a.status_code for a in answers] == [200] * 1000
        assert answers[0].headers["ratelimit-limit"] == "1000"
        assert answers[0].headers["ratelimit-remaining"] == "999"
        assert answers[-1].headers["ratelimit-remaining"] == "0"

        refused = await sales.get(path, headers=analyst)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM
        assert refused.headers["retry-after"] == "61"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.json() == {
            "type": "https://datamesh.dev/problems/rate_limited",
            "title": "Too many requests",
            "status": 429,
            "code": "rate_limited",
            "detail": "More than 1000 requests in a minute from the token subject 'analyst-1'; "
            "retry in 61 s.",
            "instance": "/sales/v1/products",
            "limit": 1000,
            "retry_after_seconds": 61,
        }
        assert security_headers(refused) == API_HEADERS

        # another token is not limited by the first one's requests
        other = await sales.get(path, headers=bearer("analyst-2", "sales:read"))
        assert other.status_code == 200
        assert other.headers["ratelimit-remaining"] == "999"

        # the window moves: a minute later the oldest hits still count, a second after that
        # they have left the window
        clock.now += 60
        still = await sales.get(path, headers=analyst)
        assert (still.status_code, still.headers["retry-after"]) == (429, "1")
        clock.now += 1
        again = await sales.get(path, headers=analyst)
        assert again.status_code == 200
        assert again.headers["ratelimit-remaining"] == "999"


async def test_the_501st_request_within_a_minute_to_marketing_gets_429(
    database_urls: dict[str, str], clock: FrozenClock
) -> None:
    analyst = bearer("marketing-analyst", "marketing:read")
    async with domain_client("marketing", database_urls, defaults()) as marketing:
        statuses = [
            (await marketing.get("/marketing/v1", headers=analyst)).status_code for _ in range(500)
        ]
        refused = await marketing.get("/marketing/v1", headers=analyst)
    assert statuses == [200] * 500
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "61")
    assert refused.headers["ratelimit-limit"] == "500"


async def test_requests_without_a_valid_token_are_limited_per_client_address(
    clock: FrozenClock,
) -> None:
    forged = {"Authorization": "Bearer not-a-token"}
    async with client_of(mesh_app(defaults())) as mesh:
        statuses = [
            (await mesh.get("/mesh/v1/metrics", headers=forged if i % 2 else {})).status_code
            for i in range(600)
        ]
        flooded = await mesh.get("/mesh/v1/metrics")
        with_token = await mesh.get("/mesh/v1/metrics", headers=bearer("someone", "mesh:read"))
    assert statuses == [401] * 600
    assert flooded.status_code == 429
    assert flooded.json()["detail"] == (
        "More than 600 requests in a minute from this client address; retry in 61 s."
    )
    assert with_token.status_code == 200


async def test_a_configured_rate_applies(clock: FrozenClock) -> None:
    caller = bearer("notebook", "mesh:read")
    async with client_of(mesh_app(defaults(rate_limit_per_minute=3))) as mesh:
        statuses = [
            (await mesh.get("/mesh/v1/metrics", headers=caller)).status_code for _ in "abcd"
        ]
    assert statuses == [200, 200, 200, 429]


# --- body size --------------------------------------------------------------------------


async def test_a_body_over_the_cap_gets_413_by_its_content_length(
    database_urls: dict[str, str],
) -> None:
    async with domain_client("sales", database_urls, defaults()) as sales:
        response = await sales.post(
            "/sales/v1/quality/runs", content=b"x" * (MiB + 1), headers=ADMIN
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert (
        response.json()["detail"] == "The request body is larger than the limit of 1048576 bytes."
    )
    assert response.json()["code"] == "content_too_large"
    assert security_headers(response) == API_HEADERS


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for start in range(0, size, 65_536):
        yield b"x" * min(65_536, size - start)


async def test_a_chunked_body_is_cut_off_at_the_cap() -> None:
    async with client_of(probe_app(defaults())) as probe:
        at_cap = await probe.post("/probe/echo", content=_chunks(MiB))
        over = await probe.post("/probe/echo", content=_chunks(MiB + 1))
        small_cap = await probe.post("/probe/echo", content=b"x" * 1025)
    assert "content-length" not in at_cap.request.headers
    assert (at_cap.status_code, at_cap.json()) == (200, {"bytes": MiB})
    assert over.status_code == 413
    assert over.json()["limit_bytes"] == MiB
    assert small_cap.status_code == 200
    async with client_of(probe_app(defaults(max_body_bytes=1024))) as probe:
        refused = await probe.post("/probe/echo", content=b"x" * 1025)
    assert refused.status_code == 413


# --- CORS ----------------------------------------------------------------------------------


async def test_no_cors_headers_without_configured_origins() -> None:
    origin = {"Origin": "https://notebooks.example"}
    async with client_of(mesh_app(defaults())) as mesh:
        read = await mesh.get("/mesh/v1/metrics", headers=origin | bearer("n", "mesh:read"))
        preflight = await mesh.options(
            "/mesh/v1/metrics", headers=origin | {"Access-Control-Request-Method": "GET"}
        )
    assert read.status_code == 200
    assert not [h for h in read.headers if h.startswith("access-control-")]
    assert preflight.status_code == 405
    assert not [h for h in preflight.headers if h.startswith("access-control-")]


async def test_cors_answers_a_configured_origin_only() -> None:
    settings = defaults(cors_origins=["https://notebooks.example"])
    caller = bearer("n", "mesh:read")
    async with client_of(mesh_app(settings)) as mesh:
        read = await mesh.get(
            "/mesh/v1/metrics", headers=caller | {"Origin": "https://notebooks.example"}
        )
        preflight = await mesh.options(
            "/mesh/v1/metrics",
            headers={
                "Origin": "https://notebooks.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        stranger = await mesh.get(
            "/mesh/v1/metrics", headers=caller | {"Origin": "https://evil.example"}
        )
        stranger_preflight = await mesh.options(
            "/mesh/v1/metrics",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert read.headers["access-control-allow-origin"] == "https://notebooks.example"
    assert "access-control-allow-credentials" not in read.headers
    assert read.headers["access-control-expose-headers"] == (
        "Content-Range, Content-Disposition, Link, Location, Preference-Applied, Retry-After, "
        "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, ETag, Idempotent-Replayed, "
        "DataMesh-Engine, DataMesh-Snapshots, DataMesh-Snapshot-Age-Seconds"
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://notebooks.example"
    assert preflight.headers["access-control-allow-methods"] == (
        "GET, HEAD, POST, PATCH, PUT, OPTIONS"
    )
    allowed = preflight.headers["access-control-allow-headers"].split(", ")
    assert {"Authorization", "Idempotency-Key", "If-Match"} <= set(allowed)
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger_preflight.status_code == 400
    assert "access-control-allow-origin" not in stranger_preflight.headers
    assert security_headers(preflight) == API_HEADERS


def test_cors_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMESH_CORS_ORIGINS", "https://a.example, https://b.example/")
    assert ServiceSettings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("DATAMESH_CORS_ORIGINS", '["https://c.example"]')
    assert ServiceSettings().cors_origins == ["https://c.example"]
    monkeypatch.setenv("DATAMESH_CORS_ORIGINS", "*")
    with pytest.raises(ValidationError, match="CORS origin '\\*' is not an exact origin"):
        ServiceSettings()


# --- security headers -----------------------------------------------------------------------


async def test_a_data_response_carries_the_security_headers(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/customers?select=customer_id&limit=1")
    assert response.status_code == 200
    # a versioned read may be kept, to be revalidated (docs/reading.md, conditional reads)
    assert security_headers(response) == API_HEADERS | {"cache-control": "private, no-cache"}
    assert "strict-transport-security" not in response.headers
    unversioned = await sales.get("/sales/v1/metadata")
    assert security_headers(unversioned) == API_HEADERS


async def test_error_responses_carry_the_security_headers(sales: httpx.AsyncClient) -> None:
    unknown = await sales.get("/sales/v1/no-such-product")
    unauthorized = await sales.get("/sales/v1/customers", headers={"Authorization": ""})
    bad = await sales.get("/sales/v1/customers?limit=banana")
    assert [unknown.status_code, unauthorized.status_code, bad.status_code] == [404, 401, 400]
    for response in (unknown, unauthorized, bad):
        assert security_headers(response) == API_HEADERS


async def test_an_unexpected_error_is_a_500_with_the_security_headers() -> None:
    async with client_of(probe_app(defaults()), raise_app_exceptions=False) as probe:
        response = await probe.get("/probe/fail")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert security_headers(response) == API_HEADERS


async def test_https_requests_get_strict_transport_security(
    database_urls: dict[str, str],
) -> None:
    app = create_domain_app(
        domain("sales"), database_url=database_urls["sales"], settings=defaults()
    )
    async with client_of(app, base_url="https://sales.example") as sales:
        response = await sales.get("/sales/healthz")
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


async def test_the_docs_page_may_load_exactly_swagger_ui(sales: httpx.AsyncClient) -> None:
    page = await sales.get("/sales/docs")
    assert page.status_code == 200
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    # Swagger UI from the service itself (shared/serving/docs.py): a path is no CSP source, 'self' is
    assets = f"/sales/docs/assets/{SWAGGER_UI_VERSION}"
    assert re.findall(r'<script src="([^"]+)"', page.text) == [f"{assets}/swagger-ui-bundle.js"]
    assert re.findall(r'rel="stylesheet" href="([^"]+)"', page.text) == [f"{assets}/swagger-ui.css"]
    assert re.findall(r'rel="shortcut icon" href="([^"]+)"', page.text) == [
        f"{assets}/favicon-32x32.png"
    ]
    assert page.headers["content-security-policy"] == (
        "default-src 'none'; "
        f"script-src 'self' 'sha256-{digest}'; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    assert {k: v for k, v in security_headers(page).items() if k != "content-security-policy"} == {
        k: v for k, v in API_HEADERS.items() if k != "content-security-policy"
    }
    openapi = await sales.get("/sales/openapi.json")
    assert security_headers(openapi) == API_HEADERS

    for name, media_type in {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "favicon-32x32.png": "image/png",
    }.items():
        asset = await sales.get(f"{assets}/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"] == media_type
        assert asset.content == (SWAGGER_UI / name).read_bytes()
        # the version is in the path: a browser may keep the file
        assert security_headers(asset) == {
            **API_HEADERS,
            "cache-control": "public, max-age=31536000, immutable",
        }
    assert (await sales.get("/sales/docs/assets/5.0.0/swagger-ui.css")).status_code == 404


def test_a_page_policy_names_other_origins_by_url_and_its_own_as_self() -> None:
    page = (
        '<link rel="stylesheet" href="https://cdn.example/ui@5/ui.css?v=5#top">'
        '<link rel="icon" href="//icons.example/favicon.png">'
        '<script src="/docs/assets/ui.js"></script><script src="ui-extra.js"></script>'
    )
    assert page_csp(page) == (
        "default-src 'none'; script-src 'self'; style-src https://cdn.example/ui@5/ui.css; "
        "img-src icons.example/favicon.png data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


# --- access log ---------------------------------------------------------------------------


async def test_the_access_log_names_the_caller_but_never_a_token_or_a_value(
    sales: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    email = (await sales.get("/sales/v1/customers?select=email&order=customer_id&limit=1")).json()[
        0
    ]["email"]
    caller = token("sales:read", "sales:pii", subject="auditor")
    headers = {"Authorization": f"Bearer {caller}"}
    with caplog.at_level(logging.INFO, logger="datamesh.access"):
        caplog.clear()
        found = await sales.get(
            f"/sales/v1/customers?email=eq.{email}&select=customer_id,email", headers=headers
        )
        await sales.get(f"/sales/v1/customers/{email}", headers=headers)
        as_name = await sales.get(f"/sales/v1/customers?{email}", headers=headers)
    assert found.json()[0]["email"] == email
    assert as_name.status_code == 400

    lines = [r for r in caplog.records if r.name == "datamesh.access"]
    assert len(lines) == 3
    entries = [json.loads(r.getMessage()) for r in lines]
    assert entries == [r.__dict__["access"] for r in lines]
    first = entries[0]
    assert isinstance(first.pop("duration_ms"), float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first.pop("time"))
    assert first == {
        "service": "sales",
        "pid": os.getpid(),
        "method": "GET",
        "path": "/sales/v1/customers",
        "params": ["email", "select"],
        "status": 200,
        "subject": "auditor",
        "on_behalf_of": None,
        "scopes": ["sales:pii", "sales:read"],
        "product": "customers",
        "rows": 1,
        "bytes": len(found.content),
    }
    assert entries[1]["path"] == "/sales/v1/customers/*"
    assert entries[2]["params"] == ["*"]
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in (email, quote(email), caller):
            assert secret not in text


# --- outbound requests ----------------------------------------------------------------------

URL_LIKE = re.compile(r"url|uri|callback|webhook|redirect|host", re.I)


async def test_no_endpoint_takes_a_url_or_host_to_fetch(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    """The services fetch only what their settings name (the mesh's domains, a JWKS URL):
    nothing a caller sends can point them elsewhere."""
    async with client_of(mesh_app(defaults())) as mesh:
        documents = {
            "mesh": (await mesh.get("/mesh/openapi.json")).json(),
            "sales": (await sales.get("/sales/openapi.json")).json(),
            "marketing": (await marketing.get("/marketing/openapi.json")).json(),
        }
    inputs = []
    for service, document in documents.items():
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                for parameter in operation.get("parameters", []):
                    inputs.append((service, method, path, parameter["name"], parameter["schema"]))
                # bodies are rows written (shared.writing.routes): their fields are declared columns
                body = operation.get("requestBody")
                if body is not None:
                    assert method in ("post", "patch", "put"), (service, method, path)
                    for media in body["content"].values():
                        rows = media["schema"].get("items", media["schema"])
                        for name, schema in rows.get("properties", {}).items():
                            inputs.append((service, method, path, name, schema))
    assert len(inputs) > 100
    # a filter on a declared column (website traffic's page_url) is data, never fetched
    columns = {c.name for d in DOMAINS for p in domain(d).products for c in p.columns}
    suspicious = [
        i
        for i in inputs
        if (URL_LIKE.search(i[3]) and i[3] not in columns) or i[4].get("format") in ("uri", "url")
    ]
    assert suspicious == []


def test_the_reads_are_served_by_the_lane_inside_every_check() -> None:
    """shared.reading.lane: every product's GET paths (versioned and current) are the lane's,
    innermost of the app's middleware, so the rate limit, body cap, headers and access log
    wrap the reads it serves as they wrap the router."""
    for name in DOMAINS:
        app = create_domain_app(domain(name))
        classes: list[Any] = [m.cls for m in app.user_middleware]
        assert classes[-1] is ReadLane
        assert classes.index(RequestLimits) < classes.index(ReadLane)
        assert classes.index(ResponseHygiene) < classes.index(ReadLane)
        lanes: dict[str, Any] = app.user_middleware[-1].kwargs["lanes"]  # type: ignore[assignment]
        expected = {
            path
            for p in domain(name).products
            for path in (f"/{name}/v{p.version}/{p.name}", f"/{name}/{p.name}")
        }
        assert set(lanes) == expected
        assert {lane.scope for lane in lanes.values()} == {f"{name}:read"}
        assert all(lane.route.path in expected for lane in lanes.values())
