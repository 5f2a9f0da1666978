"""Quality checks: each kind passes on the sample data and fails, with the exact measured value
and sample rows, on data broken on purpose in throwaway databases; the score formula; the
kept history; the HTTP endpoints; the schedule; and `datamesh quality` with JUnit XML."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from services import DOMAINS, domain, package, sample
from shared.declarations.checks import (
    Consistency,
    Freshness,
    NotNull,
    References,
    Severity,
)
from shared.governance.quality import (
    CheckResult,
    Outcome,
    latest_run_summary,
    latest_scores,
    run_checks,
    score,
)
from shared.governance.quality_routes import quality_schedule
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.db import Database, connect
from tests.conftest import ADMIN, AS_OF, create_database, owner_url, sample_databases
from tests.domain_docs import check_problems, page_path
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DATAMESH = str(Path(sys.executable).parent / "datamesh")

# the day after the sample's as-of date, at noon UTC: every freshness SLA holds
NOW = dt.datetime(2024, 10, 19, 12, 0, tzinfo=dt.UTC)
CHECKS = {"sales": 67, "marketing": 81}

Results = dict[tuple[str, str], CheckResult]


async def measure(url: str, name: str, now: dt.datetime = NOW) -> Results:
    """Every check of the domain against the database, by (product, check name)."""
    conn = await connect(url)
    try:
        results = await run_checks(conn, domain(name).products, now=now)
    finally:
        await conn.close()
    return {(r.product, r.check_name): r for r in results}


def failing(results: Results) -> dict[tuple[str, str], str]:
    return {k: str(r.outcome) for k, r in results.items() if r.outcome is not Outcome.PASS}


@pytest.fixture(scope="module")
def pristine(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Both domains' sample data as of AS_OF, untouched."""
    return sample_databases(postgres_servers, "quality")


# Sales, broken on purpose (the constraints that would refuse it dropped first):
# customer 5 without a country; customer 7 with customer 3's email; customer 9 with a
# malformed email; customer 2 of an unknown size; order 4 'Shipped'; order 7 of a customer
# that does not exist; order 5 100.00 above its lines; order 21 of 990,000.00 (consistent
# with its one line), far beyond every other order; products 3 to 10 in an unknown category.
BREAK_SALES = f"""
ALTER TABLE customers ALTER COLUMN country DROP NOT NULL;
UPDATE customers SET country = NULL WHERE customer_id = 5;
DROP INDEX customers_email_key;
UPDATE customers SET email = 'a.clarke@thamesretail.co.uk' WHERE customer_id = 7;
ALTER TABLE customers DROP CONSTRAINT customers_email_check;
UPDATE customers SET email = 'not-an-email' WHERE customer_id = 9;
ALTER TABLE customers DROP CONSTRAINT customers_company_size_check;
UPDATE customers SET company_size = 'Huge' WHERE customer_id = 2;
ALTER TABLE orders DROP CONSTRAINT orders_order_status_check;
UPDATE orders SET order_status = 'Shipped' WHERE order_id = 4;
ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey;
UPDATE orders SET customer_id = 99 WHERE order_id = 7;
UPDATE orders SET total_amount = total_amount + 100 WHERE order_id = 5;
INSERT INTO orders VALUES (21, 2, '{AS_OF - dt.timedelta(days=50)}', 'Completed', 990000.00,
    'Wire Transfer', 'James Rodriguez', 'North America');
INSERT INTO order_items VALUES (42, 21, 7, 20, 49500.00, 0, 990000.00);
ALTER TABLE products DROP CONSTRAINT products_category_check;
UPDATE products SET category = 'Hardware' WHERE product_id >= 3;
"""

# Marketing, broken on purpose: lead 7 scored 150; lead 9 of campaign 42 that does not exist;
# lead 4 Converted without converted_at; campaign 6 spent 61,000 of a 60,000 budget; metric 1
# moved onto the day of metric 2 (same campaign); all website traffic deleted.
BREAK_MARKETING = """
ALTER TABLE leads DROP CONSTRAINT leads_lead_score_check;
UPDATE leads SET lead_score = 150 WHERE lead_id = 7;
ALTER TABLE leads DROP CONSTRAINT leads_campaign_id_fkey;
UPDATE leads SET campaign_id = 42 WHERE lead_id = 9;
ALTER TABLE leads DROP CONSTRAINT leads_converted_at_check;
UPDATE leads SET converted_at = NULL WHERE lead_id = 4;
ALTER TABLE campaigns DROP CONSTRAINT campaigns_spent_within_budget_check;
UPDATE campaigns SET spent = 61000.00 WHERE campaign_id = 6;
ALTER TABLE campaign_metrics DROP CONSTRAINT campaign_metrics_campaign_id_metric_date_key;
UPDATE campaign_metrics SET metric_date = metric_date + 1 WHERE metric_id = 1;
DELETE FROM website_traffic;
"""


