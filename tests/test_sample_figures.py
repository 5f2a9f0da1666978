"""Every sample-data figure of PRODUCT.md section 6, read through the HTTP API.

The figures are asserted on the JSON answers of the data products (money parsed as Decimal),
against the databases the fixtures loaded with the sample as of AS_OF (2024-10-18). The
six-month window ending at AS_OF is (2024-04-18, 2024-10-18]: 2024-04-19 to 2024-10-18.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pandas as pd
import pytest

from services import domain, sample
from shared.storage.sample_data import load_if_empty
from tests.conftest import AS_OF

CENT = Decimal("0.01")
WINDOW_FIRST = dt.date(2024, 4, 19)  # the day after AS_OF - 6 months
WINDOW_LAST = AS_OF
WINDOW_DAYS = [
    WINDOW_FIRST + dt.timedelta(days=i) for i in range((WINDOW_LAST - WINDOW_FIRST).days + 1)
]

COUNTRIES = {"USA", "UK", "Germany", "France", "Australia", "Canada"}
REGION_OF_COUNTRY = {
    "USA": "North America",
    "Canada": "North America",
    "UK": "Europe",
    "Germany": "Europe",
    "France": "Europe",
    "Australia": "Asia Pacific",
}
PAGES = {"/", "/pricing", "/product", "/blog", "/contact"}
SOURCES = {"Organic", "Paid Search", "Social Media", "Email"}

# The total of all 20 orders' total_amount, to the cent.
ORDERS_TOTAL = Decimal("1193319.36")


async def read_all(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every row of a product as JSON (numbers as Decimal), following the keyset cursor."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    pages = 0
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        page = json.loads(response.text, parse_float=Decimal)
        assert isinstance(page, list)
        rows.extend(page)
        pages += 1
        assert pages < 100, "the cursor never ends"
        url = response.links.get("next", {}).get("url")
    return rows


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame, money and decimals kept as Decimal objects."""
    return pd.DataFrame.from_records(rows)


def is_cents(value: Any) -> bool:
    """A money value from JSON: a Decimal with exactly two decimals."""
    return isinstance(value, Decimal) and value.as_tuple().exponent == -2


def half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def assert_unique(df: pd.DataFrame, *columns: str) -> None:
    duplicated = df[df.duplicated(list(columns), keep=False)]
    assert duplicated.empty, duplicated


# --- Sales -------------------------------------------------------------------------------


async def test_customers(sales: httpx.AsyncClient) -> None:
    customers = frame(await read_all(sales, "/sales/v1/customers"))
    assert len(customers) == 15
    assert_unique(customers, "customer_id")
    assert set(customers["country"]) == COUNTRIES
    assert set(customers["company_size"]) == {"Enterprise", "Mid-Market", "Small"}
    emails = customers["email"].str.strip().str.lower()
    assert emails.is_unique, emails[emails.duplicated(keep=False)]


@pytest.mark.parametrize(
    "path",
    [
        "/sales/v1/products",
        "/sales/products",  # the un-versioned alias of the current version
    ],
)
async def test_products(sales: httpx.AsyncClient, path: str) -> None:
    products = frame(await read_all(sales, path))
    assert len(products) == 10
    assert_unique(products, "product_id")
    assert set(products["category"]) == {"Software", "Infrastructure"}
    for row in products.itertuples():
        assert is_cents(row.price) and is_cents(row.cost), row
        assert Decimal("8000.00") <= row.price <= Decimal("50000.00"), row
        assert row.cost < row.price, row


async def test_orders_statuses_regions_and_dates(sales: httpx.AsyncClient) -> None:
    orders = frame(await read_all(sales, "/sales/v1/orders"))
    customers = frame(await read_all(sales, "/sales/v1/customers"))
    assert len(orders) == 20
    assert_unique(orders, "order_id")
    assert set(orders["order_status"]) == {"Completed", "Processing", "Pending"}

    joined = orders.merge(
        customers[["customer_id", "country"]], on="customer_id", how="left", indicator=True
    )
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"]
    expected_region = joined["country"].map(REGION_OF_COUNTRY)
    mismatched = joined[joined["region"] != expected_region]
    assert mismatched.empty, mismatched[["order_id", "country", "region"]]

    dates = orders["order_date"].map(dt.date.fromisoformat)
    outside = orders[(dates < WINDOW_FIRST) | (dates > WINDOW_LAST)]
    assert outside.empty, outside[["order_id", "order_date"]]


