"""The write API: every endpoint's success with the exact values stored (read back through
the API and straight from the database), each validation failure naming its field, each
forbidden transition, scopes, ETags and If-Match, batches, and analytics that follow the
writes. On databases of their own."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from psycopg.rows import dict_row

from services import DOMAINS, domain
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import (
    mesh_client,
    owner_url,
    sample_databases,
    token,
    views_refreshed,
)
from tests.postgres import PostgresServer
from tests.servers import served

PROBLEM_JSON = "application/problem+json"
WRITER = {
    name: {"Authorization": f"Bearer {token(f'{name}:read', f'{name}:write', f'{name}:pii')}"}
    for name in DOMAINS
}
READER = {name: {"Authorization": f"Bearer {token(f'{name}:read')}"} for name in DOMAINS}


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Databases of their own with the sample rows: these tests write."""
    return sample_databases(postgres_servers, "writes")


@pytest.fixture(scope="module")
async def clients(
    databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client of each domain service with a writer's token (read, write and pii)."""
    found: dict[str, httpx.AsyncClient] = {}
    managers = []
    for name in DOMAINS:
        app = create_domain_app(domain(name), database_url=databases[name], settings=settings)
        manager = LifespanManager(app)
        await manager.__aenter__()
        managers.append(manager)
        found[name] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://test",
            headers=WRITER[name],
        )
    yield found
    for client in found.values():
        await client.aclose()
    for manager in managers:
        await manager.__aexit__(None, None, None)


@pytest.fixture
def sales(clients: dict[str, httpx.AsyncClient]) -> httpx.AsyncClient:
    return clients["sales"]


@pytest.fixture
def marketing(clients: dict[str, httpx.AsyncClient]) -> httpx.AsyncClient:
    return clients["marketing"]


