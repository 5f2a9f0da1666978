"""Deterministic Sales sample data: six months of activity ending at an as-of date.

Everything is literal; dates are offsets (days back) from the as-of date, so the same as-of
date always gives the same rows. Money is `Decimal`; line totals are rounded half-up to cents
and every order's total_amount is the sum of its line totals.
"""

from __future__ import annotations

import calendar
import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")

REGION_BY_COUNTRY: dict[str, str] = {
    "USA": "North America",
    "Canada": "North America",
    "UK": "Europe",
    "Germany": "Europe",
    "France": "Europe",
    "Australia": "Asia Pacific",
}

# The tables below are laid out by hand, one record per two lines.
# fmt: off

# customer_id, customer_name, email, phone,
#     country, industry, company_size, days back created (at 10:00 UTC)
_CUSTOMERS: tuple[tuple[int, str, str, str, str, str, str, int], ...] = (
    (1, "Summit Financial Group", "r.hayes@summitfinancial.com", "+1-212-555-0147",
        "USA", "Finance", "Enterprise", 540),
    (2, "Maple Leaf Health Network", "procurement@mapleleafhealth.ca", "+1-416-555-0183",
        "Canada", "Healthcare", "Mid-Market", 480),
    (3, "Thames Retail Partners", "a.clarke@thamesretail.co.uk", "+44-20-7946-0321",
        "UK", "Retail", "Mid-Market", 420),
    (4, "Bayern Industrietechnik AG", "k.huber@bayern-industrietechnik.de", "+49-89-5550-2214",
        "Germany", "Manufacturing", "Enterprise", 400),
    (5, "Lumiere Logiciels SAS", "c.martin@lumiere-logiciels.fr", "+33-1-5550-4482",
        "France", "Technology", "Small", 365),
    (6, "Southern Cross Mining Ltd", "it.purchasing@southerncrossmining.com.au", "+61-8-5550-7731",
        "Australia", "Mining", "Enterprise", 330),
    (7, "Pacific Crest Technologies", "d.nguyen@pacificcrest.io", "+1-415-555-0119",
        "USA", "Technology", "Mid-Market", 300),
    (8, "Lakeshore Mutual Insurance", "s.fraser@lakeshoremutual.ca", "+1-604-555-0162",
        "Canada", "Finance", "Enterprise", 270),
    (9, "Atelier Provence Distribution", "m.laurent@atelier-provence.fr", "+33-4-5550-1290",
        "France", "Retail", "Mid-Market", 240),
    (10, "Coral Bay Medical Group", "j.tan@coralbaymedical.com.au", "+61-7-5550-3348",
        "Australia", "Healthcare", "Small", 210),
    # created inside the six-month window from here on
    (11, "Granite Peak Energy", "b.walsh@granitepeakenergy.com", "+1-303-555-0175",
        "USA", "Energy", "Enterprise", 150),
    # the three converted marketing leads (marketing_db.leads holds the same emails)
    (12, "Northwind Analytics", "j.carter@northwind-analytics.com", "+1-617-555-0134",
        "USA", "Technology", "Mid-Market", 120),
    (13, "Rheintal Systeme GmbH", "m.schneider@rheintal-systeme.de", "+49-221-5550-8870",
        "Germany", "Manufacturing", "Enterprise", 90),
    (14, "Harbourline Logistics", "o.bennett@harbourline.co.uk", "+44-161-496-0759",
        "UK", "Logistics", "Mid-Market", 60),
    # a new customer without orders yet
    (15, "Cascade Learning Collective", "admin@cascadelearning.ca", "+1-403-555-0198",
        "Canada", "Education", "Small", 12),
)

