"""The five analytics views against an independent computation from the base tables.

The base tables are read with psycopg into pandas (never the views), each view's figures are
computed here following its documented definition (migrations/*/versions/*.py, the products'
`definition`), and compared row by row, to the cent and NULLs included, with the view's
answer through the HTTP API. Also: every product's declared columns are its source's SQL
columns, in order and type; and Cancelled orders never count in the Sales views.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from services import domain
from shared.declarations.products import ColumnType, Product

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

Rows = dict[Any, dict[str, Any]]  # a view's rows by key


def half_up(value: Decimal) -> Decimal:
    """Round to 2 decimals half away from zero, as PostgreSQL's round(numeric, 2)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def mean(values: pd.Series) -> Decimal:
    """The exact mean of integers or Decimals, rounded half up to 2 decimals."""
    return half_up(
        sum((Decimal(int(v)) if not isinstance(v, Decimal) else v for v in values), ZERO)
        / len(values)
    )


def dsum(values: pd.Series) -> Decimal:
    return sum(values, ZERO)


def read_table(conn: psycopg.Connection, table: str) -> pd.DataFrame:
    """A base table as a DataFrame: numeric as Decimal, dates as date, NULL as None."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")  # table names are literals of this module
        assert cur.description is not None
        columns = [d.name for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=columns).astype(object)


# --- Independent computations of the views ----------------------------------------------


def sales_summary(tables: dict[str, pd.DataFrame]) -> Rows:
    orders = tables["orders"]
    counted = orders[orders["order_status"] != "Cancelled"].copy()
    counted["month"] = counted["order_date"].map(lambda d: d.replace(day=1))
    rows: Rows = {}
    for month, group in counted.groupby("month"):
        rows[month] = {
            "month": month,
            "order_count": len(group),
            "total_revenue": dsum(group["total_amount"]),
            "avg_order_value": mean(group["total_amount"]),
            "unique_customers": group["customer_id"].nunique(),
        }
    return rows


def customer_lifetime_value(tables: dict[str, pd.DataFrame]) -> Rows:
    orders = tables["orders"]
    counted = orders[orders["order_status"] != "Cancelled"]
    rows: Rows = {}
    for c in tables["customers"].itertuples():
        own = counted[counted["customer_id"] == c.customer_id]
        rows[c.customer_id] = {
            "customer_id": c.customer_id,
            "customer_name": c.customer_name,
            "country": c.country,
            "industry": c.industry,
            "total_orders": len(own),
            "lifetime_value": dsum(own["total_amount"]),
            "avg_order_value": mean(own["total_amount"]) if len(own) else None,
            "last_order_date": max(own["order_date"]) if len(own) else None,
        }
    return rows


def product_performance(tables: dict[str, pd.DataFrame]) -> Rows:
    orders = tables["orders"]
    counted = set(orders.loc[orders["order_status"] != "Cancelled", "order_id"])
    items = tables["order_items"]
    lines = items[items["order_id"].isin(counted)]
    rows: Rows = {}
    for p in tables["products"].itertuples():
        own = lines[lines["product_id"] == p.product_id]
        rows[p.product_id] = {
            "product_id": p.product_id,
            "product_name": p.product_name,
            "category": p.category,
            "times_sold": own["order_id"].nunique(),
            "total_quantity": int(sum(own["quantity"])),
            "total_revenue": dsum(own["line_total"]),
            "avg_discount": mean(own["discount_percent"]) if len(own) else None,
        }
    return rows


def campaign_performance(tables: dict[str, pd.DataFrame]) -> Rows:
    leads = tables["leads"]
    rows: Rows = {}
    for c in tables["campaigns"].itertuples():
        own = leads[leads["campaign_id"] == c.campaign_id]
        converted = int((own["status"] == "Converted").sum())
        rows[c.campaign_id] = {
            "campaign_id": c.campaign_id,
            "campaign_name": c.campaign_name,
            "channel": c.channel,
            "budget": c.budget,
            "spent": c.spent,
            "remaining_budget": c.budget - c.spent,
            "budget_utilization_pct": half_up(c.spent * 100 / c.budget) if c.budget else None,
            "total_leads": len(own),
            "converted_leads": converted,
            "conversion_rate": half_up(Decimal(converted * 100) / len(own)) if len(own) else None,
        }
    return rows


def lead_funnel(tables: dict[str, pd.DataFrame]) -> Rows:
    rows: Rows = {}
    for status, group in tables["leads"].groupby("status"):
        rows[status] = {
            "status": status,
            "lead_count": len(group),
            "avg_lead_score": mean(group["lead_score"]),
            "campaigns_contributing": group["campaign_id"].nunique(),
        }
    return rows


Compute = Callable[[dict[str, pd.DataFrame]], Rows]

VIEWS: dict[str, tuple[str, Compute]] = {
    "sales-summary": ("sales", sales_summary),
    "customer-lifetime-value": ("sales", customer_lifetime_value),
    "product-performance": ("sales", product_performance),
    "campaign-performance": ("marketing", campaign_performance),
    "lead-funnel": ("marketing", lead_funnel),
}

TABLES = {
    "sales": ("customers", "products", "orders", "order_items"),
    "marketing": ("campaigns", "leads"),
}


def base_tables(conn: psycopg.Connection, name: str) -> dict[str, pd.DataFrame]:
    return {table: read_table(conn, table) for table in TABLES[name]}


# --- Comparison -------------------------------------------------------------------------


def from_json(product: Product, row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row with its dates parsed, after checking that money has exactly 2 decimals."""
    assert list(row) == list(product.column_names)
    parsed = dict(row)
    for column in product.columns:
        value = row[column.name]
        if value is None:
            continue
        if column.type is ColumnType.DATE:
            parsed[column.name] = dt.date.fromisoformat(value)
        elif column.type is ColumnType.MONEY:
            assert isinstance(value, Decimal), (column.name, value)
            assert value.as_tuple().exponent == -2, (column.name, value)
        elif column.type is ColumnType.DECIMAL:
            assert isinstance(value, Decimal), (column.name, value)
    return parsed


