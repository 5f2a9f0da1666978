"""The PostgREST read grammar of the data products, against the Sales sample data.

Every expectation is computed here from the rows read straight from PostgreSQL with psycopg
(filtered and sorted in Python), never by asking the API a second time.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from operator import itemgetter
from typing import Any

import httpx
import psycopg
import pytest
from postgrest import CountMethod, SyncPostgrestClient
from psycopg import sql

from services import domain
from shared.reading.query import PiiAccess, parse_read
from shared.security.pseudonym import pseudonym
from shared.serving.app import create_domain_app
from tests.conftest import ADMIN, PSEUDONYM_SECRET
from tests.servers import served

Row = dict[str, Any]
Tables = dict[str, list[Row]]

SALES = domain("sales")
KEY = {p.source: p.key[0] for p in SALES.products}
PATH = {p.source: f"/sales/v1/{p.name}" for p in SALES.products}
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')

# Two product descriptions that contain commas: in.() must keep each one whole.
ANALYTICS = "Self-hosted analytics platform with semantic layer, dashboards and governed sharing."
GOVERNANCE = "Catalog, lineage, access policies and data quality monitoring in one suite."


@pytest.fixture(scope="module")
def tables(database_urls: dict[str, str]) -> Tables:
    """Every Sales table and view, read straight from PostgreSQL: the oracle of this module."""
    rows: Tables = {}
    with psycopg.connect(database_urls["sales"]) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for product in SALES.products:
            cursor = conn.execute(
                sql.SQL("SELECT * FROM {}").format(sql.Identifier(product.source))
            )
            names = [d.name for d in cursor.description or ()]
            rows[product.source] = [dict(zip(names, r, strict=True)) for r in cursor]
    return rows


def as_json(value: Any) -> Any:
    """A database value as the JSON answer renders it (numbers parsed as Decimal)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def ordered(rows: list[Row], terms: list[tuple[str, bool, bool | None]], key: str) -> list[Row]:
    """Rows sorted like ORDER BY: (column, descending, nulls_first) terms, then the key."""
    result = list(rows)
    for column, descending, nulls_first in reversed([*terms, (key, False, None)]):
        first = descending if nulls_first is None else nulls_first  # PostgreSQL's default
        nulls = [r for r in result if r[column] is None]
        values = sorted(
            (r for r in result if r[column] is not None),
            key=itemgetter(column),
            reverse=descending,
        )
        result = nulls + values if first else values + nulls
    return result


async def get_rows(
    client: httpx.AsyncClient, url: str, params: Any = None, headers: Any = None
) -> tuple[list[Row], httpx.Response]:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    rows = json.loads(response.text, parse_float=Decimal)
    assert isinstance(rows, list)
    return rows, response


# --- Filters ---------------------------------------------------------------------------

Case = tuple[str, str, str, Callable[[Row], bool]]
D = Decimal

