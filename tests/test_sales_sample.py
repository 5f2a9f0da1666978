"""The Sales sample data against PRODUCT.md section 6 (pure Python, no database)."""

from __future__ import annotations

import datetime
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from services.sales.products import DOMAIN
from services.sales.sample import months_before, sample, window_start

SEED_AS_OF = datetime.date(2024, 10, 18)
OTHER_AS_OF = datetime.date(2025, 3, 1)  # shortest possible window: 181 days, across a year end
AS_OFS = (SEED_AS_OF, OTHER_AS_OF)

COLUMNS = {
    "customers": [
        "customer_id",
        "customer_name",
        "email",
        "phone",
        "country",
        "industry",
        "company_size",
        "created_at",
        "updated_at",
    ],
    "products": ["product_id", "product_name", "category", "price", "cost", "description"],
    "orders": [
        "order_id",
        "customer_id",
        "order_date",
        "order_status",
        "total_amount",
        "payment_method",
        "sales_rep",
        "region",
    ],
    "order_items": [
        "item_id",
        "order_id",
        "product_id",
        "quantity",
        "unit_price",
        "discount_percent",
        "line_total",
    ],
}

ORDER_TOTAL = Decimal("1193319.36")
ORDER_TOTALS = [
    "79110.00",
    "39629.75",
    "60662.50",
    "40374.51",
    "94587.50",
    "91410.00",
    "44799.99",
    "15724.08",
    "52325.00",
    "54250.00",
    "28877.00",
    "110070.00",
    "88065.00",
    "31874.99",
    "43949.05",
    "58899.99",
    "55685.00",
    "29250.00",
    "105300.00",
    "68475.00",
]
REGION = {
    "USA": "North America",
    "Canada": "North America",
    "UK": "Europe",
    "Germany": "Europe",
    "France": "Europe",
    "Australia": "Asia Pacific",
}
Rows = dict[str, list[dict[str, Any]]]

CONVERTED_LEADS = {  # email -> (customer_name, country, days back created)
    "j.carter@northwind-analytics.com": ("Northwind Analytics", "USA", 120),
    "m.schneider@rheintal-systeme.de": ("Rheintal Systeme GmbH", "Germany", 90),
    "o.bennett@harbourline.co.uk": ("Harbourline Logistics", "UK", 60),
}


def at_ten_utc(as_of: datetime.date, days_back: int) -> datetime.datetime:
    day = as_of - datetime.timedelta(days=days_back)
    return datetime.datetime.combine(day, datetime.time(10), tzinfo=datetime.UTC)


@pytest.fixture(params=AS_OFS, ids=str)
def as_of(request: pytest.FixtureRequest) -> datetime.date:
    day: datetime.date = request.param
    return day


@pytest.fixture
def rows(as_of: datetime.date) -> Rows:
    return sample(as_of)


def test_tables_in_load_order_with_exactly_the_declared_columns(rows: Rows) -> None:
    assert list(rows) == ["customers", "products", "orders", "order_items"]
    for table, columns in COLUMNS.items():
        assert all(list(row) == columns for row in rows[table]), table
        product = next(p for p in DOMAIN.products if p.source == table)
        assert [c.name for c in product.stored_columns] == columns, table


def test_ids_are_explicit_and_sequential(rows: Rows) -> None:
    for table, key in [
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("orders", "order_id"),
        ("order_items", "item_id"),
    ]:
        assert [r[key] for r in rows[table]] == list(range(1, len(rows[table]) + 1)), table


def test_customers(rows: Rows) -> None:
    customers = rows["customers"]
    assert len(customers) == 15
    assert Counter(c["country"] for c in customers) == {
        "USA": 4,
        "Canada": 3,
        "UK": 2,
        "Germany": 2,
        "France": 2,
        "Australia": 2,
    }
    assert Counter(c["company_size"] for c in customers) == {
        "Enterprise": 6,
        "Mid-Market": 6,
        "Small": 3,
    }
    emails = [c["email"].strip().lower() for c in customers]
    assert len(set(emails)) == 15
    assert all(c["email"] == c["email"].strip() for c in customers)
    assert all(c["phone"] and c["industry"] for c in customers)
    assert len({c["customer_name"] for c in customers}) == 15