async def test_total_of_all_orders(sales: httpx.AsyncClient) -> None:
    orders = await read_all(sales, "/sales/v1/orders")
    assert all(is_cents(o["total_amount"]) for o in orders)
    total = sum((o["total_amount"] for o in orders), Decimal("0.00"))
    assert total == ORDERS_TOTAL
    assert Decimal("1150000") <= total <= Decimal("1250000")


async def test_order_totals_equal_their_line_totals(sales: httpx.AsyncClient) -> None:
    orders = frame(await read_all(sales, "/sales/v1/orders"))
    items = frame(await read_all(sales, "/sales/v1/order-items"))
    assert_unique(items, "item_id")
    assert set(items["order_id"]) == set(orders["order_id"])  # every order has lines

    for row in items.itertuples():
        assert is_cents(row.unit_price) and is_cents(row.line_total), row
        exact = row.quantity * row.unit_price * (1 - row.discount_percent / 100)
        assert row.line_total == half_up(exact), row

    sums = items.groupby("order_id")["line_total"].apply(lambda s: sum(s, Decimal("0.00")))
    for row in orders.itertuples():
        assert row.total_amount == sums[row.order_id], (row.order_id, row.total_amount)


# --- Marketing ---------------------------------------------------------------------------


async def test_campaigns(marketing: httpx.AsyncClient) -> None:
    campaigns = frame(await read_all(marketing, "/marketing/v1/campaigns"))
    assert len(campaigns) == 8
    assert_unique(campaigns, "campaign_id")
    assert all(is_cents(v) for v in [*campaigns["budget"], *campaigns["spent"]])
    assert sum(campaigns["budget"], Decimal("0.00")) == Decimal("505000.00")
    assert sum(campaigns["spent"], Decimal("0.00")) == Decimal("327000.00")
    over = campaigns[campaigns["spent"] > campaigns["budget"]]
    assert over.empty, over
    assert set(campaigns["status"]) <= {"Active", "Completed"}


async def test_leads(marketing: httpx.AsyncClient, sales: httpx.AsyncClient) -> None:
    leads = frame(await read_all(marketing, "/marketing/v1/leads"))
    campaigns = frame(await read_all(marketing, "/marketing/v1/campaigns"))
    customers = frame(await read_all(sales, "/sales/v1/customers"))
    assert len(leads) == 15
    assert_unique(leads, "lead_id")
    assert set(leads["status"]) == {"New", "Nurturing", "Qualified", "Converted"}

    converted = leads[leads["status"] == "Converted"]
    assert len(converted) == 3
    assert converted["converted_at"].notna().all(), converted
    assert leads.loc[leads["status"] != "Converted", "converted_at"].isna().all()
    customer_emails = set(customers["email"].str.strip().str.lower())
    for email in converted["email"]:
        assert email.strip().lower() in customer_emails, email

    assert pd.api.types.is_integer_dtype(leads["lead_score"])
    assert leads["lead_score"].between(0, 100).all()
    assert leads["campaign_id"].notna().all()
    assert set(leads["campaign_id"]) <= set(campaigns["campaign_id"])


async def test_campaign_metrics_one_row_per_active_day(marketing: httpx.AsyncClient) -> None:
    campaigns = frame(await read_all(marketing, "/marketing/v1/campaigns"))
    metrics = frame(await read_all(marketing, "/marketing/v1/campaign-metrics"))
    assert_unique(metrics, "metric_id")
    assert_unique(metrics, "campaign_id", "metric_date")

    expected: set[tuple[int, dt.date]] = set()
    for c in campaigns.itertuples():
        start = max(dt.date.fromisoformat(c.start_date), WINDOW_FIRST)
        end = min(dt.date.fromisoformat(c.end_date), WINDOW_LAST)
        expected |= {(c.campaign_id, d) for d in WINDOW_DAYS if start <= d <= end}
    actual = {(r.campaign_id, dt.date.fromisoformat(r.metric_date)) for r in metrics.itertuples()}
    assert actual == expected
    assert len(metrics) == 728
    assert dict(Counter(metrics["campaign_id"])) == {
        1: 61,
        2: 66,
        3: 171,
        4: 141,
        5: 121,
        6: 31,
        7: 91,
        8: 46,
    }


