"""Live metadata of each domain and the mesh catalog: every number measured, none typed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from services import DOMAINS, domain, sample
from shared.governance.metadata import recency_columns
from shared.serving.app import create_domain_app
from tests.conftest import ADMIN, AS_OF, create_database, mesh_client
from tests.postgres import PostgresServer
from tests.servers import served

SAMPLE_COUNTS = {
    "sales": {
        "customers": 15,
        "products": 10,
        "orders": 20,
        "order-items": 41,
        "sales-summary": 7,
        "customer-lifetime-value": 15,
        "product-performance": 10,
    },
    "marketing": {
        "campaigns": 8,
        "leads": 15,
        "campaign-metrics": 728,
        "website-traffic": 3660,
        "campaign-performance": 8,
        "lead-funnel": 4,
    },
}
OWNERS = {"sales": "sales-team@company.com", "marketing": "marketing-team@company.com"}
CLASSIFICATION = {"sales": "confidential", "marketing": "internal"}


def _newest(url: str, source: str, columns: list[str]) -> str | None:
    """The newest value of the columns, read directly from the database."""
    if not columns:
        return None
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        values = [
            conn.execute(f'SELECT max("{column}") FROM "{source}"').fetchone()[0]  # type: ignore[index]
            for column in columns
        ]
    present = [v for v in values if v is not None]
    if not present:
        return None
    newest = max(present)
    return newest.isoformat()


@pytest.mark.parametrize("name", DOMAINS)
async def test_metadata_is_declared_and_measured(
    name: str, sales: httpx.AsyncClient, marketing: httpx.AsyncClient, database_urls: dict[str, str]
) -> None:
    client = sales if name == "sales" else marketing
    response = await client.get(f"/{name}/v1/metadata")
    assert response.status_code == 200
    metadata = response.json()
    declared = domain(name)
    assert metadata["domain"] == name
    assert metadata["owner"] == OWNERS[name]
    assert metadata["data_classification"] == CLASSIFICATION[name]
    assert metadata["description"] == declared.description
    assert metadata["update_frequency"] == declared.update_frequency
    assert list(metadata["tables"]) == [p.name for p in declared.products]
    for product in declared.products:
        entry = metadata["tables"][product.name]
        assert entry["row_count"] == SAMPLE_COUNTS[name][product.name], product.name
        expected = _newest(database_urls[name], product.source, recency_columns(product))
        assert entry["last_updated"] == expected, product.name
        assert [c["name"] for c in entry["columns"]] == list(product.column_names)
        assert [c["classification"] for c in entry["columns"]] == [
            str(c.classification) for c in product.columns
        ]


@pytest.fixture(scope="module")
def fresh_sales_url(postgres_servers: dict[str, PostgresServer]) -> str:
    """A sales database of its own (writes here do not disturb other tests)."""
    return create_database(postgres_servers, "sales", "sales_metadata", sample("sales")(AS_OF))


@pytest.fixture(scope="module")
async def fresh_sales(fresh_sales_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A sales service on that database."""
    url = fresh_sales_url
    app = create_domain_app(domain("sales"), database_url=url)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:
            yield client, url


async def test_metadata_follows_the_data(fresh_sales: tuple[httpx.AsyncClient, str]) -> None:
    client, url = fresh_sales
    before = (await client.get("/sales/v1/metadata")).json()["tables"]["customers"]
    assert before["row_count"] == 15
    assert before["last_updated"] == "2024-10-06T10:00:00+00:00"

    added = dt.datetime(2024, 10, 17, 8, 30, tzinfo=dt.UTC)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO customers (customer_name, email, phone, country, industry, company_size,"
            " created_at, updated_at) VALUES ('Fjord Analytics', 'ops@fjord.example', NULL,"
            " 'Norway', 'Energy', 'Small', %s, %s)",
            (added, added),
        )
    after = (await client.get("/sales/v1/metadata")).json()["tables"]["customers"]
    assert after["row_count"] == 16
    assert after["last_updated"] == "2024-10-17T08:30:00+00:00"