def assert_same_rows(product: Product, actual: list[dict[str, Any]], expected: Rows) -> None:
    """Row by row by key: the same keys, and in each row the same value in every column."""
    (key,) = product.key
    by_key = {row[key]: row for row in actual}
    assert len(by_key) == len(actual), "a key appears twice"
    assert sorted(by_key) == sorted(expected)
    for k, row in expected.items():
        assert list(row) == list(product.column_names)
        for column in product.column_names:
            got, want = by_key[k][column], row[column]
            assert got == want and (got is None) == (want is None), (k, column, got, want)


async def api_rows(client: httpx.AsyncClient, name: str, product: Product) -> list[dict[str, Any]]:
    response = await client.get(f"/{name}/v1/{product.name}", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    assert "next" not in response.links
    rows = json.loads(response.text, parse_float=Decimal)
    return [from_json(product, row) for row in rows]


@pytest.fixture
def clients(sales: httpx.AsyncClient, marketing: httpx.AsyncClient) -> dict[str, httpx.AsyncClient]:
    return {"sales": sales, "marketing": marketing}


@pytest.mark.parametrize("view", list(VIEWS))
async def test_view_equals_independent_computation(
    view: str, clients: dict[str, httpx.AsyncClient], database_urls: dict[str, str]
) -> None:
    name, compute = VIEWS[view]
    product = domain(name).product(view)
    assert product is not None and not product.is_table
    with psycopg.connect(database_urls[name]) as conn:
        expected = compute(base_tables(conn, name))
    actual = await api_rows(clients[name], name, product)
    assert_same_rows(product, actual, expected)


def test_sample_views_key_figures(database_urls: dict[str, str]) -> None:
    """A few of the independently computed figures, literally (the sample as of 2024-10-18)."""
    with psycopg.connect(database_urls["sales"]) as conn:
        sales = base_tables(conn, "sales")
    with psycopg.connect(database_urls["marketing"]) as conn:
        marketing = base_tables(conn, "marketing")
    summary = sales_summary(sales)
    assert sorted(summary) == [dt.date(2024, m, 1) for m in range(4, 11)]
    assert sum(r["order_count"] for r in summary.values()) == 20
    assert sum((r["total_revenue"] for r in summary.values()), ZERO) == Decimal("1193319.36")
    clv = customer_lifetime_value(sales)
    assert clv[15]["total_orders"] == 0 and clv[15]["lifetime_value"] == ZERO
    assert clv[15]["avg_order_value"] is None and clv[15]["last_order_date"] is None
    performance = product_performance(sales)
    assert performance[10]["times_sold"] == 0 and performance[10]["avg_discount"] is None
    funnel = lead_funnel(marketing)
    assert {s: r["lead_count"] for s, r in funnel.items()} == {
        "New": 4,
        "Nurturing": 4,
        "Qualified": 4,
        "Converted": 3,
    }
    campaigns = campaign_performance(marketing)
    assert campaigns[7]["total_leads"] == 0 and campaigns[7]["conversion_rate"] is None
    assert sum(r["converted_leads"] for r in campaigns.values()) == 3


# --- The declaration is the contract ----------------------------------------------------


def declared_sql_type(product: Product, column_name: str) -> str:
    column = product.column(column_name)
    assert column is not None
    return {
        ColumnType.TEXT: "text",
        ColumnType.INTEGER: "integer",
        ColumnType.BIGINT: "bigint",
        ColumnType.MONEY: f"numeric({column.precision},2)",
        ColumnType.DECIMAL: f"numeric({column.precision},{column.scale})",
        ColumnType.DATE: "date",
        ColumnType.TIMESTAMP: "timestamp with time zone",
        ColumnType.BOOLEAN: "boolean",
    }[column.type]


def _contract_cases() -> list[Any]:
    return [
        pytest.param(name, product.name, id=f"{name}-{product.name}")
        for name in ("sales", "marketing")
        for product in domain(name).products
    ]


@pytest.mark.parametrize(("name", "product_name"), _contract_cases())
def test_declared_columns_are_the_sql_columns(
    name: str, product_name: str, database_urls: dict[str, str]
) -> None:
    """Each product of each domain: its declared columns are its source's columns, in order,
    with the SQL type the declared type denotes (and, for tables, the declared nullability)."""
    product = domain(name).product(product_name)
    assert product is not None
    with psycopg.connect(database_urls[name]) as conn:
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace AND n.nspname = 'public' WHERE c.relname = %s",
            (product.source,),
        ).fetchone()
        # tables are tables; views are materialized (shared.storage.view_schema)
        assert kind == ("r" if product.is_table else "m",)
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), NOT attnotnull "
            "FROM pg_attribute WHERE attrelid = ('public.' || quote_ident(%s))::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (product.source,),
        ).fetchall()
    actual = [(column, kind) for column, kind, _ in columns]
    # computed columns (email_key) are not in the table: the framework computes them
    stored = product.stored_columns
    expected = [(c.name, declared_sql_type(product, c.name)) for c in stored]
    assert actual == expected
    computed = [c.name for c in product.columns if c.computed]
    assert not set(computed) & {column for column, *_ in columns}
    if product.is_table:  # a view's columns are always reported nullable
        nullable = [(column, flag) for column, _, flag in columns]
        assert nullable == [(c.name, c.nullable) for c in stored]


