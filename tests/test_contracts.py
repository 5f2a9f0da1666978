"""Data contracts: every product's ODCS v3 contract validates against the official JSON schema
(committed under tests/odcs/), YAML and JSON say the same, and the contract carries exactly what
the declarations say: types, keys, classification, PII scope, quality rules, SLA and endpoint.
The SQL quality rules are run against the sample database and compared with figures computed
here from the rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema
import psycopg
import pytest
import yaml

from services import DOMAINS, domain
from shared.declarations.checks import (
    AcceptedValues,
    Consistency,
    Freshness,
    NotNull,
    Outliers,
    Pattern,
    Range,
    References,
    RowCount,
    Severity,
    Unique,
)
from shared.declarations.products import Domain, Product, ServiceLevels
from shared.governance.contracts import contract, quality_rule, render_json, render_yaml, rule_query
from shared.governance.quality import measurement, run_checks
from shared.storage.db import connect
from tests.conftest import ADMIN

SCHEMA_FILE = Path(__file__).parent / "odcs" / "odcs-json-schema-v3.2.0.json"
SCHEMA_SHA256 = "171420cb211c3fba7b0b0ee4939e43112cfac661386159cc4e123667846056c8"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft201909Validator(
    SCHEMA, format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER
)
PROBLEM_JSON = "application/problem+json"
SALES = domain("sales")
MARKETING = domain("marketing")
EVERY_PRODUCT = [(name, p.name) for name in DOMAINS for p in domain(name).products]


def errors(document: dict[str, Any]) -> list[str]:
    """The schema's complaints about a contract, as readable lines."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in VALIDATOR.iter_errors(document)
    ]


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["instance"] == response.request.url.path
    return body


def client_of(name: str, sales: httpx.AsyncClient, marketing: httpx.AsyncClient):
    return {"sales": sales, "marketing": marketing}[name]


def properties(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["schema"][0]["properties"]}