@pytest.fixture(scope="module")
def broken(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Both domains' sample data, broken on purpose and committed."""
    statements = {"sales": BREAK_SALES, "marketing": BREAK_MARKETING}
    urls = {}
    for name in DOMAINS:
        url = create_database(postgres_servers, name, f"{name}_quality_broken", sample(name)(AS_OF))
        with psycopg.connect(owner_url(url)) as conn:  # drops constraints: the owner's work
            for statement in statements[name].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("SELECT datamesh_refresh_views()")  # as the service would, soon after
        urls[name] = url
    return urls


@pytest.fixture(scope="module")
async def broken_results(broken: dict[str, str]) -> dict[str, Results]:
    return {name: await measure(broken[name], name) for name in DOMAINS}


@pytest.fixture(scope="module")
async def pristine_results(pristine: dict[str, str]) -> dict[str, Results]:
    return {name: await measure(pristine[name], name) for name in DOMAINS}


# --- The sample data passes ---------------------------------------------------------------


def test_every_check_passes_on_the_sample_data(pristine_results: dict[str, Results]) -> None:
    for name in DOMAINS:
        results = pristine_results[name]
        assert len(results) == CHECKS[name]
        assert failing(results) == {}, name


def test_measured_values_on_the_sample_data(pristine_results: dict[str, Results]) -> None:
    sales, marketing = pristine_results["sales"], pristine_results["marketing"]
    measured = {
        ("customers", "row_count"): 15,
        ("orders", "row_count"): 20,
        ("order-items", "row_count"): 41,
        ("campaign-metrics", "row_count"): 728,
        ("website-traffic", "row_count"): 3660,
        ("lead-funnel", "row_count"): 4,
        # hours from the newest value to NOW (a date counts from its midnight UTC)
        ("customers", "freshness:updated_at"): 314,  # 2024-10-06 10:00
        ("orders", "freshness:order_date"): 108,  # 2024-10-15
        ("leads", "freshness:created_at"): 164.83,  # 2024-10-12 15:10
        ("campaign-metrics", "freshness:metric_date"): 36,  # 2024-10-18
        ("website-traffic", "freshness:visit_date"): 36,
        ("orders", "outliers:total_amount"): 0,
        ("orders", "consistency:total_is_sum_of_lines"): 0,
    }
    both = sales | marketing
    assert {k: float(both[k].measured_value or 0) for k in measured} == measured
    assert both["orders", "outliers:total_amount"].message == (
        "0 outliers; expected robust z-score <= 3.5 (median 54967.50, MAD 19215.13)"
    )
    assert both["orders", "freshness:order_date"].threshold == "age <= 336 h"


async def test_freshness_holds_all_the_day_after_as_of(pristine: dict[str, str]) -> None:
    last_moment = dt.datetime(2024, 10, 19, 23, 59, 59, tzinfo=dt.UTC)
    for name in DOMAINS:
        assert failing(await measure(pristine[name], name, now=last_moment)) == {}


async def test_freshness_fails_when_the_newest_row_is_older_than_the_sla(
    pristine: dict[str, str],
) -> None:
    later = NOW + dt.timedelta(days=12)  # 2024-10-31 12:00
    sales = await measure(pristine["sales"], "sales", now=later)
    marketing = await measure(pristine["marketing"], "marketing", now=later)
    assert failing(sales) == {("orders", "freshness:order_date"): "fail"}
    assert failing(marketing) == {
        ("leads", "freshness:created_at"): "fail",
        ("campaign-metrics", "freshness:metric_date"): "fail",
        ("website-traffic", "freshness:visit_date"): "fail",
    }
    orders = sales["orders", "freshness:order_date"]
    assert orders.measured_value == 396  # 16.5 days
    assert orders.message == (
        "396 hours old; expected age <= 336 h (newest 2024-10-15 00:00:00+00)"
    )
    assert marketing["leads", "freshness:created_at"].measured_value == Decimal("452.83")
    assert marketing["campaign-metrics", "freshness:metric_date"].measured_value == 324
    assert sales["customers", "freshness:updated_at"].measured_value == 602  # within 30 days


# --- Broken data fails, with exact values and samples -------------------------------------


def test_broken_sales_fails_exactly_the_broken_checks(
    broken_results: dict[str, Results],
) -> None:
    assert failing(broken_results["sales"]) == {
        ("customers", "not_null:country"): "fail",
        ("customers", "unique:email"): "fail",
        ("customers", "email:email"): "fail",
        ("customers", "accepted_values:company_size"): "fail",
        ("products", "accepted_values:category"): "fail",
        ("orders", "accepted_values:order_status"): "fail",
        ("orders", "references:customer_id->customers"): "fail",
        ("orders", "consistency:total_is_sum_of_lines"): "fail",
        ("orders", "outliers:total_amount"): "warn",
    }


def test_broken_marketing_fails_exactly_the_broken_checks(
    broken_results: dict[str, Results],
) -> None:
    assert failing(broken_results["marketing"]) == {
        ("campaigns", "consistency:spent_within_budget"): "fail",
        ("leads", "range:lead_score"): "fail",
        ("leads", "references:campaign_id->campaigns"): "fail",
        ("leads", "consistency:converted_at_when_converted"): "fail",
        ("campaign-metrics", "unique:campaign_id,metric_date"): "fail",
        ("website-traffic", "freshness:visit_date"): "fail",
        ("website-traffic", "row_count"): "fail",
        ("campaign-performance", "range:budget_utilization_pct"): "fail",
    }


EXPECTED: dict[tuple[str, str, str], tuple[float | None, list[dict[str, Any]]]] = {
    # not null: the key and the column
    ("sales", "customers", "not_null:country"): (1, [{"customer_id": 5, "country": None}]),
    # unique on a PII column: one duplicated email, the rows sharing it by key only
    ("sales", "customers", "unique:email"): (1, [{"customer_id": 3}, {"customer_id": 7}]),
    # pattern on a PII column: key only
    ("sales", "customers", "email:email"): (1, [{"customer_id": 9}]),
    ("sales", "customers", "accepted_values:company_size"): (
        1,
        [{"customer_id": 2, "company_size": "Huge"}],
    ),
    # eight unknown categories: the first five by key
    ("sales", "products", "accepted_values:category"): (
        8,
        [{"product_id": i, "category": "Hardware"} for i in (3, 4, 5, 6, 7)],
    ),
    ("sales", "orders", "accepted_values:order_status"): (
        1,
        [{"order_id": 4, "order_status": "Shipped"}],
    ),
    ("sales", "orders", "references:customer_id->customers"): (
        1,
        [{"order_id": 7, "customer_id": 99}],
    ),
    ("sales", "orders", "consistency:total_is_sum_of_lines"): (
        1,
        [{"order_id": 5, "total_amount": 94687.5}],
    ),
    ("sales", "orders", "outliers:total_amount"): (1, [{"order_id": 21, "total_amount": 990000.0}]),
    ("marketing", "leads", "range:lead_score"): (1, [{"lead_id": 7, "lead_score": 150}]),
    ("marketing", "leads", "references:campaign_id->campaigns"): (
        1,
        [{"lead_id": 9, "campaign_id": 42}],
    ),
    ("marketing", "leads", "consistency:converted_at_when_converted"): (
        1,
        [{"lead_id": 4, "status": "Converted", "converted_at": None}],
    ),
    ("marketing", "campaigns", "consistency:spent_within_budget"): (
        1,
        [{"campaign_id": 6, "budget": 60000.0, "spent": 61000.0}],
    ),
    ("marketing", "campaign-performance", "range:budget_utilization_pct"): (
        1,
        [{"campaign_id": 6, "budget_utilization_pct": 101.67}],
    ),
    # compound unique: one duplicated (campaign_id, metric_date), both rows
    ("marketing", "campaign-metrics", "unique:campaign_id,metric_date"): (
        1,
        [
            {"metric_id": 1, "campaign_id": 1, "metric_date": "2024-04-27"},
            {"metric_id": 2, "campaign_id": 1, "metric_date": "2024-04-27"},
        ],
    ),
    ("marketing", "website-traffic", "row_count"): (0, []),
    ("marketing", "website-traffic", "freshness:visit_date"): (None, []),
}


@pytest.mark.parametrize("where", list(EXPECTED), ids=lambda k: f"{k[1]}-{k[2]}")
def test_a_broken_check_reports_its_measured_value_and_failing_rows(
    where: tuple[str, str, str], broken_results: dict[str, Results]
) -> None:
    name, product, check = where
    result = broken_results[name][product, check]
    measured, rows = EXPECTED[where]
    assert (result.measured_value, result.sample_rows) == (measured, rows)


def test_messages_say_what_was_found_and_expected(broken_results: dict[str, Results]) -> None:
    sales, marketing = broken_results["sales"], broken_results["marketing"]
    assert sales["orders", "references:customer_id->customers"].message == (
        "1 orphan rows; expected 0 orphans (customer_id in customers(customer_id))"
    )
    assert marketing["website-traffic", "freshness:visit_date"].message == (
        "no rows; expected age <= 48 h"
    )
    assert marketing["leads", "range:lead_score"].threshold == "values >= 0 and <= 100"


def test_pii_columns_never_appear_in_samples(broken_results: dict[str, Results]) -> None:
    pii = {
        (name, p.name): {c.name for c in p.columns if c.classification == "pii"}
        for name in DOMAINS
        for p in domain(name).products
    }
    for name in DOMAINS:
        for (product, _), result in broken_results[name].items():
            for row in result.sample_rows:
                assert not pii[name, product] & set(row), (product, row)


def test_outliers_warn_and_do_not_fail(broken_results: dict[str, Results]) -> None:
    result = broken_results["sales"]["orders", "outliers:total_amount"]
    assert result.outcome is Outcome.WARN
    assert result.message == (
        "1 outliers; expected robust z-score <= 3.5 (median 55685.00, MAD 23425.00)"
    )


async def test_a_check_that_cannot_run_is_an_error_and_the_run_goes_on(
    pristine: dict[str, str],
) -> None:
    orders = domain("sales").product("orders")
    assert orders is not None
    bad = dataclasses.replace(
        orders,
        checks=(
            References(
                columns=("customer_id",), target_table="clients", target_columns=("client_id",)
            ),
            Consistency(rule="unfinished", violations="t.total_amount >"),
            NotNull(column="total_amout"),
            Freshness(column="total_amount", max_age=dt.timedelta(days=1)),
            NotNull(column="order_id"),
        ),
    )
    conn = await connect(pristine["sales"])
    try:
        results = await run_checks(conn, [bad], now=NOW)
    finally:
        await conn.close()
    assert [(r.outcome, r.measured_value) for r in results] == [
        (Outcome.ERROR, None),
        (Outcome.ERROR, None),
        (Outcome.ERROR, None),
        (Outcome.ERROR, None),
        (Outcome.PASS, 0),
    ]
    assert results[0].message == 'UndefinedTableError: relation "clients" does not exist'
    assert results[0].threshold == "0 orphans (customer_id in clients(client_id))"
    assert results[1].message.startswith("PostgresSyntaxError: syntax error")
    assert results[2].message == (
        "bad declaration: the check names column 'total_amout', which product 'orders' does "
        "not declare; known: order_id, customer_id, order_date, order_status, total_amount, "
        "payment_method, sales_rep, region"
    )
    assert results[3].message == (
        "bad declaration: freshness of 'total_amount', a money column: only date and "
        "timestamp columns have an age"
    )


# --- The score ------------------------------------------------------------------------------


def result(severity: Severity, outcome: Outcome) -> CheckResult:
    return CheckResult("p", f"{severity}-{outcome}", "k", "d", severity, outcome, None, "", "")


def test_score_weighs_severity_and_credits_outcomes() -> None:
    critical, major, minor = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR
    # weights 3 + 2 + 1 + 2 = 8; credits 3x1 + 2x0.5 + 1x0 + 2x0 = 4: 50.0
    assert (
        score(
            [
                result(critical, Outcome.PASS),
                result(major, Outcome.WARN),
                result(minor, Outcome.FAIL),
                result(major, Outcome.ERROR),
            ]
        )
        == 50.0
    )
    # (3 + 2 + 0.5) / 6 = 91.666..: 91.7
    assert (
        score(
            [
                result(critical, Outcome.PASS),
                result(major, Outcome.PASS),
                result(minor, Outcome.WARN),
            ]
        )
        == 91.7
    )
    # 1 / 16 = 6.25: half up to 6.3
    assert score([result(minor, Outcome.PASS), *[result(minor, Outcome.FAIL)] * 15]) == 6.3
    assert score([result(critical, Outcome.FAIL)]) == 0.0
    assert score([]) is None


def test_scores_of_the_broken_products(broken_results: dict[str, Results]) -> None:
    def product_score(name: str, product: str) -> float | None:
        return score(r for (p, _), r in broken_results[name].items() if p == product)

    # customers: weights 3 (key not null) + 6x2 (not null) + 3 + 2 (unique) + 2 (email)
    # + 2 (accepted) + 1 (freshness) + 2 (row count) = 27; four major failures lose 8:
    # 19 / 27 = 70.37
    assert product_score("sales", "customers") == 70.4
    # orders: weight 37; lost 2 (status) + 3 (orphan) + 3 (total) + 0.5 (outlier warning):
    # 28.5 / 37 = 77.03
    assert product_score("sales", "orders") == 77.0
    # products: weights 3 + 4x2 + 3 + 1 + 2 + 2x2 + 1 + 2 = 24; the category failure loses 2:
    # 22 / 24 = 91.67
    assert product_score("sales", "products") == 91.7
    assert product_score("sales", "order-items") == 100.0


# --- History and the HTTP API -------------------------------------------------------------


@pytest.fixture(scope="module")
def http_database(postgres_servers: dict[str, PostgresServer]) -> str:
    """Sales sample data without any quality run yet."""
    return create_database(postgres_servers, "sales", "sales_quality_http", sample("sales")(AS_OF))


@pytest.fixture(scope="module")
async def sales_service(
    http_database: str, settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain("sales"), database_url=http_database, settings=settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:
            yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


# sales checks that fail on the sample data when run today, years after its as-of date
STALE = {"customers": ["freshness:updated_at"], "orders": ["freshness:order_date"]}


async def test_runs_are_kept_and_served_newest_first(
    sales_service: httpx.AsyncClient, http_database: str
) -> None:
    client = sales_service
    assert_problem(await client.get("/sales/v1/quality"), 404, "no_quality_run")
    empty = await client.get("/sales/v1/quality/runs")
    assert (empty.status_code, empty.json(), empty.headers["content-range"]) == (200, [], "*/0")

    first = await client.post("/sales/v1/quality/runs")
    assert first.status_code == 201
    assert first.headers["location"] == "/sales/v1/quality/runs/1"
    run = first.json()
    assert (run["run_id"], run["trigger"], run["checks"]) == (1, "manual", 67)
    assert (run["passed"], run["failed"], run["warned"], run["errored"]) == (65, 2, 0, 0)
    failed: dict[str, list[str]] = {}
    for r in run["results"]:
        if r["outcome"] == "fail":
            failed.setdefault(r["product"], []).append(r["check"])
    assert failed == STALE
    by_check = {(r["product"], r["check"]): r for r in run["results"]}
    assert by_check["customers", "row_count"] == {
        "product": "customers",
        "check": "row_count",
        "kind": "row_count",
        "dimension": "coverage",
        "severity": "major",
        "outcome": "pass",
        "measured_value": 15,
        "threshold": "rows >= 1 and <= 100000",
        "message": "15 rows; expected rows >= 1 and <= 100000",
        "sample_rows": [],
    }
    # weights: 145 in all; lost customers' minor freshness (1) and orders' major one (2):
    # 142 / 145 = 97.93
    assert run["score"] == 97.9
    assert run["products"]["customers"] == {
        "score": 96.3,  # 26 / 27
        "checks": 13,
        "passed": 12,
        "failed": 1,
        "warned": 0,
        "errored": 0,
    }
    assert run["products"]["orders"]["score"] == 94.6  # 35 / 37
    assert run["products"]["products"]["score"] == 100.0
    assert list(run["products"]) == [p.name for p in domain("sales").products]

    second = await client.post("/sales/v1/quality/runs")
    assert second.headers["location"] == "/sales/v1/quality/runs/2"

    history = await client.get("/sales/v1/quality/runs")
    assert [r["run_id"] for r in history.json()] == [2, 1]
    assert history.headers["content-range"] == "0-1/2"
    assert "results" not in history.json()[0]
    assert history.json()[1]["score"] == 97.9
    page = await client.get("/sales/v1/quality/runs", params={"limit": "1", "offset": "1"})
    assert ([r["run_id"] for r in page.json()], page.headers["content-range"]) == ([1], "1-1/2")

    latest = (await client.get("/sales/v1/quality")).json()
    assert latest == second.json()
    one = await client.get(first.headers["location"])
    assert one.json() == run

    with psycopg.connect(http_database) as conn:
        kept = conn.execute(
            "SELECT run_id, trigger, score::float, checks, passed, failed, warned, errored, "
            "(SELECT count(*) FROM quality_results r WHERE r.run_id = q.run_id) "
            "FROM quality_runs q ORDER BY run_id"
        ).fetchall()
    assert kept == [
        (1, "manual", 97.9, 67, 65, 2, 0, 0, 67),
        (2, "manual", 97.9, 67, 65, 2, 0, 0, 67),
    ]

    reader = await connect(http_database)
    try:
        scores = await latest_scores(reader)
        summary = await latest_run_summary(reader)
    finally:
        await reader.close()
    assert scores == {name: p["score"] for name, p in latest["products"].items()}
    assert summary is not None
    assert summary == {k: v for k, v in latest.items() if k != "results"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/sales/v1/quality/runs?limit=0", 400, "limit_out_of_range"),
        ("/sales/v1/quality/runs?limit=101", 400, "limit_out_of_range"),
        ("/sales/v1/quality/runs?limit=ten", 400, "invalid_value"),
        ("/sales/v1/quality/runs?offset=-1", 400, "invalid_value"),
        ("/sales/v1/quality/runs?limit=1&limit=2", 400, "invalid_value"),
        ("/sales/v1/quality/runs?order=run_id", 400, "unknown_parameter"),
        ("/sales/v1/quality?verbose=1", 400, "unknown_parameter"),
        ("/sales/v1/quality/runs/abc", 400, "invalid_value"),
        ("/sales/v1/quality/runs/999999", 404, "unknown_quality_run"),
    ],
)
async def test_bad_quality_requests_are_problems(
    sales_service: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    assert_problem(await sales_service.get(path), status, code)


async def test_a_run_request_with_parameters_is_refused(sales_service: httpx.AsyncClient) -> None:
    assert_problem(
        await sales_service.post("/sales/v1/quality/runs?now=2024-10-19"), 400, "unknown_parameter"
    )


async def test_quality_endpoints_are_documented(sales: httpx.AsyncClient) -> None:
    paths = (await sales.get("/sales/openapi.json")).json()["paths"]
    service_wide = {"401", "403", "429"}  # the token check and the rate limit (shared.openapi)
    documented = {
        ("/sales/v1/quality", "get"): {"200", "400", "404", "503", "504", *service_wide},
        ("/sales/v1/quality/runs", "get"): {"200", "400", "503", "504", *service_wide},
        ("/sales/v1/quality/runs", "post"): {"201", "400", "503", "504", *service_wide},
        ("/sales/v1/quality/runs/{run_id}", "get"): {
            "200",
            "400",
            "404",
            "503",
            "504",
            *service_wide,
        },
    }
    for (path, method), statuses in documented.items():
        operation = paths[path][method]
        assert operation["description"], path
        assert set(operation["responses"]) == statuses, (path, method)
        for status in statuses - {"200", "201"}:
            assert "application/problem+json" in operation["responses"][status]["content"]
    limit = next(
        p for p in paths["/sales/v1/quality/runs"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}


# --- The schedule ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schedule_database(postgres_servers: dict[str, PostgresServer]) -> str:
    return create_database(
        postgres_servers, "marketing", "marketing_quality_schedule", sample("marketing")(AS_OF)
    )


async def wait_for(condition: Any, seconds: float = 10.0) -> None:
    """Poll an async condition until it holds, for at most `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_service_runs_the_checks_on_schedule(schedule_database: str) -> None:
    settings = ServiceSettings(quality_interval_seconds=0.05)
    app = create_domain_app(domain("marketing"), database_url=schedule_database, settings=settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:

            async def two_runs() -> bool:
                runs = (await client.get("/marketing/v1/quality/runs")).json()
                return len(runs) >= 2

            await wait_for(two_runs)
            runs = (await client.get("/marketing/v1/quality/runs")).json()
    assert {r["trigger"] for r in runs} == {"schedule"}
    assert {r["checks"] for r in runs} == {81}
    assert not [
        t
        for t in asyncio.all_tasks()
        if t.get_name() == "scheduled quality run of the marketing domain"
    ]


async def test_the_schedule_survives_failed_runs(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = Database(
        "marketing",
        "postgresql://nobody:nothing@127.0.0.1:1/marketing_db",
        ServiceSettings(pool_timeout_seconds=1),
    )
    caplog.set_level(logging.ERROR, logger="datamesh.quality")
    try:
        async with quality_schedule(domain("marketing"), unreachable, 0.02):

            async def two_failures() -> bool:
                return len(caplog.records) >= 2

            await wait_for(two_failures)
    finally:
        await unreachable.dispose()
    assert caplog.records[0].getMessage() == (
        "scheduled quality run of the marketing domain failed; next in 0.02s"
    )
    assert not [
        t
        for t in asyncio.all_tasks()
        if t.get_name() == "scheduled quality run of the marketing domain"
    ]


def test_the_schedule_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMESH_QUALITY_INTERVAL_SECONDS", raising=False)
    assert ServiceSettings().quality_interval_seconds == 0
    monkeypatch.setenv("DATAMESH_QUALITY_INTERVAL_SECONDS", "300")
    assert ServiceSettings().quality_interval_seconds == 300


# --- The command ----------------------------------------------------------------------------


def datamesh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    return subprocess.run(
        [DATAMESH, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_datamesh_quality_exits_non_zero_on_failures_and_writes_junit(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    junit = tmp_path / "quality.xml"
    empty = datamesh("quality", "--domain", "sales", "--data-dir", data_dir, "--junit", str(junit))
    assert empty.returncode == 1, empty.stdout + empty.stderr
    # no data yet: the four tables' row counts and the two freshness checks fail
    root = ET.parse(junit).getroot()
    assert [s.get("name") for s in root.iter("testsuite")] == ["sales"]
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("67", "6", "0")
    failures = {
        (c.get("classname"), c.get("name"))
        for c in root.iter("testcase")
        if c.find("failure") is not None
    }
    assert failures == {
        ("sales.customers", "row_count"),
        ("sales.customers", "freshness:updated_at"),
        ("sales.products", "row_count"),
        ("sales.orders", "row_count"),
        ("sales.orders", "freshness:order_date"),
        ("sales.order-items", "row_count"),
    }

    loaded = datamesh("load-sample", "--data-dir", data_dir, "--as-of", dt.date.today().isoformat())
    assert loaded.returncode == 0, loaded.stderr
    checked = datamesh("quality", "--data-dir", data_dir, "--junit", str(junit))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "sales: score 100.0 (67 checks: 67 passed" in checked.stdout

    root = ET.parse(junit).getroot()
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == (
        "testsuites",
        "148",
        "0",
        "0",
    )
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert {name: int(s.get("tests") or 0) for name, s in suites.items()} == CHECKS
    cases = [(c.get("classname"), c.get("name")) for c in suites["sales"].iter("testcase")]
    assert ("sales.orders", "consistency:total_is_sum_of_lines") in cases
    assert not list(root.iter("failure")) and not list(root.iter("error"))


# --- Declarations and docs --------------------------------------------------------------------


def test_freshness_slas_and_freshness_checks_agree() -> None:
    for name in DOMAINS:
        for product in domain(name).products:
            ages = [c.max_age for c in product.checks if isinstance(c, Freshness)]
            assert ages == ([product.freshness] if product.freshness else []), product.name


def test_docs_list_every_check() -> None:
    """Each registered domain's page (services/<domain>/README.md) lists every check of each
    product, in order, with its dimension and severity; docs/quality.md says what they mean."""
    for name in DOMAINS:
        page = page_path(package(name)).read_text()
        assert check_problems(domain(name), page) == [], name
    readme = (ROOT / "README.md").read_text()
    assert "(docs/quality.md)" in readme