# product_id, product_name, category, price, cost,
#     description
_PRODUCTS: tuple[tuple[int, str, str, str, str, str], ...] = (
    (1, "Enterprise Analytics Platform", "Software", "45000.00", "13500.00",
        "Self-hosted analytics platform with semantic layer, dashboards and governed sharing."),
    (2, "Cloud Data Warehouse", "Software", "32500.00", "9750.00",
        "Managed columnar warehouse licence with autoscaling compute and separate storage."),
    (3, "Real-Time Streaming Engine", "Software", "27800.00", "8340.00",
        "Event streaming and stream-processing engine for sub-second pipelines."),
    (4, "Data Governance Suite", "Software", "21450.00", "6435.00",
        "Catalog, lineage, access policies and data quality monitoring in one suite."),
    (5, "MLOps Workbench", "Software", "16999.99", "5100.00",
        "Model training, registry and deployment workbench for data science teams."),
    (6, "Self-Service BI Dashboards", "Software", "8499.50", "2550.00",
        "Departmental BI licence with drag-and-drop dashboards and scheduled reports."),
    (7, "Enterprise Storage Array", "Infrastructure", "49500.00", "34650.00",
        "All-flash storage array, 200 TB usable, with replication and snapshots."),
    (8, "High-Availability Server Cluster", "Infrastructure", "38750.00", "27125.00",
        "Four-node server cluster with automatic failover for production workloads."),
    (9, "Network Security Gateway", "Infrastructure", "14875.00", "10412.50",
        "Next-generation firewall appliance with intrusion prevention and VPN."),
    # launched recently: not sold yet
    (10, "Edge Compute Node", "Infrastructure", "9250.00", "6475.00",
        "Ruggedised compute node for on-site data collection and processing."),
)

# order_id, days back, customer_id, order_status, payment_method, sales_rep,
#     items as (product_id, quantity, discount_percent); unit_price is the product's price
_ORDERS: tuple[tuple[int, int, int, str, str, str, tuple[tuple[int, int, str], ...]], ...] = (
    (1, 178, 1, "Completed", "Wire Transfer", "Sarah Mitchell",
        ((1, 1, "10.00"), (4, 2, "10.00"))),
    (2, 170, 3, "Completed", "Purchase Order", "Oliver Hughes",
        ((6, 3, "0.00"), (9, 1, "5.00"))),
    (3, 161, 6, "Completed", "Wire Transfer", "Liam O'Connor",
        ((7, 1, "7.50"), (9, 1, "0.00"))),
    (4, 152, 2, "Completed", "Credit Card", "James Rodriguez",
        ((5, 2, "5.00"), (6, 1, "5.00"))),  # 8,499.50 x 0.95 = 8,074.525: rounds up
    (5, 146, 11, "Completed", "Wire Transfer", "Sarah Mitchell",
        ((8, 2, "12.50"), (9, 2, "10.00"))),
    (6, 139, 4, "Completed", "Purchase Order", "Jonas Weber",
        ((2, 2, "0.00"), (3, 1, "5.00"))),
    (7, 131, 7, "Completed", "Credit Card", "James Rodriguez",
        ((3, 1, "0.00"), (5, 1, "0.00"))),
    (8, 124, 5, "Completed", "Credit Card", "Claire Dubois",
        ((6, 2, "7.50"),)),
    (9, 110, 12, "Completed", "Purchase Order", "Sarah Mitchell",
        ((2, 1, "5.00"), (4, 1, "0.00"))),
    (10, 101, 8, "Completed", "Wire Transfer", "James Rodriguez",
        ((1, 1, "12.50"), (9, 1, "0.00"))),
    (11, 95, 9, "Completed", "Purchase Order", "Claire Dubois",
        ((4, 1, "5.00"), (6, 1, "0.00"))),
    (12, 84, 1, "Completed", "Wire Transfer", "Sarah Mitchell",
        ((7, 1, "10.00"), (3, 1, "10.00"), (1, 1, "10.00"))),
    (13, 75, 13, "Completed", "Purchase Order", "Jonas Weber",
        ((8, 1, "5.00"), (2, 1, "5.00"), (4, 1, "5.00"))),
    (14, 66, 10, "Completed", "Credit Card", "Liam O'Connor",
        ((5, 1, "0.00"), (9, 1, "0.00"))),
    (15, 45, 14, "Completed", "Wire Transfer", "Oliver Hughes",
        ((3, 1, "0.00"), (6, 2, "5.00"))),
    (16, 38, 12, "Processing", "Purchase Order", "Sarah Mitchell",
        ((1, 1, "5.00"), (5, 1, "5.00"))),
    (17, 27, 6, "Processing", "Wire Transfer", "Liam O'Connor",
        ((8, 1, "7.50"), (4, 1, "7.50"))),
    (18, 19, 3, "Processing", "Credit Card", "Oliver Hughes",
        ((2, 1, "10.00"),)),
    (19, 9, 11, "Pending", "Wire Transfer", "James Rodriguez",
        ((1, 1, "0.00"), (3, 1, "0.00"), (2, 1, "0.00"))),
    (20, 3, 4, "Pending", "Purchase Order", "Jonas Weber",
        ((7, 1, "5.00"), (4, 1, "0.00"))),
)