def rules(document: dict[str, Any]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Every quality rule of the contract by name, with the property it sits on (or None)."""
    found: dict[str, tuple[str | None, dict[str, Any]]] = {}
    obj = document["schema"][0]
    for rule in obj.get("quality", []):
        found[rule["name"]] = (None, rule)
    for prop in obj["properties"]:
        for rule in prop.get("quality", []):
            found[rule["name"]] = (prop["name"], rule)
    return found


# --- the schema itself --------------------------------------------------------------------------


def test_the_committed_schema_is_the_official_odcs_v3_2_0_draft_2019_09() -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert SCHEMA["title"] == "Open Data Contract Standard (ODCS)"
    assert SCHEMA["properties"]["apiVersion"]["default"] == "v3.2.0"
    jsonschema.Draft201909Validator.check_schema(SCHEMA)


def test_the_validator_rejects_what_odcs_forbids() -> None:
    good = contract(SALES, SALES_ORDERS, base_url="http://test")
    assert errors(good) == []
    bad = json.loads(json.dumps(good))
    bad["apiVersion"] = "v9.9.9"
    bad["schema"][0]["properties"][0]["logicalType"] = "int"
    bad["schema"][0]["properties"][1]["colour"] = "blue"  # unknown keys are refused
    del bad["servers"][0]["location"]  # an api server needs its location
    found = errors(bad)
    assert any(e.startswith("apiVersion: 'v9.9.9' is not one of") for e in found), found
    assert any(e.startswith("schema/0/properties/0/logicalType: 'int'") for e in found), found
    assert any("'colour' was unexpected" in e for e in found), found
    assert any("'location' is a required property" in e for e in found), found


# --- every product --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "product"), EVERY_PRODUCT)
async def test_every_contract_validates_and_yaml_equals_json(
    name: str, product: str, sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    client = client_of(name, sales, marketing)
    path = f"/{name}/v1/products/{product}/contract"
    as_yaml = await client.get(path)
    assert as_yaml.status_code == 200, as_yaml.text
    assert as_yaml.headers["content-type"] == "application/yaml"
    assert as_yaml.text.startswith("apiVersion: v3.2.0\nkind: DataContract\n")
    as_json = await client.get(path, headers={"Accept": "application/json"})
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    document = yaml.safe_load(as_yaml.text)
    assert document == as_json.json()
    declared = domain(name).product(product)
    assert declared is not None
    assert document == contract(domain(name), declared, base_url="http://test")
    assert errors(document) == []
    assert document["id"] == f"urn:datamesh:{name}:{product}"
    assert document["domain"] == name
    assert document["dataProduct"] == product
    assert [p["name"] for p in document["schema"][0]["properties"]] == list(declared.column_names)
    assert sorted(rules(document)) == sorted(c.name for c in declared.checks)


# --- one table: sales orders ---------------------------------------------------------------------

SALES_ORDERS = SALES.product("orders") or pytest.fail("sales declares no orders")
CLV = SALES.product("customer-lifetime-value") or pytest.fail("sales declares no CLV view")

# name: (logicalType, physicalType, required, unique, primaryKey, primaryKeyPosition, class.)
ORDERS_COLUMNS = {
    "order_id": ("integer", "integer", True, True, True, 1, "internal"),
    "customer_id": ("integer", "integer", True, False, False, None, "internal"),
    "order_date": ("date", "date", True, False, False, None, "internal"),
    "order_status": ("string", "text", True, False, False, None, "internal"),
    "total_amount": ("number", "numeric(14,2)", True, False, False, None, "internal"),
    "payment_method": ("string", "text", True, False, False, None, "internal"),
    "sales_rep": ("string", "text", True, False, False, None, "internal"),
    "region": ("string", "text", True, False, False, None, "internal"),
}
CLV_COLUMNS = {
    "customer_id": ("integer", "integer", True, True, True, 1, "internal"),
    "customer_name": ("string", "text", True, False, False, None, "confidential"),
    "country": ("string", "text", True, False, False, None, "internal"),
    "industry": ("string", "text", False, False, False, None, "internal"),
    "total_orders": ("integer", "integer", True, False, False, None, "internal"),
    "lifetime_value": ("number", "numeric(14,2)", True, False, False, None, "internal"),
    "avg_order_value": ("number", "numeric(14,2)", False, False, False, None, "internal"),
    "last_order_date": ("date", "date", False, False, False, None, "internal"),
}


def column_facts(document: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        name: (
            p["logicalType"],
            p["physicalType"],
            p["required"],
            p["unique"],
            p["primaryKey"],
            p.get("primaryKeyPosition"),
            p["classification"],
        )
        for name, p in properties(document).items()
    }


async def test_sales_orders_contract(sales: httpx.AsyncClient) -> None:
    response = await sales.get("/sales/v1/products/orders/contract", params={"format": "json"})
    assert response.status_code == 200
    document = response.json()
    assert {k: document[k] for k in ("apiVersion", "kind", "name", "version", "status")} == {
        "apiVersion": "v3.2.0",
        "kind": "DataContract",
        "name": "orders",
        "version": "1.0.0",
        "status": "active",
    }
    assert document["tags"] == ["sales", "table"]
    obj = document["schema"][0]
    assert {
        k: obj[k] for k in ("name", "physicalName", "businessName", "physicalType", "logicalType")
    } == {
        "name": "orders",
        "physicalName": "orders",
        "businessName": "Orders",
        "physicalType": "table",
        "logicalType": "object",
    }
    assert obj["description"] == "Sales orders: one row per order placed by a customer."
    assert obj["dataGranularityDescription"] == "One row per order_id."
    assert column_facts(document) == ORDERS_COLUMNS
    assert properties(document)["total_amount"]["description"] == (
        "Order total in US dollars: the sum of its order lines' line_total."
    )
    assert all("customProperties" not in p for p in obj["properties"])  # no PII here
    assert "roles" not in document
    assert document["description"]["limitations"] == "No PII columns."
    assert document["description"]["purpose"] == SALES_ORDERS.description
    assert document["servers"] == [
        {
            "server": "sales-api",
            "type": "api",
            "location": "http://test/sales/v1/orders",
            "description": "The Sales domain's HTTP endpoint of orders.",
        }
    ]
    assert document["team"] == {
        "name": "Sales team",
        "description": "Owns the sales domain: Customer orders and revenue data.",
        "members": [{"username": "sales-team@company.com", "role": "owner"}],
    }
    assert document["support"][0]["url"] == "mailto:sales-team@company.com"
    assert document["customProperties"] == [
        {
            "property": "dataClassification",
            "value": "confidential",
            "description": "The domain's classification of its data as a whole.",
        }
    ]
    assert document["authoritativeDefinitions"][0]["url"] == (
        "http://test/sales/v1/products/orders/contract"
    )


async def test_sales_orders_sla(sales: httpx.AsyncClient) -> None:
    document = yaml.safe_load((await sales.get("/sales/v1/products/orders/contract")).text)
    sla = {s["property"]: s for s in document["slaProperties"]}
    assert (sla["availability"]["value"], sla["availability"]["unit"]) == (99.5, "percent")
    assert (sla["latency"]["value"], sla["latency"]["unit"]) == (1, "s")
    assert (sla["retention"]["value"], sla["retention"]["unit"]) == (3, "y")
    assert sla["frequency"] == {
        "property": "frequency",
        "value": "real-time",
        "description": "Update frequency: real-time.",
    }
    freshness = SALES_ORDERS.freshness
    assert freshness is not None and freshness.seconds == 0, "orders declares whole days"
    assert sla["freshness"] == {
        "property": "freshness",
        "value": freshness.days,
        "unit": "d",
        "element": "orders.order_date",
        "description": f"The newest row is at most {freshness.days} days old (by order_date).",
    }
    assert [s["property"] for s in document["slaProperties"]] == [
        "availability",
        "latency",
        "freshness",
        "retention",
        "frequency",
    ]


async def test_sales_orders_quality_rules_are_its_declared_checks(
    sales: httpx.AsyncClient,
) -> None:
    assert SALES_ORDERS.checks, "sales orders declares no checks"
    document = (await sales.get("/sales/v1/products/orders/contract?format=json")).json()
    found = rules(document)
    assert len(found) == len(SALES_ORDERS.checks) > 10
    assert found["references:customer_id->customers"] == (
        "customer_id",
        {
            "name": "references:customer_id->customers",
            "description": "Every non-null customer_id exists as customers.customer_id.",
            "type": "custom",
            "engine": "datamesh",
            "implementation": {
                "dialect": "postgresql",
                "query": 'SELECT count(*) FROM "orders" AS t WHERE t."customer_id" IS NOT NULL '
                'AND NOT EXISTS (SELECT 1 FROM "customers" AS r '
                'WHERE r."customer_id" = t."customer_id")',
                "mustBe": 0,
                "reads": ["orders", "customers"],
                "runBy": "the domain's quality runs, on its database",
            },
            "unit": "rows",
            "dimension": "consistency",
            "severity": "critical",
        },
    )
    assert found["consistency:total_is_sum_of_lines"] == (
        None,
        {
            "name": "consistency:total_is_sum_of_lines",
            "description": "total_amount equals the sum of the order's line_total, to the cent.",
            "type": "custom",
            "engine": "datamesh",
            "implementation": {
                "dialect": "postgresql",
                "query": 'SELECT count(*) FROM "orders" AS t WHERE (t.total_amount <> '
                "coalesce((SELECT sum(i.line_total) FROM order_items AS i "
                "WHERE i.order_id = t.order_id), 0)) IS TRUE",
                "mustBe": 0,
                "reads": ["orders", "order_items"],
                "runBy": "the domain's quality runs, on its database",
            },
            "unit": "rows",
            "dimension": "consistency",
            "severity": "critical",
        },
    )
    assert found["accepted_values:region"][1]["query"] == (
        'SELECT count(*) FROM "orders" AS t WHERE t."region" IS NOT NULL AND NOT '
        "(t.\"region\"::text IN ('North America', 'Europe', 'Asia Pacific'))"
    )
    assert found["not_null:order_id"][1]["severity"] == "critical"
    for check in SALES_ORDERS.checks:
        assert found[check.name] == quality_rule(SALES_ORDERS, check)
        level, rule = found[check.name]
        assert rule["dimension"] == str(check.dimension)
        assert rule["severity"] == str(check.severity)
        if isinstance(check, Unique | References):
            expected = check.columns[0] if len(check.columns) == 1 else None
        else:  # rules on one column sit on it; row counts and consistency on the object
            expected = getattr(check, "column", None)
        assert level == expected, check.name


# --- one view: customer lifetime value --------------------------------------------------------


async def test_customer_lifetime_value_contract(sales: httpx.AsyncClient) -> None:
    document = yaml.safe_load(
        (await sales.get("/sales/v1/products/customer-lifetime-value/contract")).text
    )
    assert column_facts(document) == CLV_COLUMNS
    obj = document["schema"][0]
    assert (obj["name"], obj["physicalName"], obj["businessName"], obj["physicalType"]) == (
        "customer_lifetime_value",
        "customer_lifetime_value",
        "Customer lifetime value",
        "view",
    )
    assert obj["description"] == f"{CLV.description}\n\nDefinition: {CLV.definition}"
    assert document["tags"] == ["sales", "view"]
    assert document["description"]["limitations"] == (
        "No PII columns. An analytics view: materialized from the domain's tables and "
        "refreshed when they change (a committed write is in it within 30 seconds)."
    )
    assert document["servers"][0]["location"] == "http://test/sales/v1/customer-lifetime-value"


# --- PII --------------------------------------------------------------------------------------------

PII_PROPERTY = {
    "property": "readInClearScope",
    "description": "Callers without this scope read the value masked.",
}


async def test_pii_columns_name_the_scope_that_reads_them_in_clear(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    customers = (await sales.get("/sales/v1/products/customers/contract?format=json")).json()
    email = properties(customers)["email"]
    assert email["classification"] == "pii"
    assert (email["required"], email["unique"], email["primaryKey"]) == (True, True, False)
    assert email["customProperties"] == [{**PII_PROPERTY, "value": "sales:pii"}]
    assert email["tags"] == ["pii"]
    pii = sorted(n for n, p in properties(customers).items() if "customProperties" in p)
    assert pii == ["email", "phone"]
    assert customers["roles"] == [
        {
            "role": "sales:pii",
            "access": "read",
            "description": "Reads the PII columns in clear; without it they are masked.",
        }
    ]
    assert customers["description"]["limitations"] == (
        "PII columns (email, phone) are masked for callers without the sales:pii scope."
    )
    assert properties(customers)["customer_name"]["classification"] == "confidential"
    assert "customProperties" not in properties(customers)["customer_name"]
    leads = (await marketing.get("/marketing/v1/products/leads/contract?format=json")).json()
    assert properties(leads)["email"]["customProperties"] == [
        {**PII_PROPERTY, "value": "marketing:pii"}
    ]
    assert sorted(n for n, p in properties(leads).items() if p["classification"] == "pii") == [
        "email",
        "first_name",
        "last_name",
    ]


# --- quality rules, one per check kind (a declaration made here, so every shape is pinned) ----

EVERY_KIND = Product(
    name=SALES_ORDERS.name,
    source=SALES_ORDERS.source,
    description=SALES_ORDERS.description,
    columns=SALES_ORDERS.columns,
    key=SALES_ORDERS.key,
    freshness=dt.timedelta(hours=36),
    checks=(
        NotNull(column="customer_id", severity=Severity.CRITICAL),
        Unique(columns=("order_id",)),
        Unique(columns=("customer_id", "order_date", "total_amount"), severity=Severity.MINOR),
        AcceptedValues(
            column="order_status", values=("Pending", "Processing", "Completed", "Cancelled")
        ),
        Range(column="total_amount", minimum=0, maximum=1_000_000),
        Pattern(column="sales_rep", regex="^[A-Z][a-z]+ [A-Z][a-z]+$", label="full_name"),
        References(
            columns=("customer_id",), target_table="customers", target_columns=("customer_id",)
        ),
        Freshness(column="order_date", max_age=dt.timedelta(hours=36)),
        RowCount(minimum=1, maximum=1000),
        Consistency(
            rule="total_is_sum_of_lines",
            violations="t.total_amount <> (SELECT coalesce(sum(i.line_total), 0) "
            "FROM order_items AS i WHERE i.order_id = t.order_id)",
            description="An order's total equals the sum of its lines' line_total.",
            reads=("order_items",),
        ),
        Outliers(column="total_amount", threshold=3.5),
    ),
)
EVERY_KIND_CONTRACT = contract(SALES, EVERY_KIND, base_url="https://mesh.example.com:8443")

EXPECTED_RULES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "not_null:customer_id": (
        "customer_id",
        {
            "name": "not_null:customer_id",
            "description": "customer_id is never null.",
            "type": "sql",
            "query": 'SELECT count(*) FROM "orders" AS t WHERE t."customer_id" IS NULL',
            "mustBe": 0,
            "unit": "rows",
            "dimension": "completeness",
            "severity": "critical",
        },
    ),
    "unique:order_id": (
        "order_id",
        {
            "name": "unique:order_id",
            "description": "No two rows share a value of order_id.",
            "type": "sql",
            "query": 'SELECT count(*) FROM (SELECT t."order_id" FROM "orders" AS t '
            'WHERE t."order_id" IS NOT NULL GROUP BY t."order_id" HAVING '
            "count(*) > 1) AS duplicated",
            "mustBe": 0,
            "unit": "rows",
            "dimension": "uniqueness",
            "severity": "major",
        },
    ),
    "unique:customer_id,order_date,total_amount": (
        None,
        {
            "name": "unique:customer_id,order_date,total_amount",
            "description": "No two rows share a "
            "combination of (customer_id, "
            "order_date, total_amount).",
            "type": "sql",
            "query": "SELECT count(*) FROM (SELECT "
            't."customer_id", t."order_date", '
            't."total_amount" FROM "orders" AS '
            't WHERE t."customer_id" IS NOT '
            'NULL AND t."order_date" IS NOT '
            'NULL AND t."total_amount" IS NOT '
            'NULL GROUP BY t."customer_id", '
            't."order_date", t."total_amount" '
            "HAVING count(*) > 1) AS duplicated",
            "mustBe": 0,
            "unit": "rows",
            "dimension": "uniqueness",
            "severity": "minor",
        },
    ),
    "accepted_values:order_status": (
        "order_status",
        {
            "name": "accepted_values:order_status",
            "description": "order_status is one of: Pending, Processing, Completed, Cancelled.",
            "type": "sql",
            "query": 'SELECT count(*) FROM "orders" AS t WHERE '
            't."order_status" IS NOT NULL AND NOT '
            "(t.\"order_status\"::text IN ('Pending', "
            "'Processing', 'Completed', 'Cancelled'))",
            "mustBe": 0,
            "unit": "rows",
            "dimension": "conformity",
            "severity": "major",
        },
    ),
    "range:total_amount": (
        "total_amount",
        {
            "name": "range:total_amount",
            "description": "total_amount is between 0 and 1000000.",
            "type": "sql",
            "query": 'SELECT count(*) FROM "orders" AS t WHERE (t."total_amount" '
            '< 0 OR t."total_amount" > 1000000)',
            "mustBe": 0,
            "unit": "rows",
            "dimension": "conformity",
            "severity": "major",
        },
    ),
    "full_name:sales_rep": (
        "sales_rep",
        {
            "name": "full_name:sales_rep",
            "description": "sales_rep matches the full_name pattern ^[A-Z][a-z]+ [A-Z][a-z]+$.",
            "type": "sql",
            "query": 'SELECT count(*) FROM "orders" AS t WHERE t."sales_rep" IS '
            'NOT NULL AND NOT (t."sales_rep"::text ~ '
            "'(?s)^.*(?:^[A-Z][a-z]+ [A-Z][a-z]+$).*$')",
            "mustBe": 0,
            "unit": "rows",
            "dimension": "conformity",
            "severity": "major",
        },
    ),
    "references:customer_id->customers": (
        "customer_id",
        {
            "name": "references:customer_id->customers",
            "description": "Every non-null customer_id exists as customers.customer_id.",
            "type": "custom",
            "engine": "datamesh",
            "implementation": {
                "dialect": "postgresql",
                "query": "SELECT count(*) FROM "
                '"orders" AS t WHERE '
                't."customer_id" IS NOT '
                "NULL AND NOT EXISTS "
                "(SELECT 1 FROM "
                '"customers" AS r WHERE '
                'r."customer_id" = '
                't."customer_id")',
                "mustBe": 0,
                "reads": ["orders", "customers"],
                "runBy": "the domain's quality runs, on its database",
            },
            "unit": "rows",
            "dimension": "consistency",
            "severity": "major",
        },
    ),
    "freshness:order_date": (
        "order_date",
        {
            "name": "freshness:order_date",
            "description": "The newest order_date is at most 36 hours old.",
            "type": "sql",
            "query": "SELECT extract(epoch FROM now() - "
            "(max(t.\"order_date\")::timestamp AT TIME ZONE 'UTC')) / "
            '3600 FROM "orders" AS t',
            "mustBeLessOrEqualTo": 36,
            "unit": "hours",
            "dimension": "timeliness",
            "severity": "major",
        },
    ),
    "row_count": (
        None,
        {
            "name": "row_count",
            "description": "The product has between 1 and 1000 rows.",
            "type": "sql",
            "query": 'SELECT count(*) FROM "orders" AS t',
            "mustBeBetween": [1, 1000],
            "unit": "rows",
            "dimension": "coverage",
            "severity": "major",
        },
    ),
    "consistency:total_is_sum_of_lines": (
        None,
        {
            "name": "consistency:total_is_sum_of_lines",
            "description": "An order's total equals the sum of its lines' line_total.",
            "type": "custom",
            "engine": "datamesh",
            "implementation": {
                "dialect": "postgresql",
                "query": "SELECT count(*) FROM "
                '"orders" AS t WHERE '
                "(t.total_amount <> "
                "(SELECT "
                "coalesce(sum(i.line_total), "
                "0) FROM order_items AS i "
                "WHERE i.order_id = "
                "t.order_id)) IS TRUE",
                "mustBe": 0,
                "reads": ["orders", "order_items"],
                "runBy": "the domain's quality runs, on its database",
            },
            "unit": "rows",
            "dimension": "consistency",
            "severity": "major",
        },
    ),
    "outliers:total_amount": (
        "total_amount",
        {
            "name": "outliers:total_amount",
            "description": "No total_amount has a robust z-score (0.6745 x |x "
            "- median| / MAD) above 3.5.",
            "type": "sql",
            "query": "WITH centre AS (SELECT percentile_cont(0.5) WITHIN "
            'GROUP (ORDER BY t."total_amount"::double precision) AS '
            'median FROM "orders" AS t WHERE t."total_amount" IS NOT '
            "NULL), spread AS (SELECT percentile_cont(0.5) WITHIN "
            'GROUP (ORDER BY abs(t."total_amount"::double precision '
            '- centre.median)) AS mad FROM "orders" AS t, centre '
            'WHERE t."total_amount" IS NOT NULL) SELECT count(*) '
            'FROM "orders" AS t, centre, spread WHERE spread.mad > 0 '
            'AND 0.6745 * abs(t."total_amount"::double precision - '
            "centre.median) / spread.mad > 3.5",
            "mustBe": 0,
            "unit": "rows",
            "dimension": "accuracy",
            "severity": "major",
            "customProperties": [
                {
                    "property": "warnOnly",
                    "value": True,
                    "description": "A breach is reported as a warning, not a failure.",
                }
            ],
        },
    ),
}


def test_every_check_kind_becomes_its_odcs_rule() -> None:
    assert errors(EVERY_KIND_CONTRACT) == []
    assert rules(EVERY_KIND_CONTRACT) == EXPECTED_RULES
    # property-level rules sit on their column, in declaration order
    on_total = properties(EVERY_KIND_CONTRACT)["total_amount"]["quality"]
    assert [r["name"] for r in on_total] == ["range:total_amount", "outliers:total_amount"]
    assert [r["name"] for r in EVERY_KIND_CONTRACT["schema"][0]["quality"]] == [
        "unique:customer_id,order_date,total_amount",
        "row_count",
        "consistency:total_is_sum_of_lines",
    ]


def test_row_count_and_range_thresholds_follow_the_open_bounds() -> None:
    def rule(check: Any) -> dict[str, Any]:
        return quality_rule(SALES_ORDERS, check)[1]

    assert rule(RowCount(minimum=5))["mustBeGreaterOrEqualTo"] == 5
    assert rule(RowCount(maximum=9))["mustBeLessOrEqualTo"] == 9
    assert rule(RowCount(minimum=7, maximum=7))["mustBe"] == 7
    low = rule(Range(column="total_amount", minimum=0.5))
    assert (low["description"], low["query"]) == (
        "total_amount is at least 0.5.",
        'SELECT count(*) FROM "orders" AS t WHERE (t."total_amount" < 0.5)',
    )
    high = rule(Range(column="total_amount", maximum=10))
    assert high["query"] == 'SELECT count(*) FROM "orders" AS t WHERE (t."total_amount" > 10)'
    assert rule(RowCount())["mustBeGreaterOrEqualTo"] == 0


def test_sla_of_a_declared_freshness_and_other_service_levels() -> None:
    levels = ServiceLevels(
        availability_pct=99.9,
        retention=dt.timedelta(days=400),
        latency=dt.timedelta(minutes=5),
    )
    custom = Domain(
        name="sales",
        title="Sales",
        description="Customer orders and revenue data",
        owner="sales-team@company.com",
        update_frequency="daily",
        data_classification="confidential",
        database="sales_db",
        products=(EVERY_KIND,),
        service_levels=levels,
    )
    document = contract(custom, EVERY_KIND, base_url="http://test")
    assert errors(document) == []
    assert document["slaProperties"] == [
        {
            "property": "availability",
            "value": 99.9,
            "unit": "percent",
            "description": "Share of time the product's endpoint answers.",
        },
        {
            "property": "latency",
            "value": 5,
            "unit": "min",
            "description": "A write committed to the domain database is readable through the "
            "endpoint within 5 minutes.",
        },
        {
            "property": "freshness",
            "value": 36,
            "unit": "h",
            "element": "orders.order_date",
            "description": "The newest row is at most 36 hours old (by order_date).",
        },
        {
            "property": "retention",
            "value": 400,
            "unit": "d",
            "description": "Rows are kept for 400 days.",
        },
        {
            "property": "frequency",
            "value": 1,
            "unit": "d",
            "description": "Update frequency: daily.",
        },
    ]


def test_yaml_and_json_renderings_are_the_same_document() -> None:
    assert yaml.safe_load(render_yaml(EVERY_KIND_CONTRACT)) == EVERY_KIND_CONTRACT
    assert json.loads(render_json(EVERY_KIND_CONTRACT)) == EVERY_KIND_CONTRACT
    assert list(yaml.safe_load(render_yaml(EVERY_KIND_CONTRACT)))[:6] == [
        "apiVersion",
        "kind",
        "id",
        "name",
        "version",
        "status",
    ]


def scalar(url: str, query: str, timezone: str = "UTC") -> Any:
    with psycopg.connect(url, options=f"-c TimeZone={timezone}") as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_the_sql_rules_measure_what_they_say_on_the_sample_data(
    database_urls: dict[str, str],
) -> None:
    url = database_urls["sales"]
    with psycopg.connect(url) as conn:
        totals = [r[0] for r in conn.execute("SELECT total_amount FROM orders").fetchall()]
        newest = conn.execute("SELECT max(order_date) FROM orders").fetchone()
    assert newest is not None
    median = statistics.median(totals)
    mad = statistics.median(abs(t - median) for t in totals)
    outliers = sum(1 for t in totals if Decimal("0.6745") * abs(t - median) / mad > Decimal("3.5"))
    queries = {n: rule_query(r) for n, (_, r) in rules(EVERY_KIND_CONTRACT).items()}
    measured = {n: scalar(url, q) for n, q in queries.items() if not n.startswith("freshness")}
    assert measured == {
        "not_null:customer_id": 0,
        "unique:order_id": 0,
        "unique:customer_id,order_date,total_amount": 0,
        "accepted_values:order_status": 0,
        "range:total_amount": 0,
        "full_name:sales_rep": 3,  # Liam O'Connor's orders: the declared pattern has no apostrophe
        "references:customer_id->customers": 0,
        "row_count": 20,
        "consistency:total_is_sum_of_lines": 0,
        "outliers:total_amount": outliers,
    }
    # a date's age counts from its midnight UTC, whatever the session's time zone
    age = scalar(url, queries["freshness:order_date"], timezone="Pacific/Auckland")
    midnight = dt.datetime.combine(newest[0], dt.time(), tzinfo=dt.UTC)
    expected = (dt.datetime.now(dt.UTC) - midnight).total_seconds() / 3600
    assert abs(float(age) - expected) < 0.1


def test_a_pattern_is_searched_in_the_value_as_postgresql_does(
    database_urls: dict[str, str],
) -> None:
    """The published pattern query finds what PostgreSQL's `~` finds, though it is written
    to match whole values (as DuckDB's `~` does)."""
    unanchored = Pattern(column="sales_rep", regex="Rod", label="rod")
    anchored = Pattern(column="sales_rep", regex="^James")
    url = database_urls["sales"]
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE NOT sales_rep ~ 'Rod'), "
            "count(*) FILTER (WHERE NOT sales_rep ~ '^James') FROM orders"
        ).fetchone()
    assert row is not None
    assert (
        scalar(url, quality_rule(SALES_ORDERS, unanchored)[1]["query"]),
        scalar(url, quality_rule(SALES_ORDERS, anchored)[1]["query"]),
    ) == row
    assert 0 < row[0] < 20 and 0 < row[1] < 20, row  # both find some rows and miss others


