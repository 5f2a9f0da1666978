"""The mesh's cross-domain metrics against the oracle: the seed's own recipe (psycopg + pandas,
straight from both databases, see tests/mesh_oracle.py), on the sample data and on a second data
set built to corner the definitions (tests/mesh_dataset.py). Exact equality, to the cent.

Also: the metric catalogue and its lineage, each endpoint's documented definition, the read
grammar and formats on a metric, and bad input as problem+json.
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
import pytest

from services import domain
from services.federation.metrics import METRICS
from shared.serving.app import create_domain_app
from tests import mesh_dataset
from tests.conftest import create_database, mesh_client
from tests.mesh_oracle import METRIC_NAMES, MeshOracle
from tests.postgres import PostgresServer
from tests.servers import served

Row = dict[str, Any]
PROBLEM_JSON = "application/problem+json"
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')

# Each metric's output columns and their types, as metrics.py declares them.
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "lead-to-customer-journey": [
        ("lead_id", "integer"),
        ("customer_id", "integer"),
        ("customer_name", "text"),
        ("company", "text"),
        ("lead_source", "text"),
        ("campaign_id", "integer"),
        ("campaign_name", "text"),
        ("lead_created_at", "timestamp"),
        ("converted_at", "timestamp"),
        ("customer_created_at", "timestamp"),
        ("days_to_conversion", "integer"),
        ("orders_since_conversion", "integer"),
        ("revenue_since_conversion", "money"),
    ],
    "campaign-roi": [
        ("campaign_id", "integer"),
        ("campaign_name", "text"),
        ("channel", "text"),
        ("spent", "money"),
        ("attributed_revenue", "money"),
        ("orders", "integer"),
        ("roi_pct", "decimal"),
    ],
    "customer-acquisition-cost": [
        ("since", "date"),
        ("until", "date"),
        ("total_marketing_spend", "money"),
        ("new_customers", "integer"),
        ("customer_acquisition_cost", "money"),
    ],
    "channel-effectiveness": [
        ("channel", "text"),
        ("campaigns", "integer"),
        ("total_leads", "integer"),
        ("converted_leads", "integer"),
        ("total_spent", "money"),
        ("attributed_revenue", "money"),
        ("orders", "integer"),
        ("revenue_per_dollar", "decimal"),
    ],
    "product-campaign-correlation": [
        ("campaign_id", "integer"),
        ("campaign_name", "text"),
        ("product_id", "integer"),
        ("product_name", "text"),
        ("category", "text"),
        ("orders", "integer"),
        ("quantity", "integer"),
        ("revenue", "money"),
    ],
    "lead-source-effectiveness": [
        ("lead_source", "text"),
        ("leads", "integer"),
        ("converted_customers", "integer"),
        ("conversion_rate", "decimal"),
        ("revenue", "money"),
        ("revenue_per_converted_customer", "money"),
    ],
}

# The domain products each metric reads (its lineage), as metrics.py declares them.
_JOINED = {"marketing/leads", "marketing/campaigns", "sales/customers", "sales/orders"}
INPUTS: dict[str, set[str]] = {
    "lead-to-customer-journey": _JOINED,
    "campaign-roi": _JOINED,
    "customer-acquisition-cost": {"sales/customers", "marketing/campaigns"},
    "channel-effectiveness": _JOINED,
    "product-campaign-correlation": _JOINED | {"sales/order-items", "sales/products"},
    "lead-source-effectiveness": {"marketing/leads", "sales/customers", "sales/orders"},
}

# Periods (since, until) per data set, chosen on the data's own boundaries.
SAMPLE_PERIODS: list[tuple[str, str | None, str | None]] = [
    ("lead-to-customer-journey", "2024-06-20", "2024-07-20"),
    ("campaign-roi", "2024-08-04", "2024-09-03"),
    ("customer-acquisition-cost", "2024-06-20", None),
    ("customer-acquisition-cost", "2024-06-20", "2024-08-19"),
    ("channel-effectiveness", "2024-07-01", None),
    ("product-campaign-correlation", None, "2024-08-31"),
    ("lead-source-effectiveness", "2024-09-01", "2024-10-18"),
]
ALT_PERIODS: list[tuple[str, str | None, str | None]] = [
    # leads converted 2024-11-06 23:59:59 and 2024-12-12 00:00:00 UTC are in, 12-20 is out
    ("lead-to-customer-journey", "2024-11-06", "2024-12-12"),
    ("lead-to-customer-journey", "2024-10-28", "2024-11-06"),
    ("lead-to-customer-journey", "2025-01-01", None),
    # orders of 2024-11-20 and 2025-01-08 are in, 2024-11-01 and 2025-02-10 out
    ("campaign-roi", "2024-11-20", "2025-01-08"),
    ("campaign-roi", "2025-01-01", None),
    ("channel-effectiveness", "2024-11-20", "2025-01-08"),
    ("channel-effectiveness", None, "2024-12-31"),
    ("product-campaign-correlation", "2024-11-20", "2025-01-08"),
    ("lead-source-effectiveness", "2025-01-02", "2025-01-02"),
    ("lead-source-effectiveness", None, "2024-11-01"),
    # customers created 2024-12-12 00:00:00 and 2024-12-20 10:00 UTC: exactly two
    ("customer-acquisition-cost", "2024-12-12", "2024-12-20"),
    ("customer-acquisition-cost", None, "2024-11-06"),
    ("customer-acquisition-cost", "2024-10-02", None),
    ("customer-acquisition-cost", "2025-04-01", None),  # nobody: NULL cost
    ("customer-acquisition-cost", None, "2024-09-01"),  # until before the default since
    # periods without any order or conversion: empty inputs
    ("lead-to-customer-journey", "2026-01-01", None),
    ("campaign-roi", "2026-01-01", None),
    ("product-campaign-correlation", None, "2024-01-31"),
    ("lead-source-effectiveness", "2026-01-01", "2026-12-31"),
]


def decode(metric: str, rows: list[Row]) -> list[Row]:
    """The mesh's JSON rows as plain values: dates and timestamps parsed, numbers as read.

    Money and ratios must be JSON numbers with exactly two decimals (parsed as Decimal)."""
    types = dict(COLUMNS[metric])
    decoded = []
    for row in rows:
        out: Row = {}
        for name, value in row.items():
            kind = types[name]
            if value is None:
                out[name] = None
            elif kind == "timestamp":
                parsed = dt.datetime.fromisoformat(value)
                assert parsed.utcoffset() == dt.timedelta(0), (name, value)
                out[name] = parsed
            elif kind == "date":
                out[name] = dt.date.fromisoformat(value)
            elif kind in ("money", "decimal"):
                assert isinstance(value, Decimal), (name, value)
                assert value.as_tuple().exponent == -2, (name, value)
                out[name] = value
            elif kind == "integer":
                assert isinstance(value, int), (name, value)
                out[name] = value
            else:
                assert isinstance(value, str), (name, value)
                out[name] = value
        decoded.append(out)
    return decoded


async def read_metric(client: httpx.AsyncClient, metric: str, **params: str) -> list[Row]:
    """A metric's JSON answer, decoded (one page: every answer here is far below a page)."""
    response = await client.get(f"/mesh/v1/{metric}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "link" not in response.headers
    return decode(metric, json.loads(response.text, parse_float=Decimal))


def period_params(since: str | None, until: str | None) -> dict[str, str]:
    return {
        name: value for name, value in (("since", since), ("until", until)) if value is not None
    }


def as_date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


def assert_problem(response: httpx.Response, status: int, code: str, *named: str) -> None:
    """An RFC 9457 problem+json of that status and code whose detail names each of `named`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["instance"] == response.request.url.path
    for text in named:
        assert text in body["detail"], (text, body["detail"])
    assert "Traceback" not in response.text


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alt_database_urls(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Both domains' databases holding the second data set."""
    return {
        name: create_database(postgres_servers, name, f"{name}_alt", mesh_dataset.rows(name))
        for name in ("sales", "marketing")
    }


@pytest.fixture(scope="module")
async def alt_mesh(alt_database_urls: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A mesh federating both domain services, on real HTTP ports, over the second data set."""
    sales_app = create_domain_app(domain("sales"), database_url=alt_database_urls["sales"])
    marketing_app = create_domain_app(
        domain("marketing"), database_url=alt_database_urls["marketing"]
    )
    with served(sales_app) as sales_url, served(marketing_app) as marketing_url:
        async with mesh_client({"sales": sales_url, "marketing": marketing_url}) as client:
            yield client


@pytest.fixture(scope="module")
def sample_oracle(database_urls: dict[str, str]) -> MeshOracle:
    return MeshOracle(database_urls["sales"], database_urls["marketing"])


@pytest.fixture(scope="module")
def alt_oracle(alt_database_urls: dict[str, str]) -> MeshOracle:
    return MeshOracle(alt_database_urls["sales"], alt_database_urls["marketing"])


@pytest.fixture(scope="module")
def datasets(
    mesh: httpx.AsyncClient,
    alt_mesh: httpx.AsyncClient,
    sample_oracle: MeshOracle,
    alt_oracle: MeshOracle,
) -> dict[str, tuple[httpx.AsyncClient, MeshOracle]]:
    return {"sample": (mesh, sample_oracle), "alt": (alt_mesh, alt_oracle)}


# -- every metric equals the oracle -------------------------------------------------------------


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize("dataset", ["sample", "alt"])
async def test_metric_equals_the_oracle(
    datasets: dict[str, tuple[httpx.AsyncClient, MeshOracle]], dataset: str, metric: str
) -> None:
    client, oracle = datasets[dataset]
    expected = oracle.compute(metric)
    assert expected, "the oracle has rows for every metric on both data sets"
    assert await read_metric(client, metric) == expected


@pytest.mark.parametrize(
    ("dataset", "metric", "since", "until"),
    [("sample", *case) for case in SAMPLE_PERIODS] + [("alt", *case) for case in ALT_PERIODS],
)
async def test_metric_over_a_period_equals_the_oracle(
    datasets: dict[str, tuple[httpx.AsyncClient, MeshOracle]],
    dataset: str,
    metric: str,
    since: str | None,
    until: str | None,
) -> None:
    client, oracle = datasets[dataset]
    expected = oracle.compute(metric, as_date(since), as_date(until))
    assert await read_metric(client, metric, **period_params(since, until)) == expected


async def test_the_periods_change_the_answers(
    datasets: dict[str, tuple[httpx.AsyncClient, MeshOracle]],
) -> None:
    """Every period above selects something different from the whole: none is vacuous."""
    for dataset, periods in (("sample", SAMPLE_PERIODS), ("alt", ALT_PERIODS)):
        _, oracle = datasets[dataset]
        for metric, since, until in periods:
            whole = oracle.compute(metric)
            assert oracle.compute(metric, as_date(since), as_date(until)) != whole, (
                dataset,
                metric,
                since,
                until,
            )


# -- the sample data's figures ------------------------------------------------------------------


async def test_sample_journey_has_the_three_converted_leads(mesh: httpx.AsyncClient) -> None:
    journey = await read_metric(mesh, "lead-to-customer-journey")
    assert len(journey) == 3
    assert [(r["lead_id"], r["customer_id"]) for r in journey] == [(1, 12), (4, 13), (6, 14)]
    assert [r["days_to_conversion"] for r in journey] == [30, 35, 25]


async def test_sample_acquisition_cost_uses_the_total_spend(mesh: httpx.AsyncClient) -> None:
    [cac] = await read_metric(mesh, "customer-acquisition-cost")
    assert cac == {
        "since": dt.date(2024, 4, 26),  # the first campaign's start_date
        "until": None,
        "total_marketing_spend": Decimal("327000.00"),
        "new_customers": 5,
        "customer_acquisition_cost": Decimal("65400.00"),
    }


async def test_sample_channel_spend_counts_each_campaign_once(mesh: httpx.AsyncClient) -> None:
    channels = await read_metric(mesh, "channel-effectiveness")
    assert sum(r["total_spent"] for r in channels) == Decimal("327000.00")
    spent = {r["channel"]: r["total_spent"] for r in channels}
    assert spent == {
        "Email": Decimal("24100.00"),
        "Events": Decimal("27500.00"),
        "Google Ads": Decimal("95200.00"),
        "LinkedIn": Decimal("133787.35"),
        "Webinar": Decimal("46412.65"),
    }


# -- the second data set's corners --------------------------------------------------------------


async def test_zero_spend_campaign_has_no_roi(alt_mesh: httpx.AsyncClient) -> None:
    roi = {r["campaign_id"]: r for r in await read_metric(alt_mesh, "campaign-roi")}
    # campaign 8 spent nothing of its 30,000.00 budget; its lead's customer bought 2 orders
    assert roi[8]["spent"] == Decimal("0.00")
    assert roi[8]["orders"] == 2
    assert roi[8]["attributed_revenue"] == Decimal("70699.00")
    assert roi[8]["roi_pct"] is None
    # campaigns 9 and 12 spent nothing and won nothing: NULL too, not -100
    assert roi[9]["roi_pct"] is None
    assert roi[12]["roi_pct"] is None
    # 800.00 spent for 801.00 / 799.00 of revenue: +-0.125 %, half away from zero
    assert (roi[4]["attributed_revenue"], roi[4]["roi_pct"]) == (
        Decimal("801.00"),
        Decimal("0.13"),
    )
    assert (roi[11]["attributed_revenue"], roi[11]["roi_pct"]) == (
        Decimal("799.00"),
        Decimal("-0.13"),
    )
    channels = {r["channel"]: r for r in await read_metric(alt_mesh, "channel-effectiveness")}
    assert channels["Partners"]["total_spent"] == Decimal("0.00")
    assert channels["Partners"]["attributed_revenue"] == Decimal("70699.00")
    assert channels["Partners"]["revenue_per_dollar"] is None


async def test_case_differing_leads_count_their_orders_once_per_channel(
    alt_mesh: httpx.AsyncClient,
) -> None:
    """Ana Silva's two Converted leads (campaigns 1 and 2, both LinkedIn) match one customer."""
    roi = {r["campaign_id"]: r for r in await read_metric(alt_mesh, "campaign-roi")}
    # campaign 1: Ana's orders 2, 3, 4, 6 and Tove Lindqvist's 19, 20; campaign 2: Ana's 4, 6
    assert (roi[1]["orders"], roi[1]["attributed_revenue"]) == (6, Decimal("201238.91"))
    assert (roi[2]["orders"], roi[2]["attributed_revenue"]) == (2, Decimal("48502.00"))
    channels = {r["channel"]: r for r in await read_metric(alt_mesh, "channel-effectiveness")}
    linkedin = channels["LinkedIn"]
    assert (linkedin["campaigns"], linkedin["total_leads"], linkedin["converted_leads"]) == (
        3,
        9,
        3,
    )
    # orders 4 and 6 once, not twice: 6 orders, not 8
    assert (linkedin["orders"], linkedin["attributed_revenue"]) == (6, Decimal("201238.91"))
    assert linkedin["total_spent"] == Decimal("124250.39")
    sources = {
        r["lead_source"]: r for r in await read_metric(alt_mesh, "lead-source-effectiveness")
    }
    assert sources["LinkedIn"] == {
        "lead_source": "LinkedIn",
        "leads": 8,
        "converted_customers": 2,  # Ana once, and Tove
        "conversion_rate": Decimal("25.00"),
        "revenue": Decimal("201238.91"),
        "revenue_per_converted_customer": Decimal("100619.46"),  # 100,619.455
    }


async def test_alt_journey_corners(alt_mesh: httpx.AsyncClient) -> None:
    journey = {r["lead_id"]: r for r in await read_metric(alt_mesh, "lead-to-customer-journey")}
    # every Converted lead but lead 7, whose email is no customer's
    assert sorted(journey) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]
    # lead 6's customer has no orders; the lead gave no company
    assert journey[6]["customer_id"] == 4
    assert journey[6]["company"] is None
    assert (journey[6]["orders_since_conversion"], journey[6]["revenue_since_conversion"]) == (
        0,
        Decimal("0.00"),
    )
    # both of Ana's leads lead to customer 1; the Cancelled order 5 never counts
    assert journey[1]["customer_id"] == journey[2]["customer_id"] == 1
    assert journey[2]["orders_since_conversion"] == 1  # order 6 (order 5 is Cancelled)
    # Baltic Ore was a customer long before its lead: negative days to conversion
    assert journey[8]["days_to_conversion"] == -128
    # converted at 2024-11-06 23:59:59 UTC: that day's order counts
    assert journey[13]["converted_at"] == dt.datetime(2024, 11, 6, 23, 59, 59, tzinfo=dt.UTC)
    assert journey[13]["orders_since_conversion"] == 2


async def test_alt_acquisition_cost_rounds_half_up(alt_mesh: httpx.AsyncClient) -> None:
    [cac] = await read_metric(
        alt_mesh, "customer-acquisition-cost", since="2024-12-12", until="2024-12-20"
    )
    assert cac == {
        "since": dt.date(2024, 12, 12),
        "until": dt.date(2024, 12, 20),
        "total_marketing_spend": Decimal("277830.61"),
        "new_customers": 2,
        "customer_acquisition_cost": Decimal("138915.31"),  # 138,915.305
    }
    [default] = await read_metric(alt_mesh, "customer-acquisition-cost")
    # since defaults to the first campaign's start; 2024-10-01 00:00:00 UTC is in, the
    # customer of 2024-09-30 23:59:59 UTC is not
    assert (default["since"], default["new_customers"]) == (dt.date(2024, 10, 1), 23)
    assert default["customer_acquisition_cost"] == Decimal("12079.59")


# -- catalogue, lineage and documentation -------------------------------------------------------


async def test_metric_catalogue_lists_every_metric_with_columns_and_inputs(
    mesh: httpx.AsyncClient,
) -> None:
    response = await mesh.get("/mesh/v1/metrics")
    assert response.status_code == 200, response.text
    entries = {entry["name"]: entry for entry in response.json()}
    assert set(entries) == set(METRIC_NAMES)
    for name, entry in entries.items():
        assert entry["path"] == f"/mesh/v1/{name}"
        assert entry["description"]
        assert set(entry["inputs"]) == INPUTS[name], name
        assert len(entry["inputs"]) == len(INPUTS[name])
        assert [(c["name"], c["type"]) for c in entry["columns"]] == COLUMNS[name], name


async def test_openapi_documents_each_metric_definition(mesh: httpx.AsyncClient) -> None:
    response = await mesh.get("/mesh/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    definitions = {m.name: m.product.definition for m in METRICS}
    assert set(definitions) == set(METRIC_NAMES)
    for name, definition in definitions.items():
        description = paths[f"/mesh/v1/{name}"]["get"]["description"]
        assert definition in description, name
        for lineage in INPUTS[name]:
            assert f"`{lineage}`" in description, (name, lineage)
    roi = paths["/mesh/v1/campaign-roi"]["get"]["description"]
    assert "roi_pct = (attributed_revenue - spent) / spent x 100" in roi


# -- the read grammar and formats on a metric ---------------------------------------------------


async def test_order_with_nulls_last(alt_mesh: httpx.AsyncClient, alt_oracle: MeshOracle) -> None:
    rows = await read_metric(alt_mesh, "campaign-roi", order="roi_pct.desc.nullslast")
    expected = alt_oracle.campaign_roi()
    assert sorted(rows, key=lambda r: r["campaign_id"]) == expected
    known = sorted((r["roi_pct"] for r in expected if r["roi_pct"] is not None), reverse=True)
    nulls = [r["roi_pct"] for r in expected if r["roi_pct"] is None]
    assert nulls == [None, None, None]  # campaigns 8, 9 and 12
    assert [r["roi_pct"] for r in rows] == known + nulls


async def test_select_and_filter_on_a_metric(
    alt_mesh: httpx.AsyncClient, alt_oracle: MeshOracle
) -> None:
    roi = alt_oracle.campaign_roi()
    selected = await read_metric(alt_mesh, "campaign-roi", select="campaign_id,roi_pct")
    assert selected == [{"campaign_id": r["campaign_id"], "roi_pct": r["roi_pct"]} for r in roi]

    linkedin = await read_metric(alt_mesh, "campaign-roi", channel="eq.LinkedIn")
    assert [r["campaign_id"] for r in linkedin] == [1, 2, 9]
    assert linkedin == [r for r in roi if r["channel"] == "LinkedIn"]

    channel = await read_metric(alt_mesh, "channel-effectiveness", channel="eq.LinkedIn")
    assert channel == [r for r in alt_oracle.channel_effectiveness() if r["channel"] == "LinkedIn"]

    by_campaign = await read_metric(alt_mesh, "product-campaign-correlation", campaign_id="eq.1")
    expected = [r for r in alt_oracle.product_campaign_correlation() if r["campaign_id"] == 1]
    assert by_campaign == expected
    # BI Seats in orders 2 (two lines: 1 + 3), 6 (4) and 20 (5): each order once
    seats = next(r for r in by_campaign if r["product_id"] == 4)
    assert (seats["orders"], seats["quantity"]) == (3, 13)


async def test_pages_of_a_metric_follow_the_cursor(
    alt_mesh: httpx.AsyncClient, alt_oracle: MeshOracle
) -> None:
    """limit=5 pages through product-campaign-correlation by its Link cursor, in key order."""
    expected = alt_oracle.product_campaign_correlation()
    assert len(expected) > 10
    rows: list[Row] = []
    url: str | None = "/mesh/v1/product-campaign-correlation"
    params: dict[str, str] | None = {"limit": "5"}
    first = True
    while url is not None:
        response = await alt_mesh.get(
            url, params=params, headers={"Prefer": "count=exact"} if first else {}
        )
        assert response.status_code == 200, response.text
        if first:
            assert response.headers["content-range"] == f"0-4/{len(expected)}"
        page = decode(
            "product-campaign-correlation", json.loads(response.text, parse_float=Decimal)
        )
        assert 0 < len(page) <= 5
        rows.extend(page)
        link = NEXT_LINK.search(response.headers.get("link", ""))
        url, params, first = (link.group(1) if link else None), None, False
    assert rows == expected


async def test_unversioned_alias_answers_the_same(alt_mesh: httpx.AsyncClient) -> None:
    versioned = await alt_mesh.get("/mesh/v1/campaign-roi")
    alias = await alt_mesh.get("/mesh/campaign-roi")
    assert alias.status_code == 200
    assert alias.text == versioned.text


@pytest.mark.parametrize("metric", METRIC_NAMES)
async def test_csv_parsed_back_equals_the_json(alt_mesh: httpx.AsyncClient, metric: str) -> None:
    response = await alt_mesh.get(f"/mesh/v1/{metric}")
    assert response.status_code == 200
    as_json = json.loads(response.text, parse_float=Decimal)
    csv_response = await alt_mesh.get(f"/mesh/v1/{metric}", params={"format": "csv"})
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"] == "text/csv; charset=utf-8"
    header, *records = list(csv.reader(io.StringIO(csv_response.text, newline="")))
    assert header == [name for name, _ in COLUMNS[metric]]
    as_csv = [dict(zip(header, record, strict=True)) for record in records]
    assert as_csv == [{k: "" if v is None else str(v) for k, v in row.items()} for row in as_json]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "named"),
    [
        ("/mesh/v1/campaign-roi", {"since": "2024-02-30"}, 400, "invalid_value",
            ("since", "2024-02-30")),
        ("/mesh/v1/lead-to-customer-journey", {"until": "yesterday"}, 400, "invalid_value",
            ("until", "yesterday")),
        ("/mesh/v1/channel-effectiveness", {"since": "2025-02-01", "until": "2025-01-01"}, 400,
            "invalid_value", ("since", "2025-02-01", "2025-01-01")),
        ("/mesh/v1/campaign-roi", {"select": "campaign_id,roi"}, 400, "unknown_column",
            ("select", "roi")),
        ("/mesh/v1/lead-source-effectiveness", {"order": "revenu.desc"}, 400, "unknown_column",
            ("order", "revenu")),
        ("/mesh/v1/campaign-roi", {"roi_pct": "gt.lots"}, 400, "invalid_value",
            ("roi_pct", "lots")),
        ("/mesh/v1/campaign-return", {}, 404, "unknown_product", ("campaign-return",)),
    ],
    ids=["bad since", "bad until", "since after until", "unknown column in select",
         "unknown column in order", "bad filter value", "unknown metric"],
)  # fmt: skip
async def test_bad_input_is_a_problem(
    mesh: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
    named: tuple[str, ...],
) -> None:
    assert_problem(await mesh.get(path, params=params), status, code, *named)
