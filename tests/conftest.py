"""Fixtures: one real PostgreSQL server per domain (embedded unless DATAMESH_TEST_POSTGRES says
otherwise), migrated with Alembic and loaded with the sample data as of 2024-10-18; the apps are
called over ASGI with httpx, or over real HTTP where a test needs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services import DOMAINS, SampleRows, domain, sample
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.security.auth import mint_token
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage import migrations
from shared.storage.db import grant_service_role, service_role, track_data_versions
from shared.storage.sample_data import load_if_empty
from tests.postgres import PostgresServer, postgres_per_domain
from tests.redis_server import redis_server
from tests.servers import served

AS_OF = dt.date(2024, 10, 18)

# every service the tests start verifies tokens signed with this run's random secret
TEST_SECRET = secrets.token_urlsafe(48)
os.environ["DATAMESH_JWT_SECRET"] = TEST_SECRET
# the shared clients make thousands of requests a minute under one token: the rate limits are
# tested with their real defaults in test_hygiene.py, on apps of their own
os.environ["DATAMESH_RATE_LIMIT_PER_MINUTE"] = "1000000"
# ... and computes email_key with this run's random pseudonymisation secret
PSEUDONYM_SECRET = secrets.token_urlsafe(48)
os.environ["DATAMESH_PSEUDONYM_SECRET"] = PSEUDONYM_SECRET


def token(*scopes: str, ttl: dt.timedelta = dt.timedelta(hours=1), subject: str = "tests") -> str:
    """A token for the tests' services carrying the scopes."""
    return mint_token(TEST_SECRET, scopes, ttl=ttl, subject=subject)


ADMIN = {"Authorization": f"Bearer {token('admin')}"}


@pytest.fixture(scope="session")
def postgres_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, PostgresServer]]:
    """One PostgreSQL server per domain (embedded by default; see tests/postgres.py)."""
    with postgres_per_domain(tmp_path_factory.mktemp("postgres")) as servers:
        yield servers


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of the tests' own, for the rate limits' shared store (tests/redis_server.py)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


# service-role URL -> the owner's URL of the same database, for tests that change the schema
_OWNER_URLS: dict[str, str] = {}


def create_database(
    servers: dict[str, PostgresServer], name: str, database: str, rows: SampleRows
) -> str:
    """A new database of the domain on its server, migrated and loaded with the rows by its
    owner; the URL of the domain's service role (data only, no DDL), as `datamesh up` uses."""
    server = servers[name]
    server.ensure_database(database)
    owner = server.url(database)
    migrations.upgrade(name, owner)
    asyncio.run(track_data_versions(owner, domain(name)))
    asyncio.run(load_if_empty(domain(name), owner, rows))
    role = service_role(name)
    asyncio.run(
        grant_service_role(
            owner, role, domain=name, password=server.role_password(role), set_password=True
        )
    )
    url = server.url(database, role)
    _OWNER_URLS[url] = owner
    return url


def sample_databases(servers: dict[str, PostgresServer], suffix: str) -> dict[str, str]:
    """A database of every domain of its own (`<domain>_<suffix>`) with the sample as of AS_OF:
    for tests that change data; the service role's URL of each."""
    return {
        name: create_database(servers, name, f"{name}_{suffix}", sample(name)(AS_OF))
        for name in DOMAINS
    }


def owner_url(url: str) -> str:
    """The schema owner's URL of a database create_database made (to break it on purpose)."""
    return _OWNER_URLS[url]


@pytest.fixture(scope="session")
def database_urls(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Each domain's migrated database with the sample data as of AS_OF."""
    return {
        name: create_database(postgres_servers, name, domain(name).database, sample(name)(AS_OF))
        for name in DOMAINS
    }


@pytest.fixture(scope="session")
def settings() -> ServiceSettings:
    # views refreshed every 50 ms: a test waits for a write to reach them (views_refreshed)
    return ServiceSettings(
        json_page_size=1000, max_page_size=10_000, stream_batch_rows=100, view_refresh_seconds=0.05
    )


async def views_refreshed(client: httpx.AsyncClient, name: str) -> float:
    """Wait until the domain's materialized views hold every write committed so far, within
    the domain's promise (ServiceLevels.view_freshness); the seconds it took."""
    promise = domain(name).service_levels.view_freshness.total_seconds()
    started = time.monotonic()
    while True:
        metadata = (await client.get(f"/{name}/v1/metadata")).json()
        views = [t["freshness"] for t in metadata["tables"].values() if t["kind"] == "view"]
        if all(v["pending_since"] is None for v in views):
            return time.monotonic() - started
        assert time.monotonic() - started < promise, f"{name} views still stale: {views}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def app_client(
    app: Any, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app over ASGI, its lifespan run (admin token unless `headers`)."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers=ADMIN if headers is None else headers,
        ) as client:
            yield client


async def _client(
    name: str, url: str, settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain(name), database_url=url, settings=settings)
    async with app_client(app) as client:
        yield client


@pytest.fixture(scope="session")
async def sales(
    database_urls: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the sales service."""
    async for client in _client("sales", database_urls["sales"], settings):
        yield client


@pytest.fixture(scope="session")
async def marketing(
    database_urls: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the marketing service."""
    async for client in _client("marketing", database_urls["marketing"], settings):
        yield client


@pytest.fixture(scope="session")
def domain_urls(
    database_urls: dict[str, str], settings: ServiceSettings
) -> Iterator[dict[str, str]]:
    """Every domain service on a real HTTP port (the mesh reads them over HTTP); base URLs."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                served(create_domain_app(domain(name), database_url=url, settings=settings))
            )
            for name, url in database_urls.items()
        }


@asynccontextmanager
async def mesh_client(
    domains: dict[str, str], **timeouts: float
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a mesh federating the given domain base URLs."""
    app = create_app(FederationSettings.model_validate({"domains": domains, **timeouts}))
    async with app_client(app) as client:
        yield client


@pytest.fixture(scope="session")
async def mesh(domain_urls: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the mesh over the sample data."""
    async with mesh_client(domain_urls) as client:
        yield client