async def test_campaign_metrics_rates_follow_the_counts(marketing: httpx.AsyncClient) -> None:
    """conversion_rate = conversions / clicks * 100 and cost_per_click = day spend / clicks,
    each rounded half up to 2 decimals, NULL without clicks; the day spends add up to the
    campaign's spent, so sum(cost_per_click * clicks) is within 0.005 * clicks of spent."""
    campaigns = frame(await read_all(marketing, "/marketing/v1/campaigns"))
    metrics = frame(await read_all(marketing, "/marketing/v1/campaign-metrics"))
    for m in metrics.itertuples():
        assert 0 <= m.conversions <= m.clicks <= m.impressions, m
        if m.clicks == 0:
            assert m.cost_per_click is None and m.conversion_rate is None, m
            continue
        assert is_cents(m.cost_per_click) and m.cost_per_click >= 0, m
        assert m.conversion_rate == half_up(Decimal(m.conversions * 100) / m.clicks), m

    for c in campaigns.itertuples():
        days = metrics[metrics["campaign_id"] == c.campaign_id]
        clicks = int(days["clicks"].sum())
        charged = sum(
            (r.cost_per_click * r.clicks for r in days.itertuples() if r.clicks), Decimal(0)
        )
        assert abs(charged - c.spent) <= Decimal("0.005") * clicks, (c.campaign_id, charged)


async def test_website_traffic_daily_per_page_and_source(marketing: httpx.AsyncClient) -> None:
    traffic = frame(await read_all(marketing, "/marketing/v1/website-traffic"))
    assert_unique(traffic, "traffic_id")
    assert_unique(traffic, "visit_date", "page_url", "source")
    assert set(traffic["source"]) == SOURCES
    assert set(traffic["page_url"]) == PAGES
    cells = {
        (dt.date.fromisoformat(r.visit_date), r.page_url, r.source) for r in traffic.itertuples()
    }
    assert cells == {(d, p, s) for d in WINDOW_DAYS for p in PAGES for s in SOURCES}
    assert len(traffic) == 183 * 5 * 4


# --- Loading and determinism -------------------------------------------------------------


async def _counts(client: httpx.AsyncClient, name: str) -> dict[str, int]:
    counts = {}
    for product in domain(name).products:
        if product.is_table:
            counts[product.source] = len(await read_all(client, f"/{name}/v1/{product.name}"))
    return counts


@pytest.mark.parametrize("name", ["sales", "marketing"])
async def test_loading_twice_never_duplicates(
    name: str,
    database_urls: dict[str, str],
    sales: httpx.AsyncClient,
    marketing: httpx.AsyncClient,
) -> None:
    client = {"sales": sales, "marketing": marketing}[name]
    before = await _counts(client, name)
    rows = sample(name)(AS_OF)
    assert before == {table: len(records) for table, records in rows.items()}
    assert await load_if_empty(domain(name), database_urls[name], rows) is False
    # another as-of date is refused too: the database is not empty
    other = sample(name)(AS_OF + dt.timedelta(days=30))
    assert await load_if_empty(domain(name), database_urls[name], other) is False
    assert await _counts(client, name) == before


def _shift(row: dict[str, Any], days: int) -> dict[str, Any]:
    delta = dt.timedelta(days=days)
    return {k: v + delta if isinstance(v, dt.date) else v for k, v in row.items()}


@pytest.mark.parametrize("name", ["sales", "marketing"])
def test_same_as_of_same_rows_other_as_of_shifted_dates(name: str) -> None:
    generate = sample(name)
    first = generate(AS_OF)
    assert generate(AS_OF) == first
    assert generate(dt.date(2024, 10, 18)) == first

    # a week later: the same weekdays and a window of the same length (183 days)
    later = generate(AS_OF + dt.timedelta(days=7))
    assert later != first
    assert list(later) == list(first)
    for table in first:
        assert len(later[table]) == len(first[table]), table
        assert later[table] == [_shift(r, 7) for r in first[table]], table


def test_other_as_of_moves_the_window() -> None:
    as_of = dt.date(2025, 3, 1)  # window 2024-09-02 .. 2025-03-01
    orders = sample("sales")(as_of)["orders"]
    assert min(o["order_date"] for o in orders) > dt.date(2024, 9, 1)
    assert max(o["order_date"] for o in orders) <= as_of
    traffic = sample("marketing")(as_of)["website_traffic"]
    days = {r["visit_date"] for r in traffic}
    assert min(days) == dt.date(2024, 9, 2) and max(days) == as_of
    assert len(days) == 181