def stored(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows straight from the database (as its owner: no API in between)."""
    with psycopg.connect(owner_url(url)) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def count(url: str, table: str) -> int:
    (row,) = stored(url, f"SELECT count(*) AS n FROM {table}")  # table names are literals here
    return int(row["n"])


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


# --- sales: customers ------------------------------------------------------------------------

NEW_CUSTOMER = {
    "customer_name": "Fjord Freight AS",
    "email": "ops@fjordfreight.no",
    "phone": "+47-22-555-0101",
    "country": "UK",
    "industry": "Logistics",
    "company_size": "Small",
}


async def test_a_customer_is_created_with_location_etag_and_database_timestamps(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    response = await sales.post("/sales/v1/customers", json=NEW_CUSTOMER)
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["customer_id"]
    assert key == 16  # after the sample's 15
    assert response.headers["location"] == "/sales/v1/customers/16"
    read = await sales.get(response.headers["location"])
    assert read.status_code == 200
    assert read.content == response.content  # the same JSON text, byte for byte
    assert read.headers["etag"] == response.headers["etag"]
    assert response.headers["etag"].startswith('"') and len(response.headers["etag"]) == 66
    assert {k: created[k] for k in NEW_CUSTOMER} == NEW_CUSTOMER
    (row,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = %s", key)
    assert {k: row[k] for k in NEW_CUSTOMER} == NEW_CUSTOMER
    assert row["created_at"] == row["updated_at"]
    assert abs(row["created_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert dt.datetime.fromisoformat(created["created_at"]) == row["created_at"]


async def test_a_customer_body_names_each_bad_field(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    before = count(databases["sales"], "customers")
    body = {
        **NEW_CUSTOMER,
        "email": "not-an-email",
        "company_size": "Huge",
        "customer_name": "   ",
        "customer_id": 99,
    }
    del body["country"]
    problem = assert_problem(
        await sales.post("/sales/v1/customers", json=body), 422, "invalid_body"
    )
    assert sorted(fields(problem)) == [
        "company_size",
        "country",
        "customer_id",
        "customer_name",
        "email",
    ]
    messages = {e["field"]: e["message"] for e in problem["errors"]}
    assert messages["country"] == "Field required"
    assert messages["company_size"] == "Input should be 'Enterprise', 'Mid-Market' or 'Small'"
    assert messages["customer_id"].startswith("not a field this request accepts; accepted: ")
    assert messages["customer_name"] == "Text may not be empty or only spaces"
    assert "pattern" in messages["email"]
    assert count(databases["sales"], "customers") == before


async def test_a_malformed_or_foreign_body_is_refused(sales: httpx.AsyncClient) -> None:
    broken = await sales.post(
        "/sales/v1/customers",
        content=b'{"customer_name": ',
        headers={"content-type": "application/json"},
    )
    assert fields(assert_problem(broken, 422, "invalid_body")) == ["body"]
    listed = await sales.post("/sales/v1/customers", json=[NEW_CUSTOMER])
    assert fields(assert_problem(listed, 422, "invalid_body")) == ["body"]
    as_text = await sales.post(
        "/sales/v1/customers", content=b"x", headers={"content-type": "text/plain"}
    )
    assert_problem(as_text, 415, "unsupported_media_type")


async def test_an_email_taken_in_another_case_is_a_409_naming_the_constraint(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    body = {**NEW_CUSTOMER, "email": "R.Hayes@SummitFinancial.COM"}  # customer 1's
    problem = assert_problem(
        await sales.post("/sales/v1/customers", json=body), 409, "unique_violation"
    )
    assert (problem["constraint"], problem["fields"], problem["table"]) == (
        "customers_email_key",
        ["email"],
        "customers",
    )
    assert "summitfinancial" not in problem["detail"].lower()  # no PII in the answer


async def test_a_customer_is_changed_only_under_its_current_etag(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    read = await sales.get("/sales/v1/customers/3")
    etag = read.headers["etag"]
    (before,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = 3")
    changed = await sales.patch(
        "/sales/v1/customers/3",
        json={"industry": None, "phone": "+44-20-7946-0000"},
        headers={"If-Match": etag},
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["industry"], changed.json()["phone"]) == (None, "+44-20-7946-0000")
    assert changed.headers["etag"] != etag
    assert "location" not in changed.headers
    again = await sales.get("/sales/v1/customers/3")
    assert (again.content, again.headers["etag"]) == (changed.content, changed.headers["etag"])
    (after,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = 3")
    assert (after["industry"], after["phone"]) == (None, "+44-20-7946-0000")
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert abs(after["updated_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    stale = await sales.patch(
        "/sales/v1/customers/3", json={"industry": "Retail"}, headers={"If-Match": etag}
    )
    problem = assert_problem(stale, 412, "precondition_failed")
    assert problem["etag"] == changed.headers["etag"]
    (unchanged,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = 3")
    assert unchanged == after


async def test_a_patch_that_changes_nothing_keeps_updated_at(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    (before,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = 4")
    same = await sales.patch("/sales/v1/customers/4", json={"country": before["country"]})
    assert same.status_code == 200, same.text
    (after,) = stored(databases["sales"], "SELECT * FROM customers WHERE customer_id = 4")
    assert after == before


async def test_a_patch_names_each_bad_field_and_unknown_rows(sales: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await sales.patch(
            "/sales/v1/customers/5", json={"email": None, "created_at": "2024-01-01"}
        ),
        422,
        "invalid_body",
    )
    assert sorted(fields(problem)) == ["created_at", "email"]
    empty = assert_problem(await sales.patch("/sales/v1/customers/5", json={}), 422, "invalid_body")
    assert fields(empty) == ["body"]
    missing = await sales.patch("/sales/v1/customers/999", json={"industry": "Retail"})
    assert_problem(missing, 404, "not_found")
    gone = await sales.patch(
        "/sales/v1/customers/999", json={"industry": "Retail"}, headers={"If-Match": '"x"'}
    )
    assert_problem(gone, 412, "precondition_failed")
    bad_key = await sales.patch("/sales/v1/customers/abc", json={"industry": "Retail"})
    assert bad_key.status_code == 400


# --- sales: orders -----------------------------------------------------------------------------


def order(customer_id: int, *items: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "payment_method": "Wire Transfer",
        "sales_rep": "Sarah Mitchell",
        "items": list(items),
        **more,
    }


async def test_an_order_is_priced_by_the_server_and_starts_pending(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    body = order(
        8,  # Canada
        {"product_id": 1, "quantity": 2, "discount_percent": 10},
        {"product_id": 6, "quantity": 1, "discount_percent": 33},  # 8499.50 x 0.67 = 5694.665
        {"product_id": 6, "quantity": 3},
        order_date="2024-10-17",
    )
    response = await sales.post("/sales/v1/orders", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["order_id"]
    assert created == {
        "order_id": key,
        "customer_id": 8,
        "order_date": "2024-10-17",
        "order_status": "Pending",
        "total_amount": 112193.17,  # 81000.00 + 5694.67 (half up) + 25498.50
        "payment_method": "Wire Transfer",
        "sales_rep": "Sarah Mitchell",
        "region": "North America",
    }
    assert response.headers["location"] == f"/sales/v1/orders/{key}"
    assert response.headers["link"] == f'</sales/v1/order-items?order_id=eq.{key}>; rel="related"'
    items = stored(
        databases["sales"],
        "SELECT product_id, quantity, unit_price, discount_percent, line_total FROM order_items "
        "WHERE order_id = %s ORDER BY item_id",
        key,
    )
    assert items == [
        {"product_id": 1, "quantity": 2, "unit_price": Decimal("45000.00"),
         "discount_percent": Decimal("10.00"), "line_total": Decimal("81000.00")},
        {"product_id": 6, "quantity": 1, "unit_price": Decimal("8499.50"),
         "discount_percent": Decimal("33.00"), "line_total": Decimal("5694.67")},
        {"product_id": 6, "quantity": 3, "unit_price": Decimal("8499.50"),
         "discount_percent": Decimal("0.00"), "line_total": Decimal("25498.50")},
    ]  # fmt: skip
    listed = await sales.get(f"/sales/v1/order-items?order_id=eq.{key}&select=line_total")
    assert listed.json() == [
        {"line_total": 81000.0},
        {"line_total": 5694.67},
        {"line_total": 25498.5},
    ]
    quality = (await sales.post("/sales/v1/quality/runs")).json()
    consistency = {
        (r["product"], r["check"]): r["outcome"]
        for r in quality["results"]
        if r["check"] in ("consistency:total_is_sum_of_lines", "consistency:line_total_formula")
    }
    assert consistency == {
        ("orders", "consistency:total_is_sum_of_lines"): "pass",
        ("order-items", "consistency:line_total_formula"): "pass",
    }


async def test_an_order_without_a_date_is_dated_today(sales: httpx.AsyncClient) -> None:
    response = await sales.post("/sales/v1/orders", json=order(3, {"product_id": 2, "quantity": 1}))
    assert response.status_code == 201, response.text
    assert response.json()["order_date"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert response.json()["region"] == "Europe"  # UK


async def test_an_order_naming_unknown_customers_or_products_is_a_422_naming_them(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    before = (count(databases["sales"], "orders"), count(databases["sales"], "order_items"))
    body = order(999, {"product_id": 1, "quantity": 1}, {"product_id": 77, "quantity": 1})
    problem = assert_problem(await sales.post("/sales/v1/orders", json=body), 422, "invalid_body")
    assert problem["errors"] == [
        {"field": "customer_id", "message": "no customer has customer_id 999"},
        {"field": "items.1.product_id", "message": "no product has product_id 77"},
    ]
    invalid = order(1, {"product_id": 1, "quantity": 0, "discount_percent": 100.5})
    invalid["order_status"] = "Completed"
    problem = assert_problem(
        await sales.post("/sales/v1/orders", json=invalid), 422, "invalid_body"
    )
    assert sorted(fields(problem)) == [
        "items.0.discount_percent",
        "items.0.quantity",
        "order_status",
    ]
    empty = assert_problem(await sales.post("/sales/v1/orders", json=order(1)), 422, "invalid_body")
    assert fields(empty) == ["items"]
    after = (count(databases["sales"], "orders"), count(databases["sales"], "order_items"))
    assert after == before


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (["Processing", "Completed"], "Cancelled"),
        (["Cancelled"], "Processing"),
        ([], "Completed"),
        (["Processing"], "Pending"),
    ],
)
async def test_orders_move_only_along_their_transitions(
    sales: httpx.AsyncClient, databases: dict[str, str], path: list[str], refused: str
) -> None:
    created = await sales.post("/sales/v1/orders", json=order(2, {"product_id": 4, "quantity": 1}))
    key = created.json()["order_id"]
    status = "Pending"
    for step in path:
        moved = await sales.patch(f"/sales/v1/orders/{key}", json={"order_status": step})
        assert moved.status_code == 200, moved.text
        assert moved.json()["order_status"] == step
        status = step
    same = await sales.patch(f"/sales/v1/orders/{key}", json={"order_status": status})
    assert same.status_code == 200  # no change is always allowed
    problem = assert_problem(
        await sales.patch(f"/sales/v1/orders/{key}", json={"order_status": refused}),
        409,
        "forbidden_transition",
    )
    assert (problem["from"], problem["to"], problem["field"]) == (status, refused, "order_status")
    assert problem["detail"].startswith(
        f"'order_status' may not change from '{status}' to '{refused}'"
    )
    (row,) = stored(databases["sales"], "SELECT order_status FROM orders WHERE order_id = %s", key)
    assert row["order_status"] == status


async def test_an_order_keeps_its_customer_and_amounts(sales: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await sales.patch("/sales/v1/orders/1", json={"total_amount": 1, "customer_id": 2}),
        422,
        "invalid_body",
    )
    assert sorted(fields(problem)) == ["customer_id", "total_amount"]


# --- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/sales/v1/customers"),
        ("PATCH", "/sales/v1/customers/1"),
        ("POST", "/sales/v1/orders"),
        ("PATCH", "/sales/v1/orders/1"),
        ("POST", "/sales/v1/orders:batch"),
        ("POST", "/marketing/v1/campaigns"),
        ("PATCH", "/marketing/v1/leads/1"),
        ("PUT", "/marketing/v1/campaign-metrics/1/2024-10-01"),
        ("PUT", "/marketing/v1/website-traffic/2024-10-01/Organic?page_url=/"),
        ("POST", "/marketing/v1/website-traffic:batch"),
    ],
)
async def test_writes_need_the_write_scope(
    clients: dict[str, httpx.AsyncClient], method: str, path: str
) -> None:
    name = path.split("/")[1]
    client = clients[name]
    read_only = await client.request(method, path, json={}, headers=READER[name])
    problem = assert_problem(read_only, 403, "insufficient_scope")
    assert problem["scope"] == f"{name}:write"
    other = "marketing" if name == "sales" else "sales"
    foreign = await client.request(method, path, json={}, headers=WRITER[other])
    assert assert_problem(foreign, 403, "insufficient_scope")["scope"] == f"{name}:read"
    anonymous = await client.request(method, path, json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_a_writer_without_the_pii_scope_cannot_write_pii_and_reads_it_masked(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    no_pii = {"Authorization": f"Bearer {token('sales:read', 'sales:write')}"}
    body = {**NEW_CUSTOMER, "email": "desk@masked.example", "customer_name": "Masked Ltd"}
    refused = await sales.post("/sales/v1/customers", json=body, headers=no_pii)
    problem = assert_problem(refused, 403, "pii_column")
    assert (problem["column"], problem["scope"]) == ("email", "sales:pii")
    assert count(databases["sales"], "customers WHERE email = 'desk@masked.example'") == 0
    changed = await sales.patch(
        "/sales/v1/customers/6", json={"industry": "Retail"}, headers=no_pii
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["email"], changed.json()["phone"]) == (None, None)
    assert changed.headers["masked-columns"] == "email, phone"
    read = await sales.get("/sales/v1/customers/6", headers=no_pii)
    assert (read.content, read.headers["etag"]) == (changed.content, changed.headers["etag"])


# --- marketing ---------------------------------------------------------------------------------

NEW_CAMPAIGN = {
    "campaign_name": "Winter Webinar Series",
    "campaign_type": "Webinar",
    "channel": "Webinar",
    "start_date": "2024-11-01",
    "end_date": "2024-12-15",
    "budget": 20000,
    "target_audience": None,
}


async def test_a_campaign_starts_as_a_draft_and_spends_within_its_budget(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    response = await marketing.post("/marketing/v1/campaigns", json=NEW_CAMPAIGN)
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["campaign_id"]
    assert created == {
        **NEW_CAMPAIGN,
        "campaign_id": key,
        "budget": 20000.0,
        "spent": 0.0,
        "status": "Draft",
    }
    assert response.headers["location"] == f"/marketing/v1/campaigns/{key}"

    over = await marketing.patch(f"/marketing/v1/campaigns/{key}", json={"spent": 20000.01})
    problem = assert_problem(over, 422, "invalid_body")
    assert problem["errors"] == [{"field": "spent", "message": "spent may not exceed budget"}]
    ends_early = await marketing.patch(
        f"/marketing/v1/campaigns/{key}", json={"end_date": "2024-10-31"}
    )
    assert fields(assert_problem(ends_early, 422, "invalid_body")) == ["end_date"]
    cents = await marketing.patch(f"/marketing/v1/campaigns/{key}", json={"budget": 10.001})
    assert fields(assert_problem(cents, 422, "invalid_body")) == ["budget"]

    active = await marketing.patch(
        f"/marketing/v1/campaigns/{key}", json={"status": "Active", "spent": 1500.5}
    )
    assert active.status_code == 200, active.text
    (row,) = stored(databases["marketing"], "SELECT * FROM campaigns WHERE campaign_id = %s", key)
    assert (row["status"], row["spent"], row["budget"]) == (
        "Active",
        Decimal("1500.50"),
        Decimal("20000.00"),
    )
    await views_refreshed(marketing, "marketing")
    performance = await marketing.get(f"/marketing/v1/campaign-performance?campaign_id=eq.{key}")
    assert performance.json()[0]["remaining_budget"] == 18499.5
    done = await marketing.patch(f"/marketing/v1/campaigns/{key}", json={"status": "Completed"})
    assert done.status_code == 200
    back = await marketing.patch(f"/marketing/v1/campaigns/{key}", json={"status": "Active"})
    problem = assert_problem(back, 409, "forbidden_transition")
    assert (problem["from"], problem["to"]) == ("Completed", "Active")


NEW_LEAD = {
    "first_name": "Ingrid",
    "last_name": "Solberg",
    "email": "i.solberg@fjordfreight.no",
    "company": "Fjord Freight AS",
    "job_title": "CTO",
    "country": None,
    "lead_source": "Webinar",
    "lead_score": 55,
    "campaign_id": 2,
}


async def test_a_lead_moves_down_the_funnel_and_converting_stamps_it(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    response = await marketing.post("/marketing/v1/leads", json=NEW_LEAD)
    assert response.status_code == 201, response.text
    lead = response.json()
    assert {k: lead[k] for k in NEW_LEAD} == NEW_LEAD
    assert (lead["status"], lead["converted_at"]) == ("New", None)
    key = lead["lead_id"]
    qualified = await marketing.patch(f"/marketing/v1/leads/{key}", json={"status": "Qualified"})
    assert qualified.json()["converted_at"] is None
    back = await marketing.patch(f"/marketing/v1/leads/{key}", json={"status": "Nurturing"})
    problem = assert_problem(back, 409, "forbidden_transition")
    assert (problem["from"], problem["to"], problem["allowed"]) == (
        "Qualified",
        "Nurturing",
        ["Converted", "Lost"],
    )
    converted = await marketing.patch(
        f"/marketing/v1/leads/{key}",
        json={"status": "Converted", "lead_score": 90},
        headers={"If-Match": qualified.headers["etag"]},
    )
    assert converted.status_code == 200, converted.text
    (row,) = stored(databases["marketing"], "SELECT * FROM leads WHERE lead_id = %s", key)
    assert (row["status"], row["lead_score"]) == ("Converted", 90)
    assert row["converted_at"] is not None and row["converted_at"] >= row["created_at"]
    assert dt.datetime.fromisoformat(converted.json()["converted_at"]) == row["converted_at"]
    lost = await marketing.patch(f"/marketing/v1/leads/{key}", json={"status": "Lost"})
    assert assert_problem(lost, 409, "forbidden_transition")["allowed"] == []
    await views_refreshed(marketing, "marketing")
    funnel = await marketing.get("/marketing/v1/lead-funnel?status=eq.Converted&select=lead_count")
    assert funnel.json() == [{"lead_count": 4}]  # the sample's 3, and this one


async def test_a_lead_names_its_bad_fields_and_broken_constraints(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    before = count(databases["marketing"], "leads")
    bad = {
        **NEW_LEAD,
        "lead_score": 101,
        "email": "nobody",
        "status": "Converted",
        "lead_source": "Fax",
    }
    problem = assert_problem(
        await marketing.post("/marketing/v1/leads", json=bad), 422, "invalid_body"
    )
    assert sorted(fields(problem)) == ["email", "lead_score", "lead_source", "status"]
    orphan = {**NEW_LEAD, "email": "orphan@nowhere.example", "campaign_id": 4242}
    problem = assert_problem(
        await marketing.post("/marketing/v1/leads", json=orphan), 422, "foreign_key_violation"
    )
    assert (problem["constraint"], problem["fields"]) == ("leads_campaign_id_fkey", ["campaign_id"])
    taken = {**NEW_LEAD, "email": "priya.raman@lumenforge.io"}  # lead 2's (exact case)
    taken_problem = await marketing.post("/marketing/v1/leads", json=taken)
    problem = assert_problem(taken_problem, 409, "unique_violation")
    assert (problem["constraint"], problem["fields"]) == ("leads_email_key", ["email"])
    assert count(databases["marketing"], "leads") == before


async def test_campaign_metrics_are_upserted_per_campaign_and_day(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    day = {"impressions": 1200, "clicks": 48, "conversions": 5, "cost_per_click": 3.25}
    path = "/marketing/v1/campaign-metrics/3/2024-10-20"
    first = await marketing.put(path, json=day)
    assert first.status_code == 201, first.text
    key = first.json()["metric_id"]
    assert first.headers["location"] == f"/marketing/v1/campaign-metrics/{key}"
    assert first.json() == {
        "metric_id": key,
        "campaign_id": 3,
        "metric_date": "2024-10-20",
        **day,
        "conversion_rate": 10.42,  # 5 / 48 x 100, half up
    }
    again = await marketing.put(
        path, json={**day, "clicks": 0, "conversions": 0, "cost_per_click": None}
    )
    assert again.status_code == 200, again.text
    assert "location" not in again.headers
    assert (again.json()["metric_id"], again.json()["conversion_rate"]) == (key, None)
    rows = stored(
        databases["marketing"],
        "SELECT clicks, conversion_rate FROM campaign_metrics WHERE campaign_id = 3 "
        "AND metric_date = '2024-10-20'",
    )
    assert rows == [{"clicks": 0, "conversion_rate": None}]
    wrong = await marketing.put(path, json={**day, "clicks": 1300, "conversions": 1400})
    assert fields(assert_problem(wrong, 422, "invalid_body")) == ["clicks", "conversions"]
    keyed = await marketing.put(path, json={**day, "campaign_id": 4})
    assert fields(assert_problem(keyed, 422, "invalid_body")) == ["campaign_id"]
    bad_day = await marketing.put("/marketing/v1/campaign-metrics/3/2024-13-01", json=day)
    assert fields(assert_problem(bad_day, 400, "invalid_value")) == ["metric_date"]
    stale = await marketing.put(path, json=day, headers={"If-Match": first.headers["etag"]})
    assert_problem(stale, 412, "precondition_failed")
    current = await marketing.get(f"/marketing/v1/campaign-metrics/{key}")
    fresh = await marketing.put(path, json=day, headers={"If-Match": current.headers["etag"]})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == first.headers["etag"]  # the same row as first written


async def test_website_traffic_is_upserted_per_day_source_and_page(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    day = {"visitors": 40, "page_views": 65, "bounce_rate": 41.5, "avg_time_on_page": 73.25}
    path = "/marketing/v1/website-traffic/2024-10-20/Paid%20Search"
    created = await marketing.put(path, params={"page_url": "/pricing"}, json=day)
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in ("visit_date", "source", "page_url")} == {
        "visit_date": "2024-10-20",
        "source": "Paid Search",
        "page_url": "/pricing",
    }
    only_new = await marketing.put(
        path, params={"page_url": "/pricing"}, json=day, headers={"If-None-Match": "*"}
    )
    assert_problem(only_new, 412, "precondition_failed")
    replaced = await marketing.put(
        path, params={"page_url": "/pricing"}, json={**day, "visitors": 50}
    )
    assert replaced.status_code == 200
    rows = stored(
        databases["marketing"],
        "SELECT visitors, page_views FROM website_traffic WHERE visit_date = '2024-10-20' "
        "AND source = 'Paid Search' AND page_url = '/pricing'",
    )
    assert rows == [{"visitors": 50, "page_views": 65}]
    missing = await marketing.put(path, json=day)
    assert assert_problem(missing, 400, "invalid_value")["parameter"] == "page_url"
    unknown = await marketing.put(
        "/marketing/v1/website-traffic/2024-10-20/Radio", params={"page_url": "/"}, json=day
    )
    assert fields(assert_problem(unknown, 400, "invalid_value")) == ["source"]
    fewer = await marketing.put(path, params={"page_url": "/"}, json={**day, "page_views": 39})
    assert fields(assert_problem(fewer, 422, "invalid_body")) == ["page_views"]


# --- batches -----------------------------------------------------------------------------------

NDJSON = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv"}


async def test_a_batch_of_customers_in_ndjson_is_written_whole(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    rows = [
        {**NEW_CUSTOMER, "customer_name": f"Batch Co {n}", "email": f"buyer{n}@batch.example"}
        for n in range(3)
    ]
    body = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    response = await sales.post("/sales/v1/customers:batch", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["product"] == "customers"
    assert (summary["rows"], summary["created"], summary["replaced"]) == (3, 3, 0)
    written = stored(
        databases["sales"],
        "SELECT customer_id, customer_name, email FROM customers WHERE email LIKE '%%@batch.example' "
        "ORDER BY customer_id",
    )
    assert [r["customer_id"] for r in written] == summary["keys"]
    assert [(r["customer_name"], r["email"]) for r in written] == [
        (f"Batch Co {n}", f"buyer{n}@batch.example") for n in range(3)
    ]


async def test_a_batch_with_bad_rows_writes_nothing_and_lists_each_bad_row(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    before = count(databases["sales"], "customers")
    header = "customer_name,email,phone,country,industry,company_size\n"
    lines = [
        "Good One,good.one@csv.example,,USA,,Small",  # row 1: fine
        "Bad Size,bad.size@csv.example,,USA,,Huge",  # row 2: not an accepted size
        "Good Two,good.two@csv.example,+1-555,Canada,Retail,Enterprise",  # row 3: fine
        "Taken,r.hayes@summitfinancial.com,,USA,,Small",  # row 4: customer 1's email
        "Twice,good.one@CSV.example,,USA,,Small",  # row 5: row 1's email, other case
        ",no.name@csv.example,,USA,,Small",  # row 6: no name
    ]
    response = await sales.post(
        "/sales/v1/customers:batch", content=header + "\n".join(lines), headers=CSV
    )
    problem = assert_problem(response, 422, "invalid_rows")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [
        (2, "company_size"),
        (4, "email"),
        (5, "email"),
        (6, "customer_name"),
    ]
    assert problem["errors"][1]["message"].startswith(
        "The write breaks constraint 'customers_email_key' of customers on email"
    )
    assert problem["rows_rejected"] == [2, 4, 5, 6]
    assert problem["detail"].startswith("The batch was refused and nothing was written: 4 rows")
    assert count(databases["sales"], "customers") == before

    unknown = await sales.post(
        "/sales/v1/customers:batch", content="customer_name,shoe_size\nX,42\n", headers=CSV
    )
    problem = assert_problem(unknown, 422, "invalid_rows")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [(0, "shoe_size")]
    wrong_type = await sales.post(
        "/sales/v1/customers:batch", content="x", headers={"content-type": "text/plain"}
    )
    assert_problem(wrong_type, 415, "unsupported_media_type")
    nothing = await sales.post("/sales/v1/customers:batch", content="\n", headers=NDJSON)
    assert fields(assert_problem(nothing, 422, "invalid_body")) == ["body"]


async def test_a_batch_lists_at_most_the_first_100_bad_rows(sales: httpx.AsyncClient) -> None:
    rows = [{**NEW_CUSTOMER, "email": f"x{n}"} for n in range(150)]
    response = await sales.post("/sales/v1/customers:batch", json=rows)
    problem = assert_problem(response, 422, "invalid_rows")
    assert [e["row"] for e in problem["errors"]] == list(range(1, 101))
    assert problem["detail"].startswith("The batch was refused and nothing was written: 150 rows")


async def test_a_batch_of_orders_in_csv_carries_items_as_json(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    body = (
        "customer_id,order_date,payment_method,sales_rep,items\n"
        '5,2024-10-16,Credit Card,Jonas Weber,"[{""product_id"": 3, ""quantity"": 1}]"\n'
        '6,2024-10-17,Wire Transfer,Mia Chen,"[{""product_id"": 2, ""quantity"": 2, ""discount_percent"": 5}]"\n'
    )
    response = await sales.post("/sales/v1/orders:batch", content=body, headers=CSV)
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    orders = stored(
        databases["sales"],
        "SELECT order_id, total_amount, region, order_status FROM orders WHERE order_id = ANY(%s) "
        "ORDER BY order_id",
        keys,
    )
    assert [(o["total_amount"], o["region"], o["order_status"]) for o in orders] == [
        (Decimal("27800.00"), "Europe", "Pending"),
        (Decimal("61750.00"), "Asia Pacific", "Pending"),  # 2 x 32500 x 0.95
    ]


async def test_a_batch_of_daily_traffic_creates_and_replaces_by_natural_key(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    day = {"visit_date": "2024-10-21", "source": "Email", "page_url": "/blog", "visitors": 5,
           "page_views": 9, "bounce_rate": 20, "avg_time_on_page": 30}  # fmt: skip
    first = await marketing.post(
        "/marketing/v1/website-traffic:batch", json=[day, {**day, "page_url": "/docs"}]
    )
    assert first.status_code == 200, first.text
    assert (first.json()["created"], first.json()["replaced"]) == (2, 0)
    second = await marketing.post(
        "/marketing/v1/website-traffic:batch",
        content=json.dumps({**day, "visitors": 7}),
        headers=NDJSON,
    )
    assert (second.json()["created"], second.json()["replaced"]) == (0, 1)
    assert second.json()["keys"] == first.json()["keys"][:1]
    rows = stored(
        databases["marketing"],
        "SELECT page_url, visitors FROM website_traffic WHERE visit_date = '2024-10-21' "
        "ORDER BY page_url",
    )
    assert rows == [{"page_url": "/blog", "visitors": 7}, {"page_url": "/docs", "visitors": 5}]


# --- analytics follow the writes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served_domains(
    databases: dict[str, str], settings: ServiceSettings
) -> Iterator[dict[str, str]]:
    """The domain services on this module's databases, over HTTP (the mesh reads them so)."""
    apps = {
        name: create_domain_app(domain(name), database_url=databases[name], settings=settings)
        for name in DOMAINS
    }
    with served(apps["sales"]) as sales_url, served(apps["marketing"]) as marketing_url:
        yield {"sales": sales_url, "marketing": marketing_url}


async def test_an_order_shows_in_the_views_and_the_mesh_and_leaves_them_when_cancelled(
    sales: httpx.AsyncClient, served_domains: dict[str, str]
) -> None:
    # customer 12 (Northwind Analytics) is the sample's Converted lead 1, of campaign 1
    async with mesh_client(served_domains) as mesh:

        async def figures() -> tuple[Any, ...]:
            await views_refreshed(sales, "sales")
            roi = (await mesh.get("/mesh/v1/campaign-roi?campaign_id=eq.1")).json()[0]
            clv = (await sales.get("/sales/v1/customer-lifetime-value?customer_id=eq.12")).json()[0]
            summary = (await sales.get("/sales/v1/sales-summary?month=eq.2024-10-01")).json()
            return (
                Decimal(str(roi["attributed_revenue"])),
                roi["orders"],
                Decimal(str(clv["lifetime_value"])),
                clv["total_orders"],
                Decimal(str(summary[0]["total_revenue"])),
            )

        before = await figures()
        body = order(
            12, {"product_id": 4, "quantity": 2, "discount_percent": 12.5}, order_date="2024-10-18"
        )
        created = await sales.post("/sales/v1/orders", json=body)
        assert created.status_code == 201, created.text
        total = Decimal("37537.50")  # 2 x 21450.00 x 0.875
        assert Decimal(str(created.json()["total_amount"])) == total
        after = await figures()
        assert after == (
            before[0] + total,
            before[1] + 1,
            before[2] + total,
            before[3] + 1,
            before[4] + total,
        )
        key = created.json()["order_id"]
        cancelled = await sales.patch(f"/sales/v1/orders/{key}", json={"order_status": "Cancelled"})
        assert cancelled.status_code == 200, cancelled.text
        assert await figures() == before


# --- values out of a column's range (regressions of the fuzz runs) -----------------------------


@pytest.mark.parametrize("budget", [-7.367438093085662e307, 1e300, 1e15, -1e16])
async def test_a_number_beyond_its_columns_range_is_a_422_naming_it(
    marketing: httpx.AsyncClient, databases: dict[str, str], budget: float
) -> None:
    before = stored(databases["marketing"], "SELECT budget FROM campaigns WHERE campaign_id = 1")
    changed = await marketing.patch("/marketing/v1/campaigns/1", json={"budget": budget})
    assert fields(assert_problem(changed, 422, "invalid_body")) == ["budget"]
    created = await marketing.post(
        "/marketing/v1/campaigns", json={**NEW_CAMPAIGN, "budget": budget}
    )
    assert fields(assert_problem(created, 422, "invalid_body")) == ["budget"]
    after = stored(databases["marketing"], "SELECT budget FROM campaigns WHERE campaign_id = 1")
    assert after == before


INFINITE_DATES = ["infinity", "-infinity"]


@pytest.mark.parametrize("day", INFINITE_DATES)
async def test_an_infinite_date_is_refused_on_every_write_path(
    marketing: httpx.AsyncClient, sales: httpx.AsyncClient, databases: dict[str, str], day: str
) -> None:
    metrics = {"impressions": 10, "clicks": 0, "conversions": 0, "cost_per_click": None}
    in_path = await marketing.put(f"/marketing/v1/campaign-metrics/3/{day}", json=metrics)
    assert fields(assert_problem(in_path, 400, "invalid_value")) == ["metric_date"]
    in_query = await marketing.put(
        f"/marketing/v1/website-traffic/{day}/Email",
        params={"page_url": "/blog"},
        json={"visitors": 1, "page_views": 1, "bounce_rate": 0, "avg_time_on_page": 1},
    )
    assert fields(assert_problem(in_query, 400, "invalid_value")) == ["visit_date"]
    created = await marketing.post(
        "/marketing/v1/campaigns", json={**NEW_CAMPAIGN, "end_date": day}
    )
    assert fields(assert_problem(created, 422, "invalid_body")) == ["end_date"]
    changed = await marketing.patch("/marketing/v1/campaigns/1", json={"start_date": day})
    assert fields(assert_problem(changed, 422, "invalid_body")) == ["start_date"]
    dated = await sales.post(
        "/sales/v1/orders", json=order(1, {"product_id": 1, "quantity": 1}, order_date=day)
    )
    assert fields(assert_problem(dated, 422, "invalid_body")) == ["order_date"]

    row = {"campaign_id": 3, "metric_date": day, **metrics}
    batches = [
        (json.dumps(row), NDJSON),
        (json.dumps([row]), {"content-type": "application/json"}),
        (f"campaign_id,metric_date,impressions,clicks,conversions\n3,{day},10,0,0\n", CSV),
    ]
    for content, headers in batches:
        batch = await marketing.post(
            "/marketing/v1/campaign-metrics:batch", content=content, headers=headers
        )
        problem = assert_problem(batch, 422, "invalid_rows")
        assert [(e["row"], e["field"]) for e in problem["errors"]] == [(1, "metric_date")]

    infinite = {
        "marketing": "SELECT (SELECT count(*) FROM campaign_metrics WHERE NOT isfinite(metric_date))"
        " + (SELECT count(*) FROM website_traffic WHERE NOT isfinite(visit_date))"
        " + (SELECT count(*) FROM campaigns WHERE NOT isfinite(start_date)"
        " OR NOT isfinite(end_date)) AS n",
        "sales": "SELECT count(*) AS n FROM orders WHERE NOT isfinite(order_date)",
    }
    for name, sql in infinite.items():
        assert stored(databases[name], sql) == [{"n": 0}]


def test_a_write_describes_its_domain_logic_and_only_a_domain_s_own() -> None:
    from services.sales.app import app  # the app as served, its OpenAPI built without a database

    paths = app.openapi()["paths"]
    orders = paths["/sales/v1/orders"]["post"]["description"]
    customers = paths["/sales/v1/customers"]["post"]["description"]
    # the orders' logic (services/sales/writes.py OrderPricing) states what it does
    assert orders.split("\n\n")[-1].startswith("A new order: its customer and products must exist")
    # a table without logic of its own gets no description of the framework's no-op default
    assert customers.split("\n\n")[-1].startswith("PII columns (`email`, `phone`)")
    assert "the default does nothing" not in customers
