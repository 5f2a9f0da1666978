"""Output formats: every format parsed back equals the JSON answer; negotiation; streaming.

The products read here cover every declared type: integers, text, money (numeric(14,2)),
other decimals, dates and timestamps, with NULLs (customer 15 has no orders; product 10 was
never sold; most leads are not converted).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asgi_lifespan import LifespanManager

from services import domain
from shared.declarations.products import ColumnType, Product
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import ADMIN

Row = dict[str, Any]

MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
STREAMING = tuple(MEDIA)
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")

# (domain, product name, query): products with money, dates, timestamps and NULLs between them
CASES = [
    ("sales", "customer-lifetime-value", {}),
    ("sales", "customers", {}),
    ("sales", "orders", {"order": "total_amount.desc"}),
    ("sales", "product-performance", {"select": "avg_discount,product_name,product_id"}),
    ("marketing", "leads", {"order": "created_at.desc"}),
    ("marketing", "campaign-metrics", {}),  # 728 rows: several database batches per stream
]


def product_of(domain_name: str, name: str) -> Product:
    product = domain(domain_name).product(name)
    assert product is not None
    return product


def typed(product: Product, row: Row) -> Row:
    """A row's values in one comparable form whatever the format they were read from:
    numbers as their exact text (so 0.00 and 0 differ), dates and timestamps as objects."""
    result: Row = {}
    for name, value in row.items():
        column = product.column(name)
        assert column is not None, name
        if value is None:
            result[name] = None
        elif column.type in (ColumnType.MONEY, ColumnType.DECIMAL):
            assert isinstance(value, Decimal | str), (name, value)
            result[name] = str(value)
        elif column.type in (ColumnType.INTEGER, ColumnType.BIGINT):
            result[name] = int(value)
        elif column.type is ColumnType.DATE:
            result[name] = value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
        elif column.type is ColumnType.TIMESTAMP:
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            assert value.utcoffset() == dt.timedelta(0), (name, value)
            result[name] = value
        else:
            assert isinstance(value, str), (name, value)
            result[name] = value
    return result


async def json_rows(client: httpx.AsyncClient, url: str, params: Any = None) -> list[Row]:
    """Every row of a JSON read (numbers as Decimal), following the Link cursor."""
    rows: list[Row] = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url, params=params if next_url == url else None)
        assert response.status_code == 200, response.text
        rows.extend(json.loads(response.text, parse_float=Decimal))
        link = NEXT_LINK.search(response.headers.get("link", ""))
        next_url = link.group(1) if link else None
    return rows


def parse(fmt: str, body: bytes) -> tuple[list[str], list[Row]]:
    """The column names and rows of a streamed body."""
    if fmt == "csv":
        reader = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
        header, *records = list(reader)
        return header, [
            {n: (v if v != "" else None) for n, v in zip(header, r, strict=True)} for r in records
        ]
    if fmt == "ndjson":
        assert body == b"" or body.endswith(b"\n")
        rows = [json.loads(line, parse_float=Decimal) for line in body.decode().splitlines()]
        return (list(rows[0]) if rows else []), rows
    table = (
        pa.ipc.open_stream(body).read_all() if fmt == "arrow" else pq.read_table(io.BytesIO(body))
    )
    return table.column_names, table.to_pylist()


def path_of(domain_name: str, name: str) -> str:
    return f"/{domain_name}/v1/{name}"


def client_of(domain_name: str, sales: httpx.AsyncClient, marketing: httpx.AsyncClient) -> Any:
    return sales if domain_name == "sales" else marketing


@pytest.mark.parametrize("fmt", STREAMING)
@pytest.mark.parametrize(
    ("domain_name", "name", "params"), CASES, ids=[f"{d}-{n}" for d, n, _ in CASES]
)
async def test_format_parsed_back_equals_the_json_answer(
    sales: httpx.AsyncClient,
    marketing: httpx.AsyncClient,
    domain_name: str,
    name: str,
    params: dict[str, str],
    fmt: str,
) -> None:
    client = client_of(domain_name, sales, marketing)
    product = product_of(domain_name, name)
    path = path_of(domain_name, name)
    expected = await json_rows(client, path, params)
    response = await client.get(path, params={**params, "format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MEDIA[fmt]
    columns, rows = parse(fmt, response.content)
    selected = params["select"].split(",") if "select" in params else list(product.column_names)
    if rows or fmt != "ndjson":
        assert columns == selected
    assert [typed(product, r) for r in rows] == [typed(product, r) for r in expected]
    assert len(rows) == {"customer-lifetime-value": 15, "customers": 15, "orders": 20}.get(
        name, len(expected)
    )


async def test_nulls_survive_every_format(sales: httpx.AsyncClient) -> None:
    """Customer 15 has no orders: NULL average order value and last order date."""
    params = {"customer_id": "eq.15", "select": "customer_id,avg_order_value,last_order_date"}
    response = await sales.get("/sales/v1/customer-lifetime-value", params=params)
    assert response.json() == [
        {"customer_id": 15, "avg_order_value": None, "last_order_date": None}
    ]
    for fmt in STREAMING:
        response = await sales.get(
            "/sales/v1/customer-lifetime-value", params={**params, "format": fmt}
        )
        _, rows = parse(fmt, response.content)
        assert [
            (int(r["customer_id"]), r["avg_order_value"], r["last_order_date"]) for r in rows
        ] == [(15, None, None)], fmt


def fields(schema: pa.Schema) -> list[tuple[str, pa.DataType, bool]]:
    return [(f.name, f.type, f.nullable) for f in schema]


async def test_arrow_schema_has_the_declared_types(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/customer-lifetime-value", params={"format": "arrow"})
    schema = pa.ipc.open_stream(response.content).schema
    assert fields(schema) == [
        ("customer_id", pa.int32(), False),
        ("customer_name", pa.string(), False),
        ("country", pa.string(), False),
        ("industry", pa.string(), True),
        ("total_orders", pa.int32(), False),
        ("lifetime_value", pa.decimal128(14, 2), False),
        ("avg_order_value", pa.decimal128(14, 2), True),
        ("last_order_date", pa.date32(), True),
    ]
    assert (
        schema.field("lifetime_value").metadata[b"description"].startswith(b"Sum of total_amount")
    )

    response = await sales.get(
        "/sales/v1/customers",
        params={"format": "arrow", "select": "created_at,customer_id,phone"},
    )
    schema = pa.ipc.open_stream(response.content).schema
    assert fields(schema) == [
        # nullable: a stored infinity (no Arrow timestamp holds it) reads as null
        ("created_at", pa.timestamp("us", tz="UTC"), True),
        ("customer_id", pa.int32(), False),
        ("phone", pa.string(), True),
    ]
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"


async def test_parquet_schema_has_the_declared_types(sales: httpx.AsyncClient) -> None:
    response = await sales.get(
        "/sales/v1/order-items",
        params={"format": "parquet", "select": "item_id,unit_price,discount_percent"},
    )
    assert response.headers["content-disposition"] == 'attachment; filename="order-items.parquet"'
    schema = pq.read_schema(io.BytesIO(response.content))
    assert fields(schema) == [
        ("item_id", pa.int32(), False),
        ("unit_price", pa.decimal128(14, 2), False),
        ("discount_percent", pa.decimal128(5, 2), False),
    ]


# --- Negotiation --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", STREAMING)
async def test_accept_header_and_format_parameter_choose_the_same_format(
    sales: httpx.AsyncClient, fmt: str
) -> None:
    by_parameter = await sales.get("/sales/v1/orders", params={"format": fmt})
    by_accept = await sales.get("/sales/v1/orders", headers={"Accept": MEDIA[fmt].split(";")[0]})
    assert by_parameter.headers["content-type"] == by_accept.headers["content-type"] == MEDIA[fmt]
    assert parse(fmt, by_parameter.content) == parse(fmt, by_accept.content)


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("text/csv;q=0.5, application/x-ndjson;q=0.9", MEDIA["ndjson"]),
        ("application/xml, text/csv;q=0.2", MEDIA["csv"]),
        ("application/vnd.apache.parquet;q=0, text/csv;q=0.1", MEDIA["csv"]),
        ("*/*;q=0.1, application/vnd.apache.arrow.stream;q=0.8", MEDIA["arrow"]),
        ("text/csv;q=0.4, application/vnd.apache.parquet;q=0.7, */*;q=0.5", MEDIA["parquet"]),
        ("application/x-ndjson, text/csv", MEDIA["ndjson"]),  # equal quality: the first
        ("text/csv;q=0.3, application/json", "application/json"),
        ("*/*", "application/json"),
    ],
)
async def test_accept_with_qualities_picks_the_highest_supported(
    sales: httpx.AsyncClient, accept: str, media_type: str
) -> None:
    response = await sales.get("/sales/v1/orders", headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type


async def test_format_parameter_wins_over_accept(sales: httpx.AsyncClient) -> None:
    response = await sales.get(
        "/sales/v1/orders", params={"format": "csv"}, headers={"Accept": "application/json"}
    )
    assert response.headers["content-type"] == MEDIA["csv"]
    assert response.text.splitlines()[0] == (
        "order_id,customer_id,order_date,order_status,total_amount,payment_method,sales_rep,region"
    )


async def test_json_is_the_default(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/orders")
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()) == 20


# --- JSON renderings ---------------------------------------------------------------------


async def test_json_money_has_exactly_two_decimals(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/orders", params={"order_id": "in.(1,5,10)"})
    text = response.text
    assert '"total_amount":79110.00' in text
    assert '"total_amount":94587.50' in text
    response = await sales.get("/sales/v1/customer-lifetime-value", params={"customer_id": "eq.15"})
    assert '"lifetime_value":0.00' in response.text
    assert '"avg_order_value":null' in response.text


MONEY_PRODUCTS = [
    (d, p.name)
    for d in ("sales", "marketing")
    for p in domain(d).products
    if any(c.type is ColumnType.MONEY for c in p.columns)
]


@pytest.mark.parametrize(
    ("domain_name", "name"), MONEY_PRODUCTS, ids=[f"{d}-{n}" for d, n in MONEY_PRODUCTS]
)
async def test_every_money_value_renders_with_two_decimals(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient, domain_name: str, name: str
) -> None:
    client = client_of(domain_name, sales, marketing)
    product = product_of(domain_name, name)
    response = await client.get(path_of(domain_name, name), params={"limit": 1000})
    assert response.status_code == 200
    rows = len(response.json())
    for column in (c for c in product.columns if c.type is ColumnType.MONEY):
        values = re.findall(rf'"{column.name}":([^,}}]+)', response.text)
        assert len(values) == rows > 0
        bad = [v for v in values if not re.fullmatch(r"-?\d+\.\d\d|null", v)]
        assert bad == [], (column.name, bad[:5])


async def test_json_timestamps_are_iso_8601_with_offset(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    response = await sales.get("/sales/v1/customers", params={"customer_id": "eq.1"})
    (row,) = response.json()
    assert row["created_at"] == "2023-04-27T10:00:00+00:00"
    response = await marketing.get(
        "/marketing/v1/leads", params={"select": "created_at,converted_at"}
    )
    stamps = [v for r in response.json() for v in r.values() if v is not None]
    assert len(stamps) == 15 + 3  # every lead was created; three were converted
    assert all(ISO_TIMESTAMP.fullmatch(v) for v in stamps), stamps
    assert all(dt.datetime.fromisoformat(v).utcoffset() == dt.timedelta(0) for v in stamps)


async def test_dates_are_iso_8601(sales: httpx.AsyncClient) -> None:
    response = await sales.get(
        "/sales/v1/orders", params={"order_id": "eq.1", "select": "order_date"}
    )
    assert response.json() == [{"order_date": "2024-04-23"}]
    response = await sales.get(
        "/sales/v1/orders", params={"order_id": "eq.1", "select": "order_date", "format": "csv"}
    )
    assert response.text.splitlines() == ["order_date", "2024-04-23"]


# --- Streaming and paging ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def small_pages(database_urls: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The Sales service with JSON pages of 5 rows."""
    settings = ServiceSettings(json_page_size=5, max_page_size=10_000, stream_batch_rows=100)
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"], settings=settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:
            yield client