FILTERS: list[Case] = [
    ("orders", "customer_id", "eq.1", lambda r: r["customer_id"] == 1),
    ("orders", "order_status", "eq.Processing", lambda r: r["order_status"] == "Processing"),
    ("orders", "order_status", "neq.Completed", lambda r: r["order_status"] != "Completed"),
    ("orders", "total_amount", "gt.60662.50", lambda r: r["total_amount"] > D("60662.50")),
    ("orders", "total_amount", "gte.60662.50", lambda r: r["total_amount"] >= D("60662.50")),
    # compared exactly, not after rounding the value to the column's 2 decimals
    ("orders", "total_amount", "gt.60662.495", lambda r: r["total_amount"] > D("60662.495")),
    ("orders", "total_amount", "lt.40374.51", lambda r: r["total_amount"] < D("40374.51")),
    ("orders", "total_amount", "lte.40374.51", lambda r: r["total_amount"] <= D("40374.51")),
    ("orders", "order_date", "lt.2024-06-16", lambda r: r["order_date"] < dt.date(2024, 6, 16)),
    (
        "orders",
        "order_date",
        "lte.2024-06-16",
        lambda r: r["order_date"] <= dt.date(2024, 6, 16),
    ),
    (
        "customers",
        "created_at",
        "gt.2024-05-21T10:00:00+00:00",
        lambda r: r["created_at"] > dt.datetime(2024, 5, 21, 10, tzinfo=dt.UTC),
    ),
    (
        "customers",
        "created_at",
        "gte.2024-05-21T12:00:00+02:00",  # the same instant, written with another offset
        lambda r: r["created_at"] >= dt.datetime(2024, 5, 21, 10, tzinfo=dt.UTC),
    ),
    ("customers", "country", "in.(UK,Germany)", lambda r: r["country"] in ("UK", "Germany")),
    ("orders", "order_id", "in.(3,5,8,40)", lambda r: r["order_id"] in (3, 5, 8, 40)),
    (
        "products",
        "description",
        f'in.("{ANALYTICS}","{GOVERNANCE}")',
        lambda r: r["description"] in (ANALYTICS, GOVERNANCE),
    ),
    (
        "product_performance",
        "avg_discount",
        "in.(7.5,3)",
        lambda r: r["avg_discount"] in (D("7.50"), D("3.00")),
    ),
    ("customers", "customer_name", "like.*Group", lambda r: r["customer_name"].endswith("Group")),
    ("customers", "email", "like.*.co.uk", lambda r: r["email"].endswith(".co.uk")),
    ("customers", "customer_name", "like.*Systeme*", lambda r: "Systeme" in r["customer_name"]),
    (
        "customers",
        "customer_name",
        "ilike.*SYSTEME*",
        lambda r: "systeme" in r["customer_name"].lower(),
    ),
    ("customers", "email", "ilike.*@THAMES*", lambda r: "@thames" in r["email"].lower()),
    (
        "customer_lifetime_value",
        "avg_order_value",
        "is.null",
        lambda r: r["avg_order_value"] is None,
    ),
    (
        "customer_lifetime_value",
        "last_order_date",
        "not.is.null",
        lambda r: r["last_order_date"] is not None,
    ),
    ("product_performance", "avg_discount", "is.null", lambda r: r["avg_discount"] is None),
    ("orders", "customer_id", "not.eq.1", lambda r: r["customer_id"] != 1),
    (
        "orders",
        "order_status",
        "not.in.(Completed,Processing)",
        lambda r: r["order_status"] not in ("Completed", "Processing"),
    ),
    (
        "customers",
        "customer_name",
        "not.like.*Group*",
        lambda r: "Group" not in r["customer_name"],
    ),
    (
        "customers",
        "email",
        "not.ilike.*.CA",
        lambda r: not r["email"].lower().endswith(".ca"),
    ),
    # a comparison with NULL is unknown, and so is its negation: the row is left out
    (
        "customer_lifetime_value",
        "avg_order_value",
        "not.gt.80000",
        lambda r: r["avg_order_value"] is not None and not r["avg_order_value"] > 80000,
    ),
    (
        "customer_lifetime_value",
        "avg_order_value",
        "neq.88065.00",
        lambda r: r["avg_order_value"] is not None and r["avg_order_value"] != D("88065.00"),
    ),
    (
        "customer_lifetime_value",
        "last_order_date",
        "not.lt.2024-09-01",
        lambda r: (
            r["last_order_date"] is not None and not r["last_order_date"] < dt.date(2024, 9, 1)
        ),
    ),
]


@pytest.mark.parametrize(
    ("source", "column", "expression", "keep"),
    FILTERS,
    ids=[f"{s}.{c}={e}" for s, c, e, _ in FILTERS],
)
async def test_filter_returns_exactly_the_matching_rows(
    sales: httpx.AsyncClient,
    tables: Tables,
    source: str,
    column: str,
    expression: str,
    keep: Callable[[Row], bool],
) -> None:
    key = KEY[source]
    expected = {r[key] for r in tables[source] if keep(r)}
    assert 0 < len(expected) < len(tables[source]), "the case must tell rows apart"
    rows, _ = await get_rows(sales, PATH[source], params={column: expression})
    assert sorted(r[key] for r in rows) == sorted(expected)


