"""Idempotency keys (Stripe's design): a write sent with a key is done once and its first
response replayed byte for byte; another request under the same key is a 422; concurrent
requests with one key write exactly one row. On databases of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from services import domain, sample
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import AS_OF, app_client, create_database, owner_url, token
from tests.postgres import PostgresServer
from tests.servers import served

WRITER = {
    "Authorization": f"Bearer {token('sales:read', 'sales:write', 'sales:pii', subject='writer')}"
}
OTHER = {
    "Authorization": f"Bearer {token('sales:read', 'sales:write', 'sales:pii', subject='other')}"
}
KEPT = ("content-type", "location", "etag", "link")


@pytest.fixture(scope="module")
def database(postgres_servers: dict[str, PostgresServer]) -> str:
    return create_database(postgres_servers, "sales", "sales_idempotency", sample("sales")(AS_OF))


@pytest.fixture(scope="module")
async def sales(database: str, settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain("sales"), database_url=database, settings=settings)
    async with app_client(app, WRITER) as client:
        yield client


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(owner_url(url)) as conn:
        return conn.execute(sql, params).fetchall()


def customer(email: str) -> dict[str, Any]:
    return {
        "customer_name": "Idempotent Industries",
        "email": email,
        "country": "USA",
        "company_size": "Small",
    }


def with_key(key: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key, **(headers or {})}


async def test_the_same_request_with_a_key_replays_the_first_response_byte_for_byte(
    sales: httpx.AsyncClient, database: str
) -> None:
    body = customer("once@idempotent.example")
    first = await sales.post("/sales/v1/customers", json=body, headers=with_key("create-once"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = await sales.post("/sales/v1/customers", json=body, headers=with_key("create-once"))
        assert again.status_code == 201
        assert again.content == first.content
        assert {h: again.headers[h] for h in KEPT if h in first.headers} == {
            h: first.headers[h] for h in KEPT if h in first.headers
        }
        assert again.headers["idempotent-replayed"] == "true"
    rows = query(database, "SELECT count(*) FROM customers WHERE email = %s", body["email"])
    assert rows == [(1,)]
    kept = query(
        database,
        "SELECT subject, key, method, path, status, response_body FROM idempotency_keys "
        "WHERE key = 'create-once'",
    )
    assert kept == [("writer", "create-once", "POST", "/sales/v1/customers", 201, first.content)]


async def test_a_key_names_one_request(sales: httpx.AsyncClient, database: str) -> None:
    first = await sales.post(
        "/sales/v1/customers", json=customer("one@idempotent.example"), headers=with_key("k-one")
    )
    assert first.status_code == 201
    other_body = await sales.post(
        "/sales/v1/customers", json=customer("two@idempotent.example"), headers=with_key("k-one")
    )
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    assert "another body" in other_body.json()["detail"]
    other_path = await sales.post(
        "/sales/v1/customers:batch",
        json=[customer("one@idempotent.example")],
        headers=with_key("k-one"),
    )
    assert other_path.status_code == 422
    assert "was used for POST /sales/v1/customers" in other_path.json()["detail"]
    rows = query(database, "SELECT count(*) FROM customers WHERE email LIKE '%%@idempotent.example' "
                 "AND email IN ('one@idempotent.example', 'two@idempotent.example')")  # fmt: skip
    assert rows == [(1,)]


async def test_keys_belong_to_their_caller(sales: httpx.AsyncClient, database: str) -> None:
    mine = await sales.post(
        "/sales/v1/customers", json=customer("mine@idempotent.example"), headers=with_key("shared")
    )
    theirs = await sales.post(
        "/sales/v1/customers",
        json=customer("theirs@idempotent.example"),
        headers=with_key("shared", OTHER),
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "idempotent-replayed" not in theirs.headers


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "tab\tkey", "del\x7fkey", "caf\u00e9", "\u00a0nbsp", "bell\x07"]
)
async def test_a_key_has_1_to_255_printable_characters(sales: httpx.AsyncClient, key: str) -> None:
    response = await sales.post(
        "/sales/v1/customers",
        json=customer("len@idempotent.example"),
        headers=[(b"Idempotency-Key", key.encode("utf-8"))],
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_idempotency_key"


async def test_a_key_of_255_characters_is_accepted(sales: httpx.AsyncClient) -> None:
    body = customer("longest@idempotent.example")
    first = await sales.post("/sales/v1/customers", json=body, headers=with_key("k" * 255))
    again = await sales.post("/sales/v1/customers", json=body, headers=with_key("k" * 255))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_refused_write_is_not_kept_and_may_be_sent_again(
    sales: httpx.AsyncClient,
) -> None:
    bad = customer("retry@idempotent.example") | {"company_size": "Huge"}
    refused = await sales.post("/sales/v1/customers", json=bad, headers=with_key("retry"))
    assert refused.status_code == 422
    taken = customer("r.hayes@summitfinancial.com")
    conflict = await sales.post("/sales/v1/customers", json=taken, headers=with_key("retry-2"))
    assert conflict.status_code == 409
    good = customer("retry@idempotent.example")
    assert (
        await sales.post("/sales/v1/customers", json=good, headers=with_key("retry"))
    ).status_code == 201


async def test_a_key_expires_after_24_hours(sales: httpx.AsyncClient, database: str) -> None:
    body = customer("expiring@idempotent.example")
    first = await sales.post("/sales/v1/customers", json=body, headers=with_key("expiring"))
    assert first.status_code == 201
    with psycopg.connect(owner_url(database)) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second' "
            "WHERE key = 'expiring'"
        )
        conn.execute("DELETE FROM customers WHERE email = 'expiring@idempotent.example'")
    again = await sales.post("/sales/v1/customers", json=body, headers=with_key("expiring"))
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["customer_id"] != first.json()["customer_id"]
    ages = query(
        database,
        "SELECT now() - created_at < interval '1 minute' FROM idempotency_keys WHERE key = 'expiring'",
    )
    assert ages == [(True,)]


async def test_a_batch_with_a_key_is_written_once(sales: httpx.AsyncClient, database: str) -> None:
    rows = [customer(f"batch{n}@idempotent.example") for n in range(2)]
    first = await sales.post("/sales/v1/customers:batch", json=rows, headers=with_key("batch"))
    again = await sales.post("/sales/v1/customers:batch", json=rows, headers=with_key("batch"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert query(
        database, "SELECT count(*) FROM customers WHERE email LIKE 'batch_@idempotent.example'"
    ) == [(2,)]


@pytest.fixture(scope="module")
def served_sales(database: str, settings: ServiceSettings) -> Iterator[str]:
    with served(
        create_domain_app(domain("sales"), database_url=database, settings=settings)
    ) as url:
        yield url


async def test_twenty_concurrent_requests_with_one_key_write_one_order(
    served_sales: str, database: str
) -> None:
    body = {
        "customer_id": 7,
        "payment_method": "Wire Transfer",
        "sales_rep": "Concurrent Rep",
        "items": [{"product_id": 3, "quantity": 1}],
    }
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(
        base_url=served_sales, headers=WRITER, limits=limits, timeout=30
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post("/sales/v1/orders", json=body, headers=with_key("twenty-at-once"))
                for _ in range(20)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    created = [r for r in responses if r.status_code == 201]
    assert created and all(r.content == created[0].content for r in created)
    assert sum(1 for r in created if "idempotent-replayed" not in r.headers) == 1
    orders = query(database, "SELECT order_id FROM orders WHERE sales_rep = 'Concurrent Rep'")
    assert orders == [(created[0].json()["order_id"],)]
    items = query(database, "SELECT count(*) FROM order_items WHERE order_id = %s", orders[0][0])
    assert items == [(1,)]
    assert dt.datetime.now(dt.UTC)  # the run stays well inside the statement timeout


async def test_the_documented_key_pattern_is_what_the_server_accepts(
    sales: httpx.AsyncClient,
) -> None:
    schema = (await sales.get("/sales/openapi.json")).json()
    operations = [
        operation
        for path in schema["paths"].values()
        for operation in path.values()
        if operation.get("x-write")
    ]
    headers = [
        p["schema"]
        for operation in operations
        for p in operation["parameters"]
        if p["name"] == "Idempotency-Key"
    ]
    # POST x2, PATCH x2, batch x2, DELETE x2, a correction of each of the 4 tables
    assert len(headers) == len(operations) == 12
    pattern = "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$"
    expected = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": pattern}
    assert all(header == expected for header in headers)
    for n, key in enumerate(["~", "a b", "!" + " " * 253 + "~", "7d1c9a1e-order/2024:10?x=1"]):
        body = customer(f"pattern{n}@idempotent.example")
        response = await sales.post("/sales/v1/customers", json=body, headers=with_key(key))
        assert response.status_code == 201, (key, response.text)