async def test_json_stops_at_the_page_size_with_a_next_link(
    small_pages: httpx.AsyncClient,
) -> None:
    response = await small_pages.get("/sales/v1/orders")
    assert [r["order_id"] for r in response.json()] == [1, 2, 3, 4, 5]
    assert response.headers["content-range"] == "0-4/*"
    assert NEXT_LINK.search(response.headers["link"])
    assert len(await json_rows(small_pages, "/sales/v1/orders")) == 20


@pytest.mark.parametrize("fmt", STREAMING)
async def test_streaming_formats_return_every_row_without_a_limit(
    small_pages: httpx.AsyncClient, fmt: str
) -> None:
    response = await small_pages.get("/sales/v1/orders", params={"format": fmt})
    assert response.status_code == 200
    assert "link" not in response.headers
    _, rows = parse(fmt, response.content)
    assert [int(r["order_id"]) for r in rows] == list(range(1, 21))


@pytest.mark.parametrize("fmt", STREAMING)
async def test_streaming_formats_honour_limit_offset_and_filters(
    small_pages: httpx.AsyncClient, fmt: str
) -> None:
    params = {"format": fmt, "order_status": "eq.Completed", "order": "order_id.desc"}
    response = await small_pages.get("/sales/v1/orders", params={**params, "limit": 3, "offset": 2})
    _, rows = parse(fmt, response.content)
    assert [int(r["order_id"]) for r in rows] == [13, 12, 11]