@pytest.mark.parametrize("name", DOMAINS)
def test_every_declared_rule_runs_and_passes_on_the_sample_data(
    name: str, database_urls: dict[str, str]
) -> None:
    for product in domain(name).products:
        for check in product.checks:
            _, rule = quality_rule(product, check)
            value = scalar(database_urls[name], rule_query(rule))
            if check.warn_only or "freshness" in check.name:  # freshness: as of today
                continue
            if rule["type"] == "custom":
                assert rule["implementation"]["mustBe"] == 0
                assert value == 0, (product.name, check.name, value)
            elif "mustBe" in rule:
                assert value == rule["mustBe"], (product.name, check.name, value)
            else:
                low, high = rule.get("mustBeBetween", [rule.get("mustBeGreaterOrEqualTo"), None])
                high = rule.get("mustBeLessOrEqualTo", high)
                assert low is None or value >= low, (product.name, check.name, value)
                assert high is None or value <= high, (product.name, check.name, value)


class RecordingConnection:
    """A connection that keeps every statement the quality run executes."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def transaction(self, **options: Any) -> Any:
        return self.conn.transaction(**options)

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert args == (), query  # nothing bound: the statement is the whole of it
        self.statements.append(query)
        return await self.conn.fetchval(query)


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_contract_publishes_the_sql_the_quality_run_executes(
    name: str, database_urls: dict[str, str]
) -> None:
    products = domain(name).products
    published = []
    for product in products:
        found = rules(contract(domain(name), product, base_url="http://test"))
        published += [(product.name, c.name, rule_query(found[c.name][1])) for c in product.checks]
    assert len(published) == {"sales": 67, "marketing": 81}[name]
    conn = await connect(database_urls[name])
    recording = RecordingConnection(conn)
    try:
        results = await run_checks(recording, products)  # type: ignore[arg-type]
    finally:
        await conn.close()
    # every check's measured value comes from its published query, executed as published, in
    # the declared order; the run's other statements only fetch failing rows and details
    queries = {query for _, _, query in published}
    executed = [q for q in recording.statements if q in queries]
    assert executed == [query for _, _, query in published]
    assert [(r.product, r.check_name) for r in results] == [(p, c) for p, c, _ in published]
    others = [q for q in recording.statements if q not in queries]
    details = [
        q
        for p in products
        for c in p.checks
        if (q := measurement(p, c).detail) is not None  # freshness and outliers
    ]
    assert others == details


# datacontract-cli is not a dependency of the project: install it in a virtualenv of its own
# (python -m venv /tmp/dccli && /tmp/dccli/bin/pip install 'datacontract-cli[duckdb]') and
# point this at it
DATACONTRACT_CLI = os.environ.get("DATAMESH_DATACONTRACT_CLI")
NEEDS_CLI = pytest.mark.skipif(
    not DATACONTRACT_CLI,
    reason="set DATAMESH_DATACONTRACT_CLI to a datacontract executable to run it",
)


@NEEDS_CLI
def test_datacontract_lint_passes_every_contract_without_warnings(tmp_path: Path) -> None:
    assert DATACONTRACT_CLI is not None
    documents = {
        f"{n}-{p}": contract(domain(n), domain(n).product(p), base_url="http://test")  # type: ignore[arg-type]
        for n, p in EVERY_PRODUCT
    }
    documents["every-kind"] = EVERY_KIND_CONTRACT
    for key, document in documents.items():
        source = tmp_path / f"{key}.odcs.yaml"
        source.write_text(render_yaml(document))
        report = tmp_path / f"{key}.json"
        done = subprocess.run(
            [
                DATACONTRACT_CLI,
                "lint",
                str(source),
                "--output-format",
                "json",
                "--output",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (key, done.stdout, done.stderr)
        result = json.loads(report.read_text())
        assert result["result"] == "passed", (key, result["checks"])
        assert [(c["name"], c["result"]) for c in result["checks"]] == [
            ("Data contract is valid against ODCS v3.2.0", "passed")
        ], key


def sql_rules(document: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(c, r) for c, r in rules(document).values() if r["type"] == "sql"]


@NEEDS_CLI
@pytest.mark.parametrize(("name", "product"), EVERY_PRODUCT)
def test_datacontract_test_evaluates_every_contract_over_http_without_errors(
    name: str, product: str, domain_urls: dict[str, str], tmp_path: Path
) -> None:
    """`datacontract test` against the running domain: it fetches the product's endpoint,
    loads the rows in DuckDB and runs every `sql` rule there without an evaluation error; the
    `datamesh` engine's rules (they read other tables) are skipped. The sample data is as of
    AS_OF, long past: only the freshness rules fail, on their measured age."""
    assert DATACONTRACT_CLI is not None
    served = httpx.get(
        f"{domain_urls[name]}/{name}/v1/products/{product}/contract", headers=ADMIN, timeout=30
    )
    assert served.status_code == 200, served.text
    document = yaml.safe_load(served.text)
    source = tmp_path / f"{name}-{product}.odcs.yaml"
    source.write_text(served.text)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [DATACONTRACT_CLI, "test", str(source), "--output-format", "json", "--output", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DATACONTRACT_API_HEADER_AUTHORIZATION": ADMIN["Authorization"]},
    )
    assert report.exists(), (done.stdout, done.stderr)
    checks = json.loads(report.read_text())["checks"]
    broken = [
        (c["name"], c["result"], c.get("reason"))
        for c in checks
        if c["result"] == "error"
        or (c.get("reason") or "").startswith("Error evaluating")
        or "not executed" in (c.get("reason") or "")
    ]
    assert broken == [], broken
    evaluated = [c for c in checks if c["type"] in ("field_quality_sql", "model_quality_sql")]
    published = sql_rules(document)
    assert sorted((c["field"] or "", c["name"]) for c in evaluated) == sorted(
        (column or "", rule["description"]) for column, rule in published
    )
    declared = domain(name).product(product)
    assert declared is not None
    # the freshness rule (a minor one is a warning to datacontract-cli) and the freshness SLA
    stale = [c for c in declared.checks if isinstance(c, Freshness)]
    assert sorted((c["field"], c["result"]) for c in checks if c["result"] != "passed") == sorted(
        [(c.column, "warning" if c.severity is Severity.MINOR else "failed") for c in stale]
        + [(c.column, "failed") for c in stale]
    )


# --- HTTP ----------------------------------------------------------------------------------------


async def test_the_server_url_comes_from_the_request(sales: httpx.AsyncClient) -> None:
    response = await sales.get(
        "/sales/v1/products/orders/contract?format=json",
        headers={"Host": "data.example.com:9000"},
    )
    document = response.json()
    assert document["servers"][0]["location"] == "http://data.example.com:9000/sales/v1/orders"
    assert document["authoritativeDefinitions"][0]["url"] == (
        "http://data.example.com:9000/sales/v1/products/orders/contract"
    )


@pytest.mark.parametrize(
    ("headers", "query", "media_type"),
    [
        ({}, "", "application/yaml"),
        ({"Accept": "*/*"}, "", "application/yaml"),
        ({"Accept": "application/yaml"}, "", "application/yaml"),
        ({"Accept": "text/yaml"}, "", "application/yaml"),
        ({"Accept": "application/json"}, "", "application/json"),
        ({"Accept": "application/json;q=0.5, application/yaml"}, "", "application/yaml"),
        ({"Accept": "text/csv, application/json;q=0.1"}, "", "application/json"),
        ({"Accept": "application/json"}, "?format=yaml", "application/yaml"),
        ({}, "?format=json", "application/json"),
        ({}, "?format=JSON", "application/json"),
    ],
)
async def test_contract_negotiation(
    sales: httpx.AsyncClient, headers: dict[str, str], query: str, media_type: str
) -> None:
    response = await sales.get(f"/sales/v1/products/orders/contract{query}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    document = (
        response.json() if media_type == "application/json" else yaml.safe_load(response.text)
    )
    assert document["name"] == "orders"


async def test_unknown_product_is_a_404_naming_the_known_ones(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    body = problem(await sales.get("/sales/v1/products/campaigns/contract"), 404, "unknown_product")
    assert body["detail"] == (
        "Unknown data product 'campaigns' in domain 'sales'; known: customers, products, "
        "orders, order-items, sales-summary, customer-lifetime-value, product-performance."
    )
    assert body["product"] == "campaigns"
    body = problem(
        await marketing.get("/marketing/v1/products/orders/contract"), 404, "unknown_product"
    )
    assert "known: campaigns, leads, campaign-metrics" in body["detail"]


async def test_unsupported_media_types_are_a_406(sales: httpx.AsyncClient) -> None:
    path = "/sales/v1/products/orders/contract"
    body = problem(await sales.get(path, headers={"Accept": "text/csv"}), 406, "not_acceptable")
    assert body["detail"] == (
        "None of the media types in Accept 'text/csv' is available for a contract; "
        "supported: application/yaml, application/json."
    )
    assert body["accept"] == "text/csv"
    body = problem(await sales.get(path, params={"format": "csv"}), 406, "not_acceptable")
    assert body["detail"] == (
        "Parameter 'format' has value 'csv'; a contract is served as yaml or json."
    )
    problem(
        await sales.get(path, headers={"Accept": "application/json;q=0, text/html"}),
        406,
        "not_acceptable",
    )


async def test_the_sales_products_table_still_reads_one_row_by_key(
    sales: httpx.AsyncClient,
) -> None:
    response = await sales.get("/sales/v1/products/1")
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["product_id"] == 1
    assert set(row) == set(SALES.product("products").column_names)  # type: ignore[union-attr]
    problem(await sales.get("/sales/v1/products/999"), 404, "not_found")
    contract_of_products = await sales.get("/sales/v1/products/products/contract")
    assert yaml.safe_load(contract_of_products.text)["schema"][0]["physicalName"] == "products"


async def test_the_contract_route_is_in_the_openapi_document(sales: httpx.AsyncClient) -> None:
    paths = (await sales.get("/sales/openapi.json")).json()["paths"]
    operation = paths["/sales/v1/products/{product}/contract"]["get"]
    assert operation["tags"] == ["contracts"]
    assert set(operation["responses"]["200"]["content"]) == {"application/yaml", "application/json"}
