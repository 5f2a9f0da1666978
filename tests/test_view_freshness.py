"""Materialized analytics views (shared.storage.view_schema, shared.storage.views): each holds exactly what its
definition computes, a committed write reaches it within the domain's promise, the metadata and
the contract state that promise, and a refresh runs one at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import httpx
import psycopg
import pytest

from services import DOMAINS, domain
from shared.governance.contracts import contract
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import (
    app_client,
    owner_url,
    sample_databases,
    token,
    views_refreshed,
)
from tests.postgres import PostgresServer

VIEWS = {name: [p.source for p in domain(name).products if not p.is_table] for name in DOMAINS}
WRITER = {"Authorization": f"Bearer {token('sales:read', 'sales:write', 'sales:pii')}"}
PROMISE = dt.timedelta(seconds=30)
ORDER = {
    "customer_id": 12,
    "order_date": "2024-10-18",
    "payment_method": "Wire Transfer",
    "sales_rep": "Sarah Mitchell",
    "items": [{"product_id": 4, "quantity": 2, "discount_percent": 12.5}],
}
TOTAL = Decimal("37537.50")  # 2 x 21450.00 x 0.875


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Databases of their own with the sample rows: these tests write."""
    return sample_databases(postgres_servers, "freshness")


@asynccontextmanager
async def sales_service(url: str, refresh_seconds: float) -> AsyncIterator[httpx.AsyncClient]:
    """A Sales service on the database, looking for view changes every `refresh_seconds`."""
    settings = ServiceSettings(view_refresh_seconds=refresh_seconds)
    app = create_domain_app(domain("sales"), database_url=url, settings=settings)
    async with app_client(app, WRITER) as client:
        yield client


def differences(url: str, view: str) -> list[tuple[object, ...]]:
    """Rows of the materialized view and of its definition (computed now) that differ."""
    with psycopg.connect(owner_url(url)) as conn:
        return conn.execute(
            f"(TABLE {view} EXCEPT ALL TABLE live.{view}) "  # literals of this module
            f"UNION ALL (TABLE live.{view} EXCEPT ALL TABLE {view})"
        ).fetchall()


async def lifetime_value(client: httpx.AsyncClient) -> Decimal:
    response = await client.get("/sales/v1/customer-lifetime-value?customer_id=eq.12")
    assert response.status_code == 200, response.text
    return Decimal(str(response.json()[0]["lifetime_value"]))


@pytest.mark.parametrize("name", DOMAINS)
def test_each_loaded_view_holds_exactly_what_its_definition_computes(
    databases: dict[str, str], name: str
) -> None:
    for view in VIEWS[name]:
        assert differences(databases[name], view) == [], view


async def test_a_committed_write_reaches_the_views_within_the_promise(
    databases: dict[str, str],
) -> None:
    assert domain("sales").service_levels.view_freshness == PROMISE
    with psycopg.connect(owner_url(databases["sales"])) as conn:
        (before_write,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
    async with sales_service(databases["sales"], ServiceSettings().view_refresh_seconds) as sales:
        before = await lifetime_value(sales)
        created = await sales.post("/sales/v1/orders", json=ORDER)
        assert created.status_code == 201, created.text
        took = await views_refreshed(sales, "sales")
        assert took < PROMISE.total_seconds()
        assert await lifetime_value(sales) == before + TOTAL
        views = (await sales.get("/sales/v1/metadata")).json()["tables"]
    for view in VIEWS["sales"]:
        assert differences(databases["sales"], view) == [], view
    freshness = views["customer-lifetime-value"]["freshness"]
    assert dt.datetime.fromisoformat(freshness["data_as_of"]) > before_write
    assert freshness["pending_since"] is None
    assert freshness["promise_seconds"] == 30
    assert freshness["mechanism"] == (
        "materialized view, refreshed concurrently when its source tables change"
    )
    assert freshness["refresh_ms"] >= 0
    assert views["sales-summary"]["freshness"] == freshness  # one refresh for every view
    assert "freshness" not in views["orders"]


async def test_without_a_refresh_a_view_stays_as_of_its_last_refresh_and_says_so(
    databases: dict[str, str],
) -> None:
    async with sales_service(databases["sales"], 0) as sales:  # no refresher
        before = await lifetime_value(sales)
        created = await sales.post("/sales/v1/orders", json=ORDER)
        assert created.status_code == 201, created.text
        assert await lifetime_value(sales) == before  # the view is as of its last refresh
        stale = (await sales.get("/sales/v1/metadata")).json()["tables"]
        pending = stale["customer-lifetime-value"]["freshness"]["pending_since"]
        assert pending is not None
        with psycopg.connect(owner_url(databases["sales"]), autocommit=True) as conn:
            # the order's row and its items: two statements, two changes seen
            assert conn.execute("SELECT datamesh_refresh_views()").fetchone() == (2,)
        assert await lifetime_value(sales) == before + TOTAL
        fresh = (await sales.get("/sales/v1/metadata")).json()["tables"]
        assert fresh["customer-lifetime-value"]["freshness"]["pending_since"] is None
        assert (
            fresh["customer-lifetime-value"]["freshness"]["data_as_of"]
            > stale["customer-lifetime-value"]["freshness"]["data_as_of"]
        )


def test_one_refresh_at_a_time_and_nothing_to_do_is_cheap(databases: dict[str, str]) -> None:
    url = databases["marketing"]
    with (
        psycopg.connect(owner_url(url)) as holder,
        psycopg.connect(url, autocommit=True) as service,
    ):
        assert service.execute("SELECT datamesh_refresh_views()").fetchone() == (0,)
        service.execute("UPDATE leads SET lead_score = lead_score WHERE lead_id = 1")
        holder.execute("SELECT pg_advisory_xact_lock(7301202402)")  # a refresh in progress
        assert service.execute("SELECT datamesh_refresh_views()").fetchone() == (-1,)
        holder.rollback()
        assert service.execute("SELECT datamesh_refresh_views()").fetchone() == (1,)
        assert service.execute("SELECT count(*) FROM view_changes").fetchone() == (0,)


@pytest.mark.parametrize("name", DOMAINS)
def test_the_contract_states_the_views_promise(name: str) -> None:
    for product in domain(name).products:
        document = contract(domain(name), product, base_url="http://test")
        (latency,) = [s for s in document["slaProperties"] if s["property"] == "latency"]
        if product.is_table:
            assert (latency["value"], latency["unit"]) == (1, "s")
        else:
            assert (latency["value"], latency["unit"]) == (30, "s")
            assert latency["description"] == (
                "A write committed to the domain's tables is reflected in this view within 30 "
                "seconds (materialized view, refreshed concurrently when its source tables "
                "change; the domain's metadata tells the instant its rows are as of)."
            )
