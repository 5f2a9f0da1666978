"""Sales data at scale: `generate(conn, scale, as_of)` fills empty Sales tables set-based.

Shape at scale N (N > 1; scale 1 is the literal sample, see sample.py):

- products: the sample's 10 (the catalogue does not grow with the customer base)
- customers: 2N, created over 540 days up to as_of (ids in creation order), emails unique
- orders: 20N over the 180 days up to as_of (ids in date order), each by a customer created by
  then; Pending in the last 10 days, Processing in the last 40, else Completed (2% Cancelled)
- order_items: 60N, 1 to 5 per order (3 on average), unit_price the product's price, and
  line_total rounded half up to cents; every order's total_amount is the sum of its lines

Every value is arithmetic on the row number and `shared.storage.scale.pick`; no Python loop per row.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from services.sales.sample import REGION_BY_COUNTRY, sample
from shared.storage.scale import (
    choice,
    customer_count,
    customer_created_at,
    customer_email,
    day,
    pick,
)

ORDER_DAYS = 180
COUNTRIES = tuple(REGION_BY_COUNTRY)
INDUSTRIES = ("Finance", "Healthcare", "Retail", "Manufacturing", "Technology", "Mining",
              "Energy", "Logistics", "Education")  # fmt: skip
SIZES = ("Enterprise", "Mid-Market", "Small")
PAYMENTS = ("Wire Transfer", "Purchase Order", "Credit Card")
REPS = ("Sarah Mitchell", "Oliver Hughes", "Liam O'Connor", "James Rodriguez", "Jonas Weber",
        "Claire Dubois")  # fmt: skip
SOLD_PRODUCTS = 9  # product 10 is new: not sold yet, as in the sample
# items per order cycle through 4, 2, 5, 3, 1 (k = 1 + 3o mod 5): 15 lines per 5 orders
_LINES_BEFORE = (0, 4, 6, 11, 14)  # lines of the earlier orders in the same cycle of five


def counts(scale: int) -> dict[str, int]:
    """Rows per table at a scale above 1."""
    return {
        "customers": customer_count(scale),
        "products": 10,
        "orders": 20 * scale,
        "order_items": 60 * scale,
    }


def _country(customer_id: str) -> str:
    return f"{pick(customer_id, 11, len(COUNTRIES))}"


def statements(scale: int, as_of: dt.date) -> list[str]:
    """INSERT ... SELECT statements filling customers, orders and order_items (in that order;
    products must be loaded first)."""
    n = counts(scale)
    countries = ", ".join(f"'{c}'" for c in COUNTRIES)
    regions = ", ".join(f"'{REGION_BY_COUNTRY[c]}'" for c in COUNTRIES)
    customers = f"""
        INSERT INTO customers (customer_id, customer_name, email, phone, country, industry,
                               company_size, created_at, updated_at)
        SELECT c,
               'Customer Company ' || c,
               {customer_email("c")},
               CASE WHEN {pick("c", 12, 10)} = 0 THEN NULL
                    ELSE '+1-555-' || lpad(({pick("c", 13, 10000)})::text, 4, '0') END,
               (ARRAY[{countries}])[1 + {_country("c")}],
               CASE WHEN {pick("c", 14, 20)} = 0 THEN NULL ELSE {choice(INDUSTRIES, "c", 15)} END,
               {choice(SIZES, "c", 16)},
               t, t
        FROM generate_series(1, {n["customers"]}) AS c,
             LATERAL (SELECT {customer_created_at("c", scale, as_of)} AS t) AS created
    """
    # an order o, days_back days before as_of, is by one of the customers created by then
    orders_total = n["orders"]
    back = f"(({orders_total} - o) * {ORDER_DAYS} / {orders_total})"
    known = f"({n['customers']} * (540 - {back}) / 540)"
    lines = f"""
        SELECT o, k,
               p.product_id,
               q.quantity,
               p.price AS unit_price,
               q.discount_percent,
               round(q.quantity * p.price * (1 - q.discount_percent / 100), 2) AS line_total
        FROM generate_series(1, {orders_total}) AS o,
             generate_series(1, 1 + (3 * o) % 5) AS k,
             LATERAL (SELECT {choice((1, 1, 1, 1, 2, 2, 3), "o * 8 + k", 21)} AS quantity,
                             ({choice((0, 0, 0, 500, 750, 1000, 1250), "o * 8 + k", 22)})::numeric
                                 / 100 AS discount_percent,
                             1 + {pick("o * 8 + k", 23, SOLD_PRODUCTS)} AS product_id) AS q
        JOIN products AS p ON p.product_id = q.product_id
    """
    status = f"""
        CASE WHEN {back} < 10 THEN 'Pending'
             WHEN {back} < 40 THEN 'Processing'
             WHEN {pick("o", 31, 50)} = 0 THEN 'Cancelled'
             ELSE 'Completed' END
    """
    orders = f"""
        INSERT INTO orders (order_id, customer_id, order_date, order_status, total_amount,
                            payment_method, sales_rep, region)
        SELECT o, cust, {day(as_of, back)}, {status}, total,
               {choice(PAYMENTS, "o", 32)}, {choice(REPS, "o", 33)},
               (ARRAY[{regions}])[1 + {_country("cust")}]
        FROM (SELECT o, sum(line_total) AS total FROM ({lines}) AS l GROUP BY o) AS t,
             LATERAL (SELECT 1 + {pick("o", 30, known)} AS cust) AS c
    """
    before = ", ".join(str(b) for b in _LINES_BEFORE)
    items = f"""
        INSERT INTO order_items (item_id, order_id, product_id, quantity, unit_price,
                                 discount_percent, line_total)
        SELECT 15 * ((o - 1) / 5) + (ARRAY[{before}])[1 + (o - 1) % 5] + k,
               o, product_id, quantity, unit_price, discount_percent, line_total
        FROM ({lines}) AS l
    """
    return [customers, orders, items]


async def generate(conn: asyncpg.Connection, scale: int, as_of: dt.date) -> None:
    """Fill the empty Sales tables at the scale (above 1) as of the date."""
    products = sample(as_of)["products"]
    columns = list(products[0])
    await conn.copy_records_to_table(
        "products", records=[tuple(p[c] for c in columns) for p in products], columns=columns
    )
    for statement in statements(scale, as_of):
        await conn.execute(statement)
