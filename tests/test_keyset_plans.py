"""Keyset paging costs the same at any depth: on a scale data set (20,000 orders, 60,000 items,
2,000 customers), the statement a JSON page runs is an index scan in the page's order with no
sort of the rows, and it reads exactly the page's rows (plus the one telling that more
follow) whether it is the first page or one deep in the product. Checked on PostgreSQL's plan
(EXPLAIN ANALYZE: rows, not times)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest

from services import domain
from services.sales import scale as sales_scale
from shared.reading.query import PiiAccess, parse_read
from shared.reading.rows import json_page_statement
from shared.settings import asyncpg_url
from shared.storage.sample_data import seed_if_empty
from tests.conftest import AS_OF, create_database, owner_url
from tests.postgres import PostgresServer

SCALE = 1000
PAGE = 100


@pytest.fixture(scope="module")
def sales_url(postgres_servers: dict[str, PostgresServer]) -> str:
    """The Sales database seeded at SCALE; the service role's URL."""
    url = create_database(postgres_servers, "sales", "sales_keyset", {})

    async def generate(conn: asyncpg.Connection) -> None:
        await sales_scale.generate(conn, SCALE, AS_OF)

    assert asyncio.run(seed_if_empty(domain("sales"), owner_url(url), generate))
    return url


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def _explain(url: str, product_name: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    product = domain("sales").product(product_name)
    assert product is not None
    query = parse_read(product, params, max_limit=None, pii=PiiAccess.masked())
    statement, args = json_page_statement(query, PAGE, None)
    conn = await asyncpg.connect(asyncpg_url(url).replace("postgresql+asyncpg", "postgresql"))
    try:
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *args)
    finally:
        await conn.close()
    plan: dict[str, Any] = orjson.loads(explained)[0]["Plan"]
    return plan


def plan_of(url: str, product_name: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    return asyncio.run(_explain(url, product_name, params))


def cursor_after(product_name: str, params: list[tuple[str, str]], values: tuple[Any, ...]) -> str:
    """The cursor a page would link to, after a row with these keyset values."""
    product = domain("sales").product(product_name)
    assert product is not None
    return parse_read(product, params, max_limit=None, pii=PiiAccess.masked()).encode_cursor(values)


def scans(plan: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(node type, index, rows read) of every scan of the plan."""
    return [
        (
            n["Node Type"] + (" Backward" if n.get("Scan Direction") == "Backward" else ""),
            n.get("Index Name", ""),
            n["Actual Rows"],
        )
        for n in nodes(plan)
        if "Scan" in n["Node Type"]
    ]


@pytest.mark.parametrize(
    ("product_name", "params", "deep_values", "index"),
    [
        ("orders", [], (15_000,), "orders_pkey"),
        ("order-items", [], (45_000,), "order_items_pkey"),
        ("customers", [("select", "customer_id,customer_name")], (1_500,), "customers_pkey"),
        ("orders", [("order_date", "gte.2024-06-01")], (15_000,), "orders_pkey"),
    ],
    ids=["orders", "order-items", "customers", "orders-filtered"],
)
def test_a_deep_page_reads_as_many_rows_as_the_first(
    sales_url: str,
    product_name: str,
    params: list[tuple[str, str]],
    deep_values: tuple[Any, ...],
    index: str,
) -> None:
    first = plan_of(sales_url, product_name, params)
    deep = plan_of(
        sales_url,
        product_name,
        [*params, ("cursor", cursor_after(product_name, params, deep_values))],
    )
    for plan in (first, deep):
        assert [n["Node Type"] for n in nodes(plan) if "Sort" in n["Node Type"]] == []
        assert scans(plan) == [("Index Scan", index, PAGE + 1)]
    # the cursor is where the index scan starts, not a filter of the rows before it
    (index_cond,) = [n["Index Cond"] for n in nodes(deep) if "Index Cond" in n]
    key = domain("sales").product(product_name).key[0]  # type: ignore[union-attr]
    assert index_cond == f"({key} > {deep_values[0]})"


def test_an_ordered_view_page_is_read_from_its_index(sales_url: str) -> None:
    params = [("order", "lifetime_value.desc")]
    plan = plan_of(sales_url, "customer-lifetime-value", params)
    assert scans(plan) == [
        ("Index Scan Backward", "customer_lifetime_value_lifetime_value_idx", PAGE + 2)
    ]
    # ties of lifetime_value are put in key order: a sort of equal values only
    assert [n["Node Type"] for n in nodes(plan) if "Sort" in n["Node Type"]] == ["Incremental Sort"]


def test_a_deep_page_in_another_order_starts_at_the_cursor_in_that_columns_index(
    sales_url: str,
) -> None:
    params = [("order", "order_date.desc")]
    deep = plan_of(
        sales_url, "orders", [*params, ("cursor", cursor_after("orders", params, (AS_OF, 9_000)))]
    )
    ((kind, index, _),) = scans(deep)
    assert (kind, index) == ("Index Scan Backward", "orders_order_date_idx")
    (index_cond,) = [n["Index Cond"] for n in nodes(deep) if "Index Cond" in n]
    assert index_cond == f"(order_date <= '{AS_OF.isoformat()}'::date)"