async def test_filters_on_several_columns_all_apply(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    params = [
        ("order_status", "eq.Completed"),
        ("total_amount", "gte.40000"),
        ("total_amount", "lt.90000"),
        ("region", "not.eq.Europe"),
    ]
    expected = {
        r["order_id"]
        for r in tables["orders"]
        if r["order_status"] == "Completed"
        and D(40000) <= r["total_amount"] < D(90000)
        and r["region"] != "Europe"
    }
    rows, _ = await get_rows(sales, PATH["orders"], params=params)
    assert [r["order_id"] for r in rows] == sorted(expected)
    assert expected == {1, 3, 4, 7, 9, 10}


async def test_in_with_quoted_value_is_one_value_not_two(sales: httpx.AsyncClient) -> None:
    # unquoted, the comma splits the description into two values that match nothing
    halves = (
        "in.(Self-hosted analytics platform with semantic layer, dashboards and governed sharing.)"
    )
    rows, _ = await get_rows(sales, PATH["products"], params={"description": halves})
    assert rows == []
    rows, _ = await get_rows(sales, PATH["products"], params={"description": f'in.("{ANALYTICS}")'})
    assert [r["product_id"] for r in rows] == [1]


async def test_in_with_an_empty_list_matches_nothing(sales: httpx.AsyncClient) -> None:
    rows, _ = await get_rows(sales, PATH["customers"], params={"customer_id": "in.()"})
    assert rows == []
    rows, _ = await get_rows(sales, PATH["customers"], params={"customer_id": "not.in.()"})
    assert len(rows) == 15


def test_in_list_parsing_keeps_quoted_and_empty_values() -> None:
    customers = SALES.product("customers")
    assert customers is not None

    def values(expression: str) -> Any:
        (parsed,) = parse_read(
            customers, [("country", expression)], max_limit=None, pii=PiiAccess("sales:pii", True)
        ).filters
        return parsed.value

    assert values('in.("UK,Germany",France)') == ["UK,Germany", "France"]
    assert values('in.("say \\"hi\\"",x)') == ['say "hi"', "x"]
    assert values('in.("")') == [""]
    assert values("in.(a,)") == ["a", ""]
    assert values("in.()") == []


async def test_values_reach_sql_as_values(sales: httpx.AsyncClient) -> None:
    """A value that looks like SQL is compared as text, never run."""
    injection = "x' OR '1'='1"
    rows, _ = await get_rows(sales, PATH["customers"], params={"country": f"eq.{injection}"})
    assert rows == []
    rows, _ = await get_rows(sales, PATH["customers"], params={"country": f"not.eq.{injection}"})
    assert len(rows) == 15


# --- Ordering, select, limit and offset -----------------------------------------------------

ORDERS: list[tuple[str, str, list[tuple[str, bool, bool | None]]]] = [
    ("orders", "total_amount.desc", [("total_amount", True, None)]),
    (
        "orders",
        "customer_id.asc,order_date.desc",
        [("customer_id", False, None), ("order_date", True, None)],
    ),
    (
        "customer_lifetime_value",
        "total_orders.desc,country,lifetime_value.asc",
        [("total_orders", True, None), ("country", False, None), ("lifetime_value", False, None)],
    ),
    ("customer_lifetime_value", "avg_order_value.desc", [("avg_order_value", True, None)]),
    ("customer_lifetime_value", "avg_order_value.asc", [("avg_order_value", False, None)]),
    (
        "customer_lifetime_value",
        "last_order_date.asc.nullsfirst",
        [("last_order_date", False, True)],
    ),
    (
        "customer_lifetime_value",
        "last_order_date.desc.nullslast,customer_id.desc",
        [("last_order_date", True, False), ("customer_id", True, None)],
    ),
    (
        "customer_lifetime_value",
        "country.desc,avg_order_value.nullsfirst",
        [("country", True, None), ("avg_order_value", False, True)],
    ),
    (
        "product_performance",
        "category,avg_discount.desc.nullslast",
        [("category", False, None), ("avg_discount", True, False)],
    ),
]


@pytest.mark.parametrize(
    ("source", "order", "terms"), ORDERS, ids=[f"{s}:{o}" for s, o, _ in ORDERS]
)
async def test_order_gives_the_exact_sequence(
    sales: httpx.AsyncClient,
    tables: Tables,
    source: str,
    order: str,
    terms: list[tuple[str, bool, bool | None]],
) -> None:
    key = KEY[source]
    expected = [r[key] for r in ordered(tables[source], terms, key)]
    rows, _ = await get_rows(sales, PATH[source], params={"order": order})
    assert [r[key] for r in rows] == expected


async def test_nulls_sort_last_ascending_and_first_descending_by_default(
    sales: httpx.AsyncClient,
) -> None:
    """Customer 15 has no orders: its average order value is NULL."""
    path = PATH["customer_lifetime_value"]
    rows, _ = await get_rows(sales, path, params={"order": "avg_order_value.asc"})
    assert rows[-1]["customer_id"] == 15 and rows[-1]["avg_order_value"] is None
    rows, _ = await get_rows(sales, path, params={"order": "avg_order_value.desc"})
    assert rows[0]["customer_id"] == 15 and rows[0]["avg_order_value"] is None
    rows, _ = await get_rows(sales, path, params={"order": "avg_order_value.desc.nullslast"})
    assert rows[-1]["customer_id"] == 15


async def test_select_returns_exactly_those_keys_in_that_order(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    select = "lifetime_value,customer_id,last_order_date"
    rows, _ = await get_rows(
        sales, PATH["customer_lifetime_value"], params={"select": select, "order": "customer_id"}
    )
    assert [list(r) for r in rows] == [select.split(",")] * 15
    expected = [
        {c: as_json(r[c]) for c in select.split(",")}
        for r in ordered(tables["customer_lifetime_value"], [], "customer_id")
    ]
    assert rows == expected


async def test_select_star_and_default_return_every_declared_column(
    sales: httpx.AsyncClient,
) -> None:
    customers = SALES.product("customers")
    assert customers is not None
    declared = list(customers.column_names)
    for params in ({}, {"select": "*"}):
        rows, _ = await get_rows(sales, PATH["customers"], params=params)
        assert all(list(r) == declared for r in rows)


async def test_limit_and_offset_cut_the_ordered_rows(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    everything = [
        r["order_id"] for r in ordered(tables["orders"], [("total_amount", True, None)], "order_id")
    ]
    rows, response = await get_rows(
        sales, PATH["orders"], params={"order": "total_amount.desc", "limit": 4, "offset": 3}
    )
    assert [r["order_id"] for r in rows] == everything[3:7]
    assert response.headers["content-range"] == "3-6/*"
    rows, _ = await get_rows(sales, PATH["orders"], params={"offset": 18})
    assert [r["order_id"] for r in rows] == [19, 20]
    rows, response = await get_rows(sales, PATH["orders"], params={"offset": 20})
    assert rows == []
    assert "link" not in response.headers


# --- Keyset paging ----------------------------------------------------------------------

PAGINGS: list[tuple[str, dict[str, str], list[tuple[str, bool, bool | None]], int]] = [
    ("orders", {}, [], 3),
    ("orders", {"order": "total_amount.desc"}, [("total_amount", True, None)], 4),
    (
        "orders",
        {"order": "order_date.desc,total_amount", "order_status": "neq.Pending"},
        [("order_date", True, None), ("total_amount", False, None)],
        5,
    ),
    (
        "customer_lifetime_value",
        {"order": "avg_order_value.desc"},  # NULL first
        [("avg_order_value", True, None)],
        2,
    ),
    (
        "customer_lifetime_value",
        {"order": "last_order_date.asc"},  # NULL last
        [("last_order_date", False, None)],
        4,
    ),
    (
        "customer_lifetime_value",
        {"order": "avg_order_value.asc.nullsfirst,customer_id.desc"},
        [("avg_order_value", False, True), ("customer_id", True, None)],
        3,
    ),
    (
        "customer_lifetime_value",
        {"order": "total_orders.desc,last_order_date.desc.nullslast", "select": "customer_name"},
        [("total_orders", True, None), ("last_order_date", True, False)],
        2,
    ),
    (
        "product_performance",
        {"order": "avg_discount.desc.nullslast,times_sold"},
        [("avg_discount", True, False), ("times_sold", False, None)],
        3,
    ),
]


@pytest.mark.parametrize(
    ("source", "params", "terms", "limit"),
    PAGINGS,
    ids=[f"{s}:{p.get('order', 'key')}:{n}" for s, p, _, n in PAGINGS],
)
async def test_keyset_paging_loses_and_repeats_no_row(
    sales: httpx.AsyncClient,
    tables: Tables,
    source: str,
    params: dict[str, str],
    terms: list[tuple[str, bool, bool | None]],
    limit: int,
) -> None:
    key = KEY[source]
    path = PATH[source]
    unpaged, _ = await get_rows(sales, path, params=params)
    filtered = tables[source]
    if "order_status" in params:
        filtered = [r for r in filtered if r["order_status"] != "Pending"]
    expected = [r[key] for r in ordered(filtered, terms, key)]
    if "select" not in params:
        assert [r[key] for r in unpaged] == expected

    pages: list[list[Row]] = []
    url: str | None = f"{path}?{httpx.QueryParams({**params, 'limit': limit})}"
    while url is not None:
        page, response = await get_rows(sales, url, headers={"Prefer": "count=exact"})
        start = sum(len(p) for p in pages)
        assert (
            response.headers["content-range"] == f"{start}-{start + len(page) - 1}/{len(expected)}"
        )
        pages.append(page)
        link = NEXT_LINK.search(response.headers.get("link", ""))
        url = link.group(1) if link else None
        assert len(pages) <= len(expected), "the cursor never ends"

    assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= limit
    assert len(pages) == -(-len(expected) // limit)
    assert [r for p in pages for r in p] == unpaged
    if "select" in params:
        names = {r[key]: r["customer_name"] for r in tables[source]}
        assert [r["customer_name"] for r in unpaged] == [names[k] for k in expected]


async def test_next_link_keeps_filters_select_and_limit(sales: httpx.AsyncClient) -> None:
    _, response = await get_rows(
        sales,
        PATH["orders"],
        params={"select": "order_id", "region": "eq.Europe", "limit": "2", "offset": "1"},
    )
    link = NEXT_LINK.search(response.headers["link"])
    assert link is not None
    params = httpx.URL(link.group(1)).params
    assert sorted(params.keys()) == ["cursor", "limit", "region", "select"]
    assert (params["select"], params["region"], params["limit"]) == ("order_id", "eq.Europe", "2")


# --- Counts -----------------------------------------------------------------------------


async def test_count_exact_gives_the_total_in_content_range(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    completed = sum(1 for r in tables["orders"] if r["order_status"] == "Completed")
    assert completed == 15
    rows, response = await get_rows(
        sales,
        PATH["orders"],
        params={"order_status": "eq.Completed", "limit": 5, "offset": 2},
        headers={"Prefer": "count=exact"},
    )
    assert len(rows) == 5
    assert response.headers["content-range"] == "2-6/15"
    assert response.headers["preference-applied"] == "count=exact"

    _, response = await get_rows(
        sales,
        PATH["orders"],
        params={"order_status": "eq.Cancelled"},
        headers={"Prefer": "count=exact"},
    )
    assert response.headers["content-range"] == "*/0"


async def test_count_planned_is_the_planner_estimate(sales: httpx.AsyncClient) -> None:
    rows, response = await get_rows(
        sales, PATH["customers"], params={"limit": 3}, headers={"Prefer": "count=planned"}
    )
    assert len(rows) == 3
    assert re.fullmatch(r"0-2/\d+", response.headers["content-range"])
    assert response.headers["preference-applied"] == "count=planned"


async def test_count_estimated_is_exact_on_a_small_table(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    rows, response = await get_rows(
        sales,
        PATH["customer_lifetime_value"],
        params={"limit": 3, "country": "eq.USA"},
        headers={"Prefer": "return=representation, count=estimated"},
    )
    usa = sum(1 for r in tables["customer_lifetime_value"] if r["country"] == "USA")
    assert usa == 4 and len(rows) == 3
    assert response.headers["content-range"] == "0-2/4"
    assert response.headers["preference-applied"] == "count=estimated"


async def test_without_prefer_the_total_is_unknown(sales: httpx.AsyncClient) -> None:
    _, response = await get_rows(sales, PATH["customers"], params={"limit": 3})
    assert response.headers["content-range"] == "0-2/*"
    assert "preference-applied" not in response.headers


# --- Paths: alias, single row, catalogue ------------------------------------------------


@pytest.mark.parametrize("source", ["customers", "orders", "customer_lifetime_value"])
async def test_unversioned_alias_serves_the_current_version(
    sales: httpx.AsyncClient, source: str
) -> None:
    versioned, _ = await get_rows(sales, PATH[source])
    alias, _ = await get_rows(sales, PATH[source].replace("/v1/", "/"))
    assert alias == versioned
    assert len(alias) > 0


async def test_single_row_by_key_is_the_exact_object(
    sales: httpx.AsyncClient, tables: Tables
) -> None:
    (row,) = [r for r in tables["customers"] if r["customer_id"] == 3]
    response = await sales.get("/sales/v1/customers/3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # the stored columns, and email_key computed from email (tests/test_pii.py checks it)
    expected = {k: as_json(v) for k, v in row.items()}
    expected["email_key"] = pseudonym(PSEUDONYM_SECRET, row["email"])
    assert json.loads(response.text) == expected
    customers = SALES.product("customers")
    assert customers is not None
    assert list(json.loads(response.text)) == list(customers.column_names)
    assert json.loads(response.text)["created_at"] == "2023-08-25T10:00:00+00:00"

    response = await sales.get("/sales/v1/customers/3", params={"select": "email,customer_id"})
    assert response.json() == {"email": "a.clarke@thamesretail.co.uk", "customer_id": 3}


async def test_single_row_that_does_not_exist_is_404(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/customers/16")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


async def test_catalogue_lists_every_declared_product(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1")
    assert response.status_code == 200
    catalogue = response.json()
    assert [(p["name"], p["path"]) for p in catalogue] == [
        (p.name, f"/sales/v1/{p.name}") for p in SALES.products
    ]
    assert [p["name"] for p in catalogue] == [
        "customers",
        "products",
        "orders",
        "order-items",
        "sales-summary",
        "customer-lifetime-value",
        "product-performance",
    ]
    for entry, product in zip(catalogue, SALES.products, strict=True):
        assert [c["name"] for c in entry["columns"]] == list(product.column_names)
        assert entry["key"] == list(product.key)
        assert entry["kind"] == ("table" if product.is_table else "view")


# --- A real PostgREST client ------------------------------------------------------------


@pytest.fixture(scope="module")
def sales_http(database_urls: dict[str, str]) -> Iterator[str]:
    """The Sales service on a real HTTP port; its base URL."""
    with served(create_domain_app(SALES, database_url=database_urls["sales"])) as url:
        yield url


def test_postgrest_client_reads_our_products(sales_http: str, tables: Tables) -> None:
    clv = ordered(
        tables["customer_lifetime_value"], [("lifetime_value", True, None)], "customer_id"
    )
    with SyncPostgrestClient(f"{sales_http}/sales/v1", headers=ADMIN) as client:
        top = (
            client.from_("customer-lifetime-value")
            .select("customer_id,lifetime_value")
            .order("lifetime_value", desc=True)
            .limit(3)
            .execute()
        )
        assert top.data == [
            {"customer_id": r["customer_id"], "lifetime_value": float(r["lifetime_value"])}
            for r in clv[:3]
        ]
        assert top.data == [
            {"customer_id": 11, "lifetime_value": 199887.5},
            {"customer_id": 1, "lifetime_value": 189180.0},
            {"customer_id": 4, "lifetime_value": 159885.0},
        ]

        by_customer = client.from_("orders").select("order_id").eq("customer_id", 1).execute()
        assert by_customer.data == [{"order_id": 1}, {"order_id": 12}]

        in_countries = (
            client.from_("customers")
            .select("customer_id")
            .in_("country", ["UK", "Germany"])
            .order("customer_id")
            .execute()
        )
        assert in_countries.data == [
            {"customer_id": r["customer_id"]}
            for r in ordered(tables["customers"], [], "customer_id")
            if r["country"] in ("UK", "Germany")
        ]
        assert len(in_countries.data) == 4

        large = (
            client.from_("orders")
            .select("order_id,total_amount")
            .gt("total_amount", "90000")
            .order("total_amount", desc=True)
            .execute()
        )
        assert large.data == [
            {"order_id": r["order_id"], "total_amount": float(r["total_amount"])}
            for r in ordered(tables["orders"], [("total_amount", True, None)], "order_id")
            if r["total_amount"] > 90000
        ]
        large_rows: list[Any] = large.data
        assert [(r["order_id"], r["total_amount"]) for r in large_rows] == [
            (12, 110070.0),
            (19, 105300.0),
            (5, 94587.5),
            (6, 91410.0),
        ]

        counted = (
            client.from_("customers")
            .select("customer_id", count=CountMethod.exact)
            .eq("country", "USA")
            .limit(2)
            .execute()
        )
        assert counted.count == 4
        assert counted.data == [{"customer_id": 1}, {"customer_id": 7}]

    # values with commas, quoted by the client
    with SyncPostgrestClient(f"{sales_http}/sales/v1", headers=ADMIN) as client:
        described = (
            client.from_("products")
            .select("product_id")
            .in_("description", [ANALYTICS, GOVERNANCE, "no such product"])
            .order("product_id")
            .execute()
        )
        assert described.data == [{"product_id": 1}, {"product_id": 4}]
