"""GET /metrics (docs/observability.md): the families every service exports, with exact values
after known requests, labels that never carry a raw path, a query value or PII, and with several
workers the numbers of the whole service."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import domain
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import ADMIN, app_client, owner_url, sample_databases, token
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (prometheus-client's own parser)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    return sample_databases(postgres_servers, "metrics")


@pytest.fixture
async def sales(databases: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(metrics_state_seconds=0, view_refresh_seconds=0)
    app = create_domain_app(domain("sales"), database_url=databases["sales"], settings=settings)
    async with app_client(app) as client:
        yield client


def count(url: str, table: str) -> int:
    with psycopg.connect(owner_url(url)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


async def test_requests_are_counted_by_route_template_method_and_status(
    sales: httpx.AsyncClient,
) -> None:
    before = await scrape(sales)
    assert (await sales.get("/sales/v1/customers", params={"limit": 2})).status_code == 200
    assert (await sales.get("/sales/v1/customers", params={"limit": 3})).status_code == 200
    assert (await sales.get("/sales/v1/customers/1")).status_code == 200
    assert (await sales.get("/sales/v1/customers/999999")).status_code == 404
    assert (
        await sales.get("/sales/v1/customers", headers={"Authorization": ""})
    ).status_code == 401
    after = await scrape(sales)
    requests = "datamesh_http_requests_total"
    listed = {"service": "sales", "route": "/sales/v1/customers", "method": "GET"}
    one = {"service": "sales", "route": "/sales/v1/customers/{customer_id}", "method": "GET"}
    assert delta(before, after, requests, **listed, status="200") == 2
    assert delta(before, after, requests, **listed, status="401") == 1
    assert delta(before, after, requests, **one, status="200") == 1
    assert delta(before, after, requests, **one, status="404") == 1
    histogram = "datamesh_http_request_duration_seconds"
    assert delta(before, after, f"{histogram}_count", **listed) == 3
    assert delta(before, after, f"{histogram}_bucket", **listed, le="+Inf") == 3
    buckets = sorted(
        {
            float(dict(labels)["le"])
            for name, labels in after
            if name == f"{histogram}_bucket" and dict(labels).get("route") == "/sales/v1/customers"
        }
    )
    assert buckets[:9] == [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]


async def test_rows_and_bytes_served_by_product_and_format(sales: httpx.AsyncClient) -> None:
    before = await scrape(sales)
    page = await sales.get("/sales/v1/orders", params={"limit": 4})
    text = await sales.get("/sales/v1/orders", params={"limit": 5, "format": "csv"})
    arrow = await sales.get("/sales/v1/orders", params={"limit": 6, "format": "arrow"})
    after = await scrape(sales)
    rows, sent = "datamesh_rows_served_total", "datamesh_bytes_served_total"
    for response, kind, n in ((page, "json", 4), (text, "csv", 5), (arrow, "arrow", 6)):
        assert response.status_code == 200
        labels = {"service": "sales", "product": "orders", "format": kind}
        assert delta(before, after, rows, **labels) == n
        assert delta(before, after, sent, **labels) == len(response.content)


async def test_writes_are_counted_accepted_refused_by_reason_and_replayed(
    sales: httpx.AsyncClient,
) -> None:
    body = {
        "customer_name": "Metered",
        "email": "metered@metrics.example",
        "country": "USA",
        "company_size": "Small",
    }
    key = {"Idempotency-Key": "metrics-once"}
    before = await scrape(sales)
    assert (await sales.post("/sales/v1/customers", json=body, headers=key)).status_code == 201
    replay = await sales.post("/sales/v1/customers", json=body, headers=key)
    assert replay.headers["idempotent-replayed"] == "true"
    refused = await sales.post("/sales/v1/customers", json={"customer_name": "No email"})
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_body"
    masked = {"Authorization": f"Bearer {token('sales:read', 'sales:write')}"}
    pii = await sales.post("/sales/v1/customers", json=body, headers=masked)
    assert pii.json()["code"] == "pii_column"
    after = await scrape(sales)
    writes = {"service": "sales", "product": "customers", "operation": "create"}
    assert delta(before, after, "datamesh_writes_total", **writes, outcome="accepted") == 1
    assert delta(before, after, "datamesh_writes_total", **writes, outcome="replayed") == 1
    assert delta(before, after, "datamesh_writes_total", **writes, outcome="refused") == 2
    reasons = {"service": "sales", "product": "customers"}
    refusals = "datamesh_write_refusals_total"
    assert delta(before, after, refusals, **reasons, reason="invalid_body") == 1
    assert delta(before, after, refusals, **reasons, reason="pii_column") == 1


async def test_no_label_carries_a_raw_path_a_query_value_or_pii(sales: httpx.AsyncClient) -> None:
    email = (await sales.get("/sales/v1/customers/2")).json()["email"]
    await sales.get("/sales/v1/customers", params={"email": f"eq.{email}"})
    await sales.get(f"/sales/v1/customers/{email}")
    await sales.get("/sales/v1/nothing-here/secret-value")
    text = (await sales.get("/metrics")).text
    for secret in (email, email.split("@")[0], "secret-value", "nothing-here"):
        assert secret not in text
    routes = {
        dict(labels)["route"]
        for name, labels in parse(text)
        if name == "datamesh_http_requests_total" and dict(labels)["service"] == "sales"
    }
    # templates: each segment a declared name or a {parameter}, never a key, a value or PII
    assert "/sales/v1/customers/{customer_id}" in routes
    for route in routes - {"unmatched"}:
        for segment in route.split("/")[1:]:
            assert re.fullmatch(
                r"[a-z][a-z0-9_.-]*(:batch)?|\d+\.\d+\.\d+|\{[a-z_:]+\}", segment
            ), route


async def test_the_pool_and_the_products_state_are_exported(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    samples = await scrape(sales)
    # the pools of every sales service in this process (other tests' too): one more adds its own
    settings = ServiceSettings(metrics_state_seconds=0, view_refresh_seconds=0, pool_size=3)
    another = create_domain_app(domain("sales"), database_url=databases["sales"], settings=settings)
    async with app_client(another) as client:
        more = await scrape(client)
    assert delta(samples, more, "datamesh_db_pool_size", service="sales") == 3
    for family in ("pool_waits", "pool_timeouts", "statement_timeouts"):
        assert ("datamesh_db_" + family + "_total", frozenset({("service", "sales")})) in samples
    for product, table in (("customers", "customers"), ("orders", "orders")):
        rows = value(samples, "datamesh_product_rows", service="sales", product=product)
        assert rows == count(databases["sales"], table)
    sla = value(
        samples, "datamesh_product_freshness_sla_seconds", service="sales", product="orders"
    )
    assert sla == domain("sales").product("orders").freshness.total_seconds()  # type: ignore[union-attr]
    age = value(
        samples, "datamesh_product_freshness_age_seconds", service="sales", product="orders"
    )
    newest = "SELECT extract(epoch FROM now() - max(order_date)::timestamptz) FROM orders"
    with psycopg.connect(owner_url(databases["sales"])) as conn:
        row = conn.execute(newest).fetchone()
        assert row is not None
    assert abs(age - float(row[0])) < 120


async def test_quality_figures_are_those_of_the_latest_run(sales: httpx.AsyncClient) -> None:
    run = (await sales.post("/sales/v1/quality/runs")).json()
    samples = await scrape(sales)
    assert value(samples, "datamesh_quality_score", service="sales") == run["score"]
    for product, tally in run["products"].items():
        labels = {"service": "sales", "product": product}
        assert value(samples, "datamesh_product_quality_score", **labels) == tally["score"]
    failing = {
        (dict(labels)["product"], dict(labels)["check"], dict(labels)["severity"]): v
        for (name, labels), v in samples.items()
        if name == "datamesh_quality_check_failing"
    }
    expected = {
        (r["product"], r["check"], r["severity"]): float(r["outcome"] in ("fail", "error"))
        for r in run["results"]
    }
    assert failing == expected
    finished = value(samples, "datamesh_quality_last_run_timestamp_seconds", service="sales")
    assert abs(finished - time.time()) < 60


async def test_the_mesh_exports_its_fetches_and_circuits(mesh: httpx.AsyncClient) -> None:
    before = await scrape(mesh)
    assert (await mesh.get("/mesh/v1/campaign-roi")).status_code == 200
    after = await scrape(mesh)
    fetch = "datamesh_mesh_fetch_duration_seconds_count"
    # campaign-roi reads marketing's campaigns and leads, and sales' orders (metrics.py)
    from services.federation.metrics import METRICS

    metric = next(m for m in METRICS if m.product.name == "campaign-roi")
    for source in metric.inputs:
        labels = {"service": "mesh", "domain": source.domain, "product": source.product}
        assert delta(before, after, fetch, **labels) == 1
    for name in {source.domain for source in metric.inputs}:
        assert value(after, "datamesh_mesh_circuit_state", service="mesh", domain=name) == 0
    requests = {"service": "mesh", "route": "/mesh/v1/campaign-roi", "method": "GET"}
    assert delta(before, after, "datamesh_http_requests_total", **requests, status="200") == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_with_two_workers_a_scrape_counts_both(databases: dict[str, str]) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SALES_DATABASE_URL": databases["sales"],
        "DATAMESH_VIEW_REFRESH_SECONDS": "0",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.serving.server",
            "services.sales.app:app",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/sales/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        for _ in range(60):  # a new connection each: the workers take turns accepting
            response = httpx.get(f"{base}/sales/v1/products", params={"limit": 1}, headers=ADMIN)
            assert response.status_code == 200
        labels = {"service": "sales", "route": "/sales/v1/products", "method": "GET"}
        totals = set()
        for _ in range(10):
            samples = parse(httpx.get(f"{base}/metrics").text)
            totals.add(value(samples, "datamesh_http_requests_total", **labels, status="200"))
        # every scrape, whichever worker answered it, counts all 60 requests, and the pool is
        # both workers' pools
        assert totals == {60.0}
        pool = ServiceSettings().pool_size
        assert value(samples, "datamesh_db_pool_size", service="sales") == 2 * pool
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