def test_customer_timestamps_are_utc_and_at_ten(rows: Rows) -> None:
    for c in rows["customers"]:
        assert c["created_at"].utcoffset() == datetime.timedelta(0)
        assert c["created_at"].time() == datetime.time(10)
        assert c["updated_at"] == c["created_at"]


def test_customers_created_in_and_before_the_window(rows: Rows, as_of: datetime.date) -> None:
    start = window_start(as_of)
    inside = {c["customer_id"] for c in rows["customers"] if c["created_at"].date() > start}
    assert inside == {11, 12, 13, 14, 15}
    before = [c for c in rows["customers"] if c["customer_id"] not in inside]
    assert len(before) == 10
    assert all(c["created_at"].date() < start for c in before)
    assert all(c["created_at"].date() <= as_of for c in rows["customers"])


def test_the_three_converted_leads_are_customers(rows: Rows, as_of: datetime.date) -> None:
    by_email = {c["email"]: c for c in rows["customers"]}
    for email, (name, country, days_back) in CONVERTED_LEADS.items():
        customer = by_email[email]  # stored exactly like this
        assert customer["customer_name"] == name
        assert customer["country"] == country
        assert customer["created_at"] == at_ten_utc(as_of, days_back)
        assert customer["created_at"].date() > window_start(as_of)
        orders = [o for o in rows["orders"] if o["customer_id"] == customer["customer_id"]]
        assert orders
        assert all(o["order_date"] >= customer["created_at"].date() for o in orders)
    counts = Counter(o["customer_id"] for o in rows["orders"])
    assert [counts[by_email[e]["customer_id"]] for e in CONVERTED_LEADS] == [2, 1, 1]


def test_products(rows: Rows) -> None:
    products = rows["products"]
    assert len(products) == 10
    assert Counter(p["category"] for p in products) == {"Software": 6, "Infrastructure": 4}
    assert all(Decimal(8000) <= p["price"] <= Decimal(50000) for p in products)
    assert all(Decimal(0) <= p["cost"] < p["price"] for p in products)
    assert min(p["price"] for p in products) == Decimal("8499.50")
    assert max(p["price"] for p in products) == Decimal("49500.00")
    assert all(p["price"].as_tuple().exponent == -2 for p in products)
    assert all(p["cost"].as_tuple().exponent == -2 for p in products)


def test_orders(rows: Rows, as_of: datetime.date) -> None:
    orders = rows["orders"]
    assert len(orders) == 20
    assert Counter(o["order_status"] for o in orders) == {
        "Completed": 15,
        "Processing": 3,
        "Pending": 2,
    }
    assert Counter(o["region"] for o in orders) == {
        "North America": 9,
        "Europe": 8,
        "Asia Pacific": 3,
    }
    assert {o["payment_method"] for o in orders} == {
        "Wire Transfer",
        "Purchase Order",
        "Credit Card",
    }
    assert all(o["sales_rep"] for o in orders)


def test_region_follows_the_customers_country(rows: Rows) -> None:
    country = {c["customer_id"]: c["country"] for c in rows["customers"]}
    assert all(o["region"] == REGION[country[o["customer_id"]]] for o in rows["orders"])


def test_orders_lie_in_the_six_month_window(rows: Rows, as_of: datetime.date) -> None:
    start = window_start(as_of)
    dates = [o["order_date"] for o in rows["orders"]]
    assert all(start < d <= as_of for d in dates)
    assert min(dates) == as_of - datetime.timedelta(days=178)
    assert max(dates) == as_of - datetime.timedelta(days=3)
    assert dates == sorted(dates)  # order ids follow order dates


def test_orders_follow_their_customers_creation(rows: Rows) -> None:
    created = {c["customer_id"]: c["created_at"].date() for c in rows["customers"]}
    assert all(o["order_date"] >= created[o["customer_id"]] for o in rows["orders"])
    assert {c for c in created if c not in {o["customer_id"] for o in rows["orders"]}} == {15}