# fmt: on


def months_before(day: datetime.date, months: int) -> datetime.date:
    """The same day of the month `months` calendar months earlier (clamped to month end)."""
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return datetime.date(year, month + 1, min(day.day, last))


def window_start(as_of: datetime.date) -> datetime.date:
    """Start of the sample's six-month window; the window is (start, as_of]."""
    return months_before(as_of, 6)


def line_total(quantity: int, unit_price: Decimal, discount_percent: Decimal) -> Decimal:
    """quantity x unit_price x (1 - discount_percent/100), rounded half-up to cents."""
    exact = quantity * unit_price * (1 - discount_percent / 100)
    return exact.quantize(CENT, rounding=ROUND_HALF_UP)


def _at_ten_utc(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(10, 0), tzinfo=datetime.UTC)


def sample(as_of: datetime.date) -> dict[str, list[dict[str, Any]]]:
    """Rows of every Sales table, in load order, for six months of activity ending at as_of."""
    customers: list[dict[str, Any]] = []
    country_of: dict[int, str] = {}
    for cid, name, email, phone, country, industry, size, days_back in _CUSTOMERS:
        created = _at_ten_utc(as_of - datetime.timedelta(days=days_back))
        country_of[cid] = country
        customers.append(
            {
                "customer_id": cid,
                "customer_name": name,
                "email": email,
                "phone": phone,
                "country": country,
                "industry": industry,
                "company_size": size,
                "created_at": created,
                "updated_at": created,
            }
        )

    products: list[dict[str, Any]] = []
    price_of: dict[int, Decimal] = {}
    for pid, name, category, price, cost, description in _PRODUCTS:
        price_of[pid] = Decimal(price)
        products.append(
            {
                "product_id": pid,
                "product_name": name,
                "category": category,
                "price": Decimal(price),
                "cost": Decimal(cost),
                "description": description,
            }
        )

    orders: list[dict[str, Any]] = []
    order_items: list[dict[str, Any]] = []
    for oid, days_back, cid, status, payment, rep, items in _ORDERS:
        total = Decimal("0.00")
        for pid, quantity, discount in items:
            unit_price = price_of[pid]
            amount = line_total(quantity, unit_price, Decimal(discount))
            total += amount
            order_items.append(
                {
                    "item_id": len(order_items) + 1,
                    "order_id": oid,
                    "product_id": pid,
                    "quantity": quantity,
                    "unit_price": unit_price,
                    "discount_percent": Decimal(discount),
                    "line_total": amount,
                }
            )
        orders.append(
            {
                "order_id": oid,
                "customer_id": cid,
                "order_date": as_of - datetime.timedelta(days=days_back),
                "order_status": status,
                "total_amount": total,
                "payment_method": payment,
                "sales_rep": rep,
                "region": REGION_BY_COUNTRY[country_of[cid]],
            }
        )

    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": order_items,
    }
