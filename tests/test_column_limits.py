"""Declared column limits (issue 12): date ranges and text lengths refused by the write API,
held by the schema's CHECK constraints, stated in OpenAPI; every read, quality run, metadata
and mesh metric robust to a value outside them that a row may still hold (PostgreSQL's
infinity); the owner's DELETE and correction to repair such a row; a failing view refresh
reported. On databases of their own: these tests write and break rows on purpose."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import hypothesis
import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from alembic import command

from services import DOMAINS, domain
from services.federation.metrics import METRICS
from shared.declarations.checks import AcceptedValues
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.column_schema import declared_limits
from shared.storage.migrations import alembic_config
from shared.writing.inputs import BodyShape, InvalidBody, correction_shape, validate_body
from shared.writing.routes import TableWriter
from shared.writing.store import database_problem
from tests.conftest import (
    app_client,
    mesh_client,
    owner_url,
    sample_databases,
    token,
)
from tests.postgres import PostgresServer
from tests.servers import served

PROBLEM_JSON = "application/problem+json"
WRITER = {
    name: {"Authorization": f"Bearer {token(f'{name}:read', f'{name}:write', f'{name}:pii')}"}
    for name in DOMAINS
}
OWNER = {  # the domain's own admin: writes and corrections, no other domain
    name: {
        "Authorization": "Bearer "
        + token(f"{name}:read", f"{name}:write", f"{name}:pii", f"{name}:admin", subject="fixer")
    }
    for name in DOMAINS
}


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Databases of their own with the sample rows."""
    return sample_databases(postgres_servers, "limits")