def test_every_source_is_declared_once(database_urls: dict[str, str]) -> None:
    """No table or view of a domain's database is left undeclared (alembic's own aside)."""
    for name in ("sales", "marketing"):
        with psycopg.connect(database_urls[name]) as conn:
            sources = {
                table
                for (table,) in conn.execute(
                    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n "
                    "ON n.oid = c.relnamespace AND n.nspname = 'public' "
                    "WHERE c.relkind IN ('r', 'v', 'm') "
                    "AND c.relname NOT LIKE 'alembic\\_version%' AND c.relname NOT IN "
                    "('quality_runs', 'quality_results', 'idempotency_keys', 'view_changes', "
                    "'view_refreshes', 'view_refresh_errors', 'data_changes', 'data_versions')"
                )
            }
        declared = [p.source for p in domain(name).products]
        assert sorted(declared) == sorted(sources), name


# --- Cancelled orders never count -------------------------------------------------------

SALES_VIEWS = {
    "sales_summary": ("month", sales_summary),
    "customer_lifetime_value": ("customer_id", customer_lifetime_value),
    "product_performance": ("product_id", product_performance),
}


def view_rows(conn: psycopg.Connection, view: str, key: str) -> Rows:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {view}")  # view names are literals of this module
        return {row[key]: row for row in cur.fetchall()}


def test_cancelled_orders_do_not_change_the_sales_views(database_urls: dict[str, str]) -> None:
    with psycopg.connect(database_urls["sales"]) as conn:
        before = {view: view_rows(conn, view, key) for view, (key, _) in SALES_VIEWS.items()}
        # Cancelled orders: one in a month without other orders, by the customer without
        # orders, of the product never sold; one in October by customer 1 of products 1 and 7.
        conn.execute(
            "INSERT INTO orders (order_id, customer_id, order_date, order_status, total_amount,"
            " payment_method, sales_rep, region) VALUES"
            " (9001, 15, '2024-03-10', 'Cancelled', 18500.00, 'Wire Transfer', 'Jonas Weber',"
            "  'North America'),"
            " (9002, 1, '2024-10-16', 'Cancelled', 89550.00, 'Purchase Order', 'Sarah Mitchell',"
            "  'North America')"
        )
        conn.execute(
            "INSERT INTO order_items (item_id, order_id, product_id, quantity, unit_price,"
            " discount_percent, line_total) VALUES"
            " (9001, 9001, 10, 2, 9250.00, 0.00, 18500.00),"
            " (9002, 9002, 1, 1, 45000.00, 0.00, 45000.00),"
            " (9003, 9002, 7, 1, 49500.00, 10.00, 44550.00)"
        )
        tables = base_tables(conn, "sales")
        assert (tables["orders"]["order_status"] == "Cancelled").sum() == 2
        for view, (key, compute) in SALES_VIEWS.items():
            after = view_rows(conn, view, key)
            assert after == before[view], view
            assert after == compute(tables), view
        conn.rollback()
        (orders,) = conn.execute("SELECT count(*) FROM orders").fetchone() or (None,)
        (items,) = conn.execute("SELECT count(*) FROM order_items").fetchone() or (None,)
    assert (orders, items) == (20, 41)