async def test_large_product_streams_in_one_response(marketing: httpx.AsyncClient) -> None:
    """3660 rows: JSON pages of 1000 with a cursor; each streaming format in one answer."""
    expected = await json_rows(marketing, "/marketing/v1/website-traffic")
    assert len(expected) == 3660
    product = product_of("marketing", "website-traffic")
    for fmt in STREAMING:
        response = await marketing.get("/marketing/v1/website-traffic", params={"format": fmt})
        _, rows = parse(fmt, response.content)
        assert [typed(product, r) for r in rows] == [typed(product, r) for r in expected], fmt


@pytest.mark.parametrize("fmt", STREAMING)
async def test_count_exact_on_a_streaming_format(sales: httpx.AsyncClient, fmt: str) -> None:
    response = await sales.get(
        "/sales/v1/orders",
        params={"format": fmt, "order_status": "eq.Completed", "limit": 4},
        headers={"Prefer": "count=exact"},
    )
    assert response.status_code == 200
    assert response.headers["content-range"] == "*/15"
    assert response.headers["preference-applied"] == "count=exact"
    _, rows = parse(fmt, response.content)
    assert [int(r["order_id"]) for r in rows] == [1, 2, 3, 4]


async def test_empty_result_in_every_format(sales: httpx.AsyncClient) -> None:
    for fmt in STREAMING:
        response = await sales.get(
            "/sales/v1/orders",
            params={
                "format": fmt,
                "order_status": "eq.Cancelled",
                "select": "order_id,total_amount",
            },
        )
        assert response.status_code == 200
        columns, rows = parse(fmt, response.content)
        assert rows == [], fmt
        if fmt != "ndjson":
            assert columns == ["order_id", "total_amount"], fmt
        else:
            assert response.content == b""