@pytest.fixture(scope="module")
async def clients(
    databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    found: dict[str, httpx.AsyncClient] = {}
    async with (
        app_client(
            create_domain_app(domain("sales"), database_url=databases["sales"], settings=settings),
            WRITER["sales"],
        ) as sales,
        app_client(
            create_domain_app(
                domain("marketing"), database_url=databases["marketing"], settings=settings
            ),
            WRITER["marketing"],
        ) as marketing,
    ):
        found = {"sales": sales, "marketing": marketing}
        yield found


@pytest.fixture
def sales(clients: dict[str, httpx.AsyncClient]) -> httpx.AsyncClient:
    return clients["sales"]


@pytest.fixture
def marketing(clients: dict[str, httpx.AsyncClient]) -> httpx.AsyncClient:
    return clients["marketing"]


def owner_sql(url: str, *statements: str) -> list[Any]:
    """Run statements as the schema owner (bypassing the API); the last one's rows."""
    rows: list[Any] = []
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def order(order_date: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": 3,
        "payment_method": "Wire Transfer",
        "sales_rep": "Dana Lee",
        "items": [{"product_id": 2, "quantity": 1}],
    }
    if order_date is not None:
        body["order_date"] = order_date
    return body


def campaign(**changes: Any) -> dict[str, Any]:
    return {
        "campaign_name": "Limits",
        "campaign_type": "Webinar",
        "channel": "Email",
        "start_date": "2024-10-01",
        "end_date": "2024-10-31",
        "budget": 1000,
        **changes,
    }


# --- 1a. dates within a declared range --------------------------------------------------


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1899-12-31", "2200-01-01"])
async def test_an_order_date_outside_the_declared_range_is_a_422_naming_column_value_and_range(
    sales: httpx.AsyncClient, databases: dict[str, str], day: str
) -> None:
    before = owner_sql(databases["sales"], "SELECT count(*) FROM orders")
    response = await sales.post("/sales/v1/orders", json=order(day))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["errors"] == [
        {
            "field": "order_date",
            "message": f"{day} is outside the range of column 'order_date': "
            "1900-01-01 to 2199-12-31",
        }
    ]
    assert owner_sql(databases["sales"], "SELECT count(*) FROM orders") == before


async def test_the_range_bounds_themselves_are_accepted(sales: httpx.AsyncClient) -> None:
    for day in ("1900-01-01", "2199-12-31"):
        response = await sales.post("/sales/v1/orders", json=order(day))
        assert response.status_code == 201, response.text
        assert response.json()["order_date"] == day


async def test_campaign_end_date_and_the_daily_key_dates_outside_the_range_are_refused(
    marketing: httpx.AsyncClient,
) -> None:
    response = await marketing.post("/marketing/v1/campaigns", json=campaign(end_date="9999-12-31"))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["end_date"]
    day = {"impressions": 10, "clicks": 1, "conversions": 0, "cost_per_click": 1}
    response = await marketing.put("/marketing/v1/campaign-metrics/1/9999-12-31", json=day)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "field": "metric_date",
            "message": "9999-12-31 is outside the range of column 'metric_date': "
            "1900-01-01 to 2199-12-31",
        }
    ]
    traffic = {"visitors": 1, "page_views": 1, "bounce_rate": 1, "avg_time_on_page": 1}
    response = await marketing.put(
        "/marketing/v1/website-traffic/0001-01-01/Organic", params={"page_url": "/"}, json=traffic
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["visit_date"]


def _constraints(url: str) -> dict[str, tuple[str, bool]]:
    return {
        name: (definition, valid)
        for name, definition, valid in owner_sql(
            url,
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE contype = 'c' AND (conname LIKE '%\\_range\\_check' "
            "OR conname LIKE '%\\_length\\_check')",
        )
    }


@pytest.mark.parametrize("name", DOMAINS)
def test_the_schema_holds_every_declared_limit_as_a_validated_check_constraint(
    name: str, databases: dict[str, str]
) -> None:
    found = _constraints(databases[name])
    declared = {limit.name for limit in declared_limits(domain(name))}
    assert set(found) == declared
    assert all(valid for _, valid in found.values())
    if name == "sales":
        assert found["orders_order_date_range_check"][0] == (
            "CHECK (((order_date >= '1900-01-01'::date) AND (order_date <= '2199-12-31'::date)))"
        )
        assert found["customers_customer_name_length_check"][0] == (
            "CHECK ((char_length(customer_name) <= 200))"
        )
        assert found["customers_email_length_check"][0] == "CHECK ((char_length(email) <= 254))"


async def test_the_database_refuses_what_the_api_would_for_every_other_writer(
    databases: dict[str, str],
) -> None:
    conn = await asyncpg.connect(databases["sales"])  # the service's own role
    try:
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await conn.execute("UPDATE orders SET order_date = 'infinity' WHERE order_id = 1")
        assert refused.value.constraint_name == "orders_order_date_range_check"
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await conn.execute("UPDATE customers SET customer_name = repeat('x', 201)")
        assert refused.value.constraint_name == "customers_customer_name_length_check"
    finally:
        await conn.close()


def test_the_migration_leaves_a_limit_not_valid_where_existing_rows_break_it(
    postgres_servers: dict[str, PostgresServer],
) -> None:
    server = postgres_servers["sales"]
    server.ensure_database("sales_limits_upgrade")
    url = server.url("sales_limits_upgrade")
    command.upgrade(alembic_config("sales", url), "0004_sales_matviews")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers (customer_name, email, country, company_size) "
            "VALUES ('Old Co', 'old@example.com', 'USA', 'Small')"
        )
        conn.execute(
            "INSERT INTO orders (customer_id, order_date, order_status, total_amount, "
            "payment_method, sales_rep, region) VALUES "
            "(1, 'infinity', 'Pending', 0, 'Wire', 'Rep', 'North America')"
        )
    command.upgrade(alembic_config("sales", url), "heads")
    with psycopg.connect(url, autocommit=True) as conn:
        valid: dict[str, bool] = dict(
            conn.execute(
                "SELECT conname, convalidated FROM pg_constraint WHERE conname IN "
                "('orders_order_date_range_check', 'customers_customer_name_length_check')"
            ).fetchall()
        )
        assert valid == {
            "orders_order_date_range_check": False,  # the old row keeps it from validating
            "customers_customer_name_length_check": True,
        }
        with pytest.raises(psycopg.errors.CheckViolation):  # new rows keep it all the same
            conn.execute("UPDATE orders SET order_date = '-infinity'")


# --- 1b. every read of a row holding infinity -------------------------------------------


@pytest.fixture(scope="module")
def infinite_rows(databases: dict[str, str]) -> dict[str, Any]:
    """An order dated infinity and a lead created at -infinity, written by the owner with
    their constraints dropped (as rows from before the constraints would be)."""
    sales_url, marketing_url = databases["sales"], databases["marketing"]
    owner_sql(
        sales_url,
        "ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_order_date_range_check",
        "INSERT INTO orders (customer_id, order_date, order_status, total_amount, "
        "payment_method, sales_rep, region) VALUES "
        "(3, 'infinity', 'Pending', 0, 'Wire Transfer', 'Dana Lee', 'North America')",
        "ALTER TABLE orders ADD CONSTRAINT orders_order_date_range_check CHECK "
        "(order_date BETWEEN DATE '1900-01-01' AND DATE '2199-12-31') NOT VALID",
    )
    (order_id,) = owner_sql(sales_url, "SELECT max(order_id) FROM orders")[0]
    owner_sql(
        marketing_url,
        "ALTER TABLE leads DROP CONSTRAINT IF EXISTS leads_created_at_range_check",
        "ALTER TABLE leads DROP CONSTRAINT leads_converted_after_created_check",
        "INSERT INTO leads (first_name, last_name, email, lead_source, lead_score, status, "
        "campaign_id, created_at) VALUES ('Ina', 'Finite', 'ina@example.com', 'Email', 5, "
        "'New', 1, '-infinity')",
    )
    (lead_id,) = owner_sql(marketing_url, "SELECT max(lead_id) FROM leads")[0]
    return {"order_id": order_id, "lead_id": lead_id}


async def test_every_format_answers_a_row_holding_infinite_dates(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient, infinite_rows: dict[str, Any]
) -> None:
    order_id, lead_id = infinite_rows["order_id"], infinite_rows["lead_id"]
    orders = {"order_id": f"eq.{order_id}", "select": "order_id,order_date"}
    leads = {"lead_id": f"eq.{lead_id}", "select": "lead_id,created_at"}
    cases = [(sales, "/sales/v1/orders", orders, "order_date", "infinity")]
    cases.append((marketing, "/marketing/v1/leads", leads, "created_at", "-infinity"))
    for client, path, params, column, text in cases:
        response = await client.get(path, params=params)
        assert response.status_code == 200
        assert response.json()[0][column] == text
        response = await client.get(path, params={**params, "format": "ndjson"})
        assert json.loads(response.text)[column] == text
        response = await client.get(path, params={**params, "format": "csv"})
        assert next(iter(csv.DictReader(io.StringIO(response.text))))[column] == text
        response = await client.get(path, params={**params, "format": "arrow"})
        assert response.status_code == 200
        table = pa.ipc.open_stream(response.content).read_all()
        assert table.column(column).to_pylist() == [None]
        response = await client.get(path, params={**params, "format": "parquet"})
        assert response.status_code == 200
        assert pq.read_table(io.BytesIO(response.content)).column(column).to_pylist() == [None]
    # the whole product, the infinite row among the others
    response = await sales.get("/sales/v1/orders", params={"format": "arrow"})
    dates = pa.ipc.open_stream(response.content).read_all().column("order_date").to_pylist()
    assert dates.count(None) == 1 and len(dates) == 20 + 2 + 1  # sample, bounds, infinity
    response = await sales.get(f"/sales/v1/orders/{order_id}")
    assert (response.status_code, response.json()["order_date"]) == (200, "infinity")


async def test_quality_and_metadata_answer_with_infinite_dates(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient, infinite_rows: dict[str, Any]
) -> None:
    for client, name in ((sales, "sales"), (marketing, "marketing")):
        run = await client.post(f"/{name}/v1/quality/runs", headers=OWNER[name])
        assert run.status_code == 201, run.text
        assert (await client.get(f"/{name}/v1/quality")).status_code == 200
        assert (await client.get(f"/{name}/v1/metadata")).status_code == 200
    latest = (await sales.get("/sales/v1/quality")).json()
    (result,) = [r for r in latest["results"] if r["check"] == "freshness:order_date"]
    assert (result["outcome"], result["measured_value"]) == ("fail", None)
    assert result["message"] == (
        "an infinite value (-Infinity hours old); expected age <= 336 h (newest infinity)"
    )
    metadata = (await sales.get("/sales/v1/metadata")).json()
    assert metadata["tables"]["orders"]["last_updated"] == "2199-12-31"  # the newest finite


async def test_the_mesh_metrics_answer_with_infinite_dates(
    databases: dict[str, str], settings: ServiceSettings, infinite_rows: dict[str, Any]
) -> None:
    apps = {
        name: create_domain_app(domain(name), database_url=databases[name], settings=settings)
        for name in DOMAINS
    }
    with served(apps["sales"]) as sales_url, served(apps["marketing"]) as marketing_url:
        async with mesh_client({"sales": sales_url, "marketing": marketing_url}) as mesh:
            statuses = {m.name: (await mesh.get(f"/mesh/v1/{m.name}")).status_code for m in METRICS}
    assert statuses == {m.name: 200 for m in METRICS}


# --- 1c. the owner repairs any row: DELETE and corrections ----------------------------


async def test_an_admin_correction_sets_a_column_no_patch_may_and_is_audited(
    sales: httpx.AsyncClient,
    databases: dict[str, str],
    infinite_rows: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    order_id = infinite_rows["order_id"]
    path = f"/sales/v1/corrections/orders/{order_id}"
    body = {"order_date": "2024-10-01"}
    patched = await sales.patch(f"/sales/v1/orders/{order_id}", json=body)
    assert patched.status_code == 422  # order_date is not a PATCH's
    refused = await sales.patch(path, json=body)  # a writer is not an admin
    assert (refused.status_code, refused.json()["scope"]) == (403, "sales:admin")
    with caplog.at_level(logging.INFO, logger="datamesh.access"):
        response = await sales.patch(path, json=body, headers=OWNER["sales"])
    assert response.status_code == 200, response.text
    assert response.json()["order_date"] == "2024-10-01"
    assert (
        response.headers["etag"]
        == (await sales.get(f"/sales/v1/orders/{order_id}")).headers["etag"]
    )
    assert owner_sql(
        databases["sales"], f"SELECT order_date::text FROM orders WHERE order_id = {order_id}"
    ) == [("2024-10-01",)]
    audits = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith(".audit")]
    assert audits == [
        {
            "audit": "correction",
            "subject": "fixer",
            "method": "PATCH",
            "path": path,
            "product": "orders",
            "key": str(order_id),
            "columns": ["order_date"],
        }
    ]
    # and the constraint can now be validated: no row breaks it any more
    owner_sql(
        databases["sales"], "ALTER TABLE orders VALIDATE CONSTRAINT orders_order_date_range_check"
    )


async def test_a_correction_is_checked_by_the_declarations_and_the_database(
    sales: httpx.AsyncClient,
) -> None:
    path = "/sales/v1/corrections/orders/1"
    response = await sales.patch(path, json={"order_date": "9999-12-31"}, headers=OWNER["sales"])
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["order_date"]
    response = await sales.patch(path, json={"customer_id": 999}, headers=OWNER["sales"])
    assert (response.status_code, response.json()["code"]) == (422, "foreign_key_violation")
    response = await sales.patch(path, json={}, headers=OWNER["sales"])
    assert response.status_code == 422
    missing = await sales.patch(
        "/sales/v1/corrections/orders/999999", json={"sales_rep": "X"}, headers=OWNER["sales"]
    )
    assert missing.status_code == 404
    # a table without writes of its own is correctable too
    item = await sales.patch(
        "/sales/v1/corrections/order-items/1", json={"quantity": 3}, headers=OWNER["sales"]
    )
    assert (item.status_code, item.json()["quantity"]) == (200, 3)


async def test_delete_removes_an_order_with_its_items_and_refuses_a_referenced_customer(
    sales: httpx.AsyncClient, databases: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    created = (await sales.post("/sales/v1/orders", json=order("2024-10-02"))).json()
    order_id = created["order_id"]
    with caplog.at_level(logging.INFO, logger="datamesh.access"):
        response = await sales.delete(f"/sales/v1/orders/{order_id}")
    assert (response.status_code, response.content) == (204, b"")
    assert (await sales.get(f"/sales/v1/orders/{order_id}")).status_code == 404
    assert owner_sql(
        databases["sales"], f"SELECT count(*) FROM order_items WHERE order_id = {order_id}"
    ) == [(0,)]
    assert [json.loads(r.getMessage())["audit"] for r in caplog.records if ".audit" in r.name] == [
        "deletion"
    ]
    again = await sales.delete(f"/sales/v1/orders/{order_id}")
    assert again.status_code == 404
    referenced = await sales.delete("/sales/v1/customers/3")
    assert referenced.status_code == 409
    assert referenced.json()["code"] == "still_referenced"
    assert referenced.json()["referenced_by"] == "orders"
    assert referenced.json()["constraint"] == "orders_customer_id_fkey"
    assert (await sales.get("/sales/v1/customers/3")).status_code == 200
    stale = await sales.delete("/sales/v1/orders/1", headers={"If-Match": '"stale"'})
    assert stale.status_code == 412


async def test_a_reader_may_not_delete(sales: httpx.AsyncClient) -> None:
    reader = {"Authorization": f"Bearer {token('sales:read')}"}
    response = await sales.delete("/sales/v1/orders/1", headers=reader)
    assert response.status_code == 403


# --- 2. text lengths ------------------------------------------------------------------------


async def test_a_customer_name_longer_than_declared_is_a_422(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    body = {"email": "long@example.com", "country": "USA", "company_size": "Small"}
    response = await sales.post("/sales/v1/customers", json={**body, "customer_name": "x" * 3000})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "customer_name",
            "message": "3000 characters; column 'customer_name' holds at most 200",
        }
    ]
    response = await sales.post("/sales/v1/customers", json={**body, "customer_name": "é" * 200})
    assert response.status_code == 201


async def test_a_20kb_page_url_key_is_a_400_naming_it(marketing: httpx.AsyncClient) -> None:
    traffic = {"visitors": 1, "page_views": 1, "bounce_rate": 1, "avg_time_on_page": 1}
    response = await marketing.put(
        "/marketing/v1/website-traffic/2024-10-18/Organic",
        params={"page_url": "/" + "p" * 20_000},
        json=traffic,
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "page_url", "message": "20001 characters; column 'page_url' holds at most 500"}
    ]


