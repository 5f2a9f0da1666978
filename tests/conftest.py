"""Fixtures: one real PostgreSQL server per domain (embedded), migrated with Alembic and
loaded with the sample data as of 2024-10-18; the apps are called over ASGI with httpx."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services import DOMAINS, domain, sample
from shared import migrations
from shared.app import create_domain_app
from shared.embedded import EmbeddedPostgres
from shared.sample_data import load_if_empty
from shared.settings import MeshSettings

AS_OF = dt.date(2024, 10, 18)


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each domain's migrated database with the sample data, on its own embedded server."""
    root: Path = tmp_path_factory.mktemp("postgres")
    servers = [EmbeddedPostgres(root, name) for name in DOMAINS]
    urls: dict[str, str] = {}
    try:
        for server in servers:
            database = domain(server.name).database
            server.start((database,))
            urls[server.name] = server.url(database)
            migrations.upgrade(server.name, urls[server.name])
            rows = sample(server.name)(AS_OF)
            asyncio.run(load_if_empty(domain(server.name), urls[server.name], rows))
        yield urls
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def settings() -> MeshSettings:
    return MeshSettings(json_page_size=1000, max_page_size=10_000, stream_batch_rows=100)


async def _client(name: str, url: str, settings: MeshSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain(name), database_url=url, settings=settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(scope="session")
async def sales(
    database_urls: dict[str, str], settings: MeshSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the sales service."""
    async for client in _client("sales", database_urls["sales"], settings):
        yield client


@pytest.fixture(scope="session")
async def marketing(
    database_urls: dict[str, str], settings: MeshSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the marketing service."""
    async for client in _client("marketing", database_urls["marketing"], settings):
        yield client