async def test_quality_score_comes_from_the_latest_run(
    fresh_sales: tuple[httpx.AsyncClient, str],
) -> None:
    client, _ = fresh_sales
    run = await client.post("/sales/v1/quality/runs")
    assert run.status_code == 201
    latest = (await client.get("/sales/v1/quality")).json()
    metadata = (await client.get("/sales/v1/metadata")).json()["tables"]
    scores = {name: entry["quality_score"] for name, entry in metadata.items()}
    assert scores == {name: entry["score"] for name, entry in latest["products"].items()}
    assert all(isinstance(score, float) for score in scores.values())


async def test_catalog_lists_every_domain_product_and_metric(mesh: httpx.AsyncClient) -> None:
    catalog = (await mesh.get("/mesh/v1/catalog")).json()
    assert [d["name"] for d in catalog["domains"]] == ["sales", "marketing"]
    for entry in catalog["domains"]:
        assert entry["status"] == "available"
        assert entry["owner"] == OWNERS[entry["name"]]
        assert {p["name"]: p["row_count"] for p in entry["products"]} == SAMPLE_COUNTS[
            entry["name"]
        ]
        for product in entry["products"]:
            assert product["contract"] == (
                f"{entry['url']}/{entry['name']}/v1/products/{product['name']}/contract"
            )
            assert product["classification"] == CLASSIFICATION[entry["name"]]
            if product["kind"] == "view":  # as the domain's metadata says it
                assert product["freshness"]["promise_seconds"] == 30
                assert product["freshness"]["pending_since"] is None
            else:
                assert "freshness" not in product
    assert [m["name"] for m in catalog["metrics"]] == [
        "lead-to-customer-journey",
        "campaign-roi",
        "customer-acquisition-cost",
        "channel-effectiveness",
        "product-campaign-correlation",
        "lead-source-effectiveness",
    ]
    roi = next(m for m in catalog["metrics"] if m["name"] == "campaign-roi")
    assert roi["inputs"] == [
        "marketing/campaigns",
        "marketing/leads",
        "sales/customers",
        "sales/orders",
    ]


def _mentions(texts: list[str], word: str) -> bool:
    return any(word in text.lower() for text in texts)


async def test_catalog_search(mesh: httpx.AsyncClient) -> None:
    found = (await mesh.get("/mesh/v1/catalog", params={"q": "EMAIL"})).json()
    products = {(d["name"], p["name"]) for d in found["domains"] for p in d["products"]}
    expected = {
        (name, p.name)
        for name in DOMAINS
        for p in domain(name).products
        if _mentions(
            [p.name, p.description] + [t for c in p.columns for t in (c.name, c.description)],
            "email",
        )
    }
    assert products == expected
    assert {("sales", "customers"), ("marketing", "leads")} <= products
    assert ("sales", "orders") not in products
    assert "lead-to-customer-journey" in [m["name"] for m in found["metrics"]]
    assert "customer-acquisition-cost" not in [m["name"] for m in found["metrics"]]
    nothing = (await mesh.get("/mesh/v1/catalog", params={"q": "no-such-words"})).json()
    assert [p for d in nothing["domains"] for p in d["products"]] == []
    assert nothing["metrics"] == []


async def test_catalog_lists_a_domain_that_is_down_as_unavailable(
    domain_urls: dict[str, str], database_urls: dict[str, str]
) -> None:
    marketing = create_domain_app(domain("marketing"), database_url=database_urls["marketing"])
    with served(marketing) as marketing_url:
        pass  # started and stopped: nothing listens there any more
    domains = {"sales": domain_urls["sales"], "marketing": marketing_url}
    async with mesh_client(domains) as mesh:
        catalog = (await mesh.get("/mesh/v1/catalog")).json()
        quality = (await mesh.get("/mesh/v1/quality")).json()
    assert [(d["name"], d["status"]) for d in catalog["domains"]] == [
        ("sales", "available"),
        ("marketing", "unavailable"),
    ]
    assert "marketing" in catalog["domains"][1]["error"]
    assert len(catalog["domains"][0]["products"]) == 7
    assert [(d["domain"], d["status"]) for d in quality["domains"]][1] == (
        "marketing",
        "unavailable",
    )