async def test_a_value_too_large_for_an_index_is_a_422_naming_the_column(
    databases: dict[str, str],
) -> None:
    url = databases["marketing"]
    owner_sql(
        url, "ALTER TABLE website_traffic DROP CONSTRAINT website_traffic_page_url_length_check"
    )
    insert = (
        "INSERT INTO website_traffic (visit_date, page_url, source, visitors, page_views, "
        "bounce_rate, avg_time_on_page) VALUES ('2024-10-18', $1, 'Organic', 1, 1, 1, 1)"
    )
    refusals = []
    conn = await asyncpg.connect(url)
    try:
        # beyond the btree maximum (the index named), then beyond a page (no name given)
        for length in (2_800, 20_000):
            with pytest.raises(asyncpg.ProgramLimitExceededError) as refused:
                await conn.execute(insert, "/" + secrets.token_urlsafe(length)[:length])
            refusals.append(refused.value)
    finally:
        await conn.close()
        owner_sql(
            url,
            "ALTER TABLE website_traffic ADD CONSTRAINT website_traffic_page_url_length_check "
            "CHECK (char_length(page_url) <= 500)",
        )
    named, unnamed = (database_problem(r, domain("marketing")) for r in refusals)
    assert named is not None and unnamed is not None
    assert (named.status, named.code, unnamed.status, unnamed.code) == (
        422,
        "value_too_large",
        422,
        "value_too_large",
    )
    assert named.extra["fields"] == ["visit_date", "page_url", "source"]
    assert named.extra["constraint"] == "website_traffic_visit_date_page_url_source_key"
    assert named.detail == (
        "A value of website-traffic (visit_date, page_url, source) is too large for the database "
        "to store or index; shorten it."
    )
    assert unnamed.extra["fields"] == []