def test_order_totals(rows: Rows) -> None:
    orders = rows["orders"]
    assert [str(o["total_amount"]) for o in orders] == ORDER_TOTALS
    total = sum(o["total_amount"] for o in orders)
    assert total == ORDER_TOTAL
    assert Decimal("1150000") <= total <= Decimal("1250000")
    assert sum(i["line_total"] for i in rows["order_items"]) == ORDER_TOTAL


def test_each_order_total_is_the_sum_of_its_lines(rows: Rows) -> None:
    lines: dict[int, Decimal] = {}
    for item in rows["order_items"]:
        lines[item["order_id"]] = lines.get(item["order_id"], Decimal(0)) + item["line_total"]
    assert {o["order_id"]: o["total_amount"] for o in rows["orders"]} == lines


def test_order_items(rows: Rows) -> None:
    items = rows["order_items"]
    assert len(items) == 41
    price = {p["product_id"]: p["price"] for p in rows["products"]}
    for item in items:
        assert item["unit_price"] == price[item["product_id"]]
        assert item["quantity"] > 0
        assert Decimal(0) <= item["discount_percent"] <= Decimal(100)
        exact = item["quantity"] * item["unit_price"] * (1 - item["discount_percent"] / 100)
        assert item["line_total"] == exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert item["line_total"].as_tuple().exponent == -2
    # a half-cent line: 8,499.50 x 1 x 0.95 = 8,074.525 rounds half-up, not to even
    assert items[7]["order_id"] == 4
    assert items[7]["line_total"] == Decimal("8074.53")
    assert sum(i["quantity"] for i in items) == 50
    sold = {i["product_id"] for i in items}
    assert sold == set(range(1, 10))  # product 10 (Edge Compute Node) is not sold yet


def test_same_as_of_gives_the_same_rows(as_of: datetime.date) -> None:
    assert sample(as_of) == sample(as_of)


def test_another_as_of_shifts_only_the_dates() -> None:
    seed, other = sample(SEED_AS_OF), sample(OTHER_AS_OF)
    assert seed != other
    shift = OTHER_AS_OF - SEED_AS_OF
    for table in seed:
        for a, b in zip(seed[table], other[table], strict=True):
            moved = {
                k: v + shift if k in ("order_date", "created_at", "updated_at") else v
                for k, v in a.items()
            }
            assert moved == b


def test_seed_as_of_dates() -> None:
    rows = sample(SEED_AS_OF)
    assert window_start(SEED_AS_OF) == datetime.date(2024, 4, 18)
    assert rows["orders"][0]["order_date"] == datetime.date(2024, 4, 23)
    assert rows["orders"][-1]["order_date"] == datetime.date(2024, 10, 15)
    by_email = {c["email"]: c["created_at"] for c in rows["customers"]}
    assert by_email["j.carter@northwind-analytics.com"] == datetime.datetime(
        2024, 6, 20, 10, tzinfo=datetime.UTC
    )
    months = Counter(o["order_date"].replace(day=1) for o in rows["orders"])
    assert [months[datetime.date(2024, m, 1)] for m in range(4, 11)] == [1, 4, 4, 3, 2, 4, 2]


def test_every_as_of_keeps_orders_inside_the_window() -> None:
    day = datetime.date(2023, 1, 1)
    while day < datetime.date(2025, 1, 1):
        start = window_start(day)
        rows = sample(day)
        assert all(start < o["order_date"] <= day for o in rows["orders"]), day
        created = [c["created_at"].date() > start for c in rows["customers"]]
        assert sum(created) == 5, day
        day += datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (datetime.date(2024, 10, 18), 6, datetime.date(2024, 4, 18)),
        (datetime.date(2025, 3, 1), 6, datetime.date(2024, 9, 1)),
        (datetime.date(2024, 8, 31), 6, datetime.date(2024, 2, 29)),
        (datetime.date(2023, 8, 31), 6, datetime.date(2023, 2, 28)),
        (datetime.date(2024, 1, 15), 1, datetime.date(2023, 12, 15)),
    ],
)
def test_months_before(day: datetime.date, months: int, expected: datetime.date) -> None:
    assert months_before(day, months) == expected