async def _freshness(client: httpx.AsyncClient, view: str) -> dict[str, Any]:
    metadata = (await client.get("/sales/v1/metadata")).json()
    freshness: dict[str, Any] = metadata["tables"][view]["freshness"]
    return freshness


async def _until(client: httpx.AsyncClient, failing: bool) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        freshness = await _freshness(client, "customer-lifetime-value")
        if (freshness["failing_since"] is not None) == failing:
            return freshness
        assert time.monotonic() - started < 30, freshness
        await asyncio.sleep(0.05)


async def test_a_failing_view_refresh_is_reported_in_the_metadata_and_logged(
    sales: httpx.AsyncClient, databases: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url = databases["sales"]
    assert (await _freshness(sales, "customer-lifetime-value"))["failing_since"] is None
    owner_sql(url, "ALTER TABLE customers DROP CONSTRAINT customers_customer_name_length_check")
    name = secrets.token_urlsafe(2400)[:3000]  # incompressible: too large for the sort index
    (customer_id,) = owner_sql(
        url,
        "INSERT INTO customers (customer_name, email, country, company_size) VALUES "
        f"('{name}', 'huge@example.com', 'USA', 'Small') RETURNING customer_id",
    )[0]
    with caplog.at_level(logging.ERROR, logger="datamesh.views"):
        failing = await _until(sales, failing=True)
    assert failing["last_error"].startswith("ProgramLimitExceededError: index row size")
    assert "customer_lifetime_value_customer_name_idx" in failing["last_error"]
    assert failing["pending_since"] is not None
    assert any(
        "refreshing the sales views failed" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )
    # the owner corrects the row: refreshes succeed again and the metadata says so
    response = await sales.patch(
        f"/sales/v1/corrections/customers/{customer_id}",
        json={"customer_name": "Huge Co"},
        headers=OWNER["sales"],
    )
    assert response.status_code == 200
    recovered = await _until(sales, failing=False)
    assert recovered["last_error"] is None
    owner_sql(
        url,
        "ALTER TABLE customers ADD CONSTRAINT customers_customer_name_length_check "
        "CHECK (char_length(customer_name) <= 200)",
    )


# --- 3. lead sources ------------------------------------------------------------------------


async def test_a_lead_from_the_website_is_accepted_and_checks_and_writes_share_one_list(
    marketing: httpx.AsyncClient,
) -> None:
    body = {
        "first_name": "Web",
        "last_name": "Site",
        "email": "web.site@example.com",
        "lead_source": "Website",
        "lead_score": 40,
        "campaign_id": 1,
    }
    response = await marketing.post("/marketing/v1/leads", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["lead_source"] == "Website"
    leads = domain("marketing").product("leads")
    assert leads is not None
    (check,) = [
        c
        for c in leads.checks
        if isinstance(c, AcceptedValues) and c.name == "accepted_values:lead_source"
    ]
    document = (await marketing.get("/marketing/openapi.json")).json()
    creation = document["paths"]["/marketing/v1/leads"]["post"]["requestBody"]["content"]
    schema = creation["application/json"]["schema"]["properties"]["lead_source"]
    assert (
        schema["enum"]
        == list(check.values)
        == [
            "Website",
            "LinkedIn",
            "Google Ads",
            "Email",
            "Webinar",
            "Event",
        ]
    )


# --- 4. ASCII digits only -----------------------------------------------------------------


async def test_full_width_digits_are_not_numbers_dates_or_keys(sales: httpx.AsyncClient) -> None:
    for params, parameter in (
        ({"order_id": "eq.\uff11"}, "order_id"),
        ({"total_amount": "gt.\uff11\uff10"}, "total_amount"),
        ({"order_date": "gte.\uff12\uff10\uff12\uff14-01-01"}, "order_date"),
        ({"customer_id": "in.(1,\u0663)"}, "customer_id"),
    ):
        response = await sales.get("/sales/v1/orders", params=params)
        assert response.status_code == 400, params
        assert (response.json()["code"], response.json()["parameter"]) == (
            "invalid_value",
            parameter,
        )
    response = await sales.get("/sales/v1/orders/\uff11")
    assert response.status_code == 400
    response = await sales.patch("/sales/v1/orders/\uff11", json={"sales_rep": "X"})
    assert (response.status_code, response.json()["parameter"]) == (400, "order_id")


async def test_full_width_digits_in_a_csv_number_are_refused(
    marketing: httpx.AsyncClient,
) -> None:
    header = "campaign_id,metric_date,impressions,clicks,conversions,cost_per_click\n"
    response = await marketing.post(
        "/marketing/v1/campaign-metrics:batch",
        content=header + "1,2024-10-01,10,1,0,\uff11\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 422
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(1, "cost_per_click")]


# --- 5. OpenAPI states what is enforced -------------------------------------------------------


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_contract_answer_is_declared_an_object_in_yaml_and_json(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    client = clients[name]
    document = (await client.get(f"/{name}/openapi.json")).json()
    content = document["paths"][f"/{name}/v1/products/{{product}}/contract"]["get"]["responses"][
        "200"
    ]["content"]
    assert [content[m]["schema"]["type"] for m in ("application/yaml", "application/json")] == [
        "object",
        "object",
    ]


async def test_write_schemas_state_lengths_and_date_ranges_the_api_enforces(
    sales: httpx.AsyncClient,
) -> None:
    document = (await sales.get("/sales/openapi.json")).json()
    creation = document["paths"]["/sales/v1/customers"]["post"]["requestBody"]["content"]
    properties = creation["application/json"]["schema"]["properties"]
    assert properties["customer_name"]["maxLength"] == 200
    assert properties["email"]["maxLength"] == 254
    phone = properties["phone"]["anyOf"][0]
    assert phone["maxLength"] == 200
    orders = document["paths"]["/sales/v1/orders"]["post"]["requestBody"]["content"]
    order_date = orders["application/json"]["schema"]["properties"]["order_date"]
    assert order_date == {
        "type": "string",
        "format": "date",
        "pattern": r"^(19\d\d|20\d\d|21\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$",
        "description": "Date the order was placed. From 1900-01-01 to 2199-12-31.",
    }
    correction = document["paths"]["/sales/v1/corrections/orders/{order_id}"]["patch"]
    body = correction["requestBody"]["content"]["application/json"]["schema"]
    assert body["minProperties"] == 1 and "order_date" in body["properties"]
    body = {"email": "edge@example.com", "country": "USA", "company_size": "Small"}
    at_limit = await sales.post("/sales/v1/customers", json={**body, "customer_name": "n" * 200})
    assert at_limit.status_code == 201
    body["email"] = "edge2@example.com"
    over = await sales.post("/sales/v1/customers", json={**body, "customer_name": "n" * 201})
    assert over.status_code == 422


async def test_an_integer_written_as_3_0_is_one_as_json_schema_says(
    sales: httpx.AsyncClient,
) -> None:
    body = order("2024-10-03")
    body["customer_id"] = 3.0
    body["items"] = [{"product_id": 2.0, "quantity": 2.0}]
    response = await sales.post("/sales/v1/orders", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["customer_id"] == 3
    response = await sales.post("/sales/v1/orders", json={**body, "customer_id": 3.5})
    assert response.status_code == 422


def _write_shapes(name: str) -> dict[tuple[str, str], BodyShape]:
    """The body shape of each write operation of the domain: (method, OpenAPI path)."""
    declared = domain(name)
    shapes: dict[tuple[str, str], BodyShape] = {}
    for writes in declared.writes:
        writer = TableWriter(declared, writes)
        path = f"/{name}/v1/{writer.product.name}"
        if writes.create:
            shapes[("POST", path)] = writer.creation
        if writer.change_body:
            shapes[("PATCH", f"{path}/{{{writer.key}}}")] = writer.change_body
        if writer.replacement:
            in_path = [n for n in writes.upsert_key if n not in writes.upsert_query]
            shapes[("PUT", path + "".join(f"/{{{n}}}" for n in in_path))] = writer.replacement
    for product in declared.products:
        if product.is_table:
            path = f"/{name}/v1/corrections/{product.name}/{{{product.key[0]}}}"
            shapes[("PATCH", path)] = correction_shape(product)
    return shapes


@pytest.mark.parametrize("name", DOMAINS)
def test_every_body_a_write_schema_allows_passes_every_single_field_rule(name: str) -> None:
    """What the OpenAPI states is what the validation enforces: bodies generated from each
    write operation's schema are never refused by a field's own rule (only by the data's state
    or a rule between fields, which JSON Schema cannot state)."""
    schema = schemathesis.openapi.from_dict(create_domain_app(domain(name)).openapi())
    shapes = _write_shapes(name)
    operations = [
        operation
        for result in schema.get_all_operations()
        if (operation := result.ok()) is not None  # type: ignore[union-attr]
        and (operation.method.upper(), operation.path) in shapes
    ]
    assert len(operations) == len(shapes)
    refused: list[tuple[str, str, str]] = []
    for operation in operations:
        refused += _refusals(operation, shapes[(operation.method.upper(), operation.path)])
    assert refused == []


def _refusals(operation: Any, shape: BodyShape) -> list[tuple[str, str, str]]:
    """The single-field refusals of bodies generated from the operation's request schema."""
    model = shape.model(strict=True)
    refused: list[tuple[str, str, str]] = []

    @hypothesis.settings(
        max_examples=25,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        try:
            validate_body(model, orjson.dumps(case.body), known=shape.names)
        except InvalidBody as invalid:
            refused.extend((operation.path, e.field, e.message) for e in invalid.field_errors)

    check()
    return refused
