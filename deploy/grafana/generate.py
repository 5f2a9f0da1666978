"""DataMesh's Grafana dashboards and provisioning, written from this one description.

- dashboards/operations.json: one row per service, which Grafana repeats over the `service`
  variable (every service that exports `datamesh_http_requests_total`), so a new domain gets
  its row with no change here; then the mesh's reads of the domains. Prometheus queries only,
  over the families of docs/observability.md; no domain is named.
- dashboards/business.json: the seed's business views, read live from the services' HTTP API
  by Grafana's Infinity data source: one data source per service it reads, each with that
  service's base URL and the read-only token of the environment (provisioning/datasources).
- provisioning/datasources/datamesh.yml and provisioning/dashboards/datamesh.yml.

After a change, from the repository's root: `.venv/bin/python deploy/grafana/generate.py`.
`--check` writes nothing and exits 1 when a committed file differs (tests/test_dashboards.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

PROMETHEUS = {"type": "prometheus", "uid": "datamesh-prometheus"}
INFINITY = "yesoreyeram-infinity-datasource"
TOKEN_VARIABLE = "DATAMESH_GRAFANA_TOKEN"

# the requests the service level objectives count: not Prometheus' scrapes, not the probes
COUNTED = 'route!~"/metrics|/[^/]+/(healthz|readyz)"'
SERVICE = 'service=~"$service"'
FIVE_XX = ', status=~"5.."'
RATE = "$__rate_interval"

Json = dict[str, Any]


def infinity(service: str) -> Json:
    """The Infinity data source reading one service's API (provisioned per service)."""
    return {"type": INFINITY, "uid": f"datamesh-{service}"}


def url_variable(service: str) -> str:
    """The environment variable giving Grafana a service's base URL."""
    return f"DATAMESH_{service.upper()}_URL"


# --- panels -------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, table: bool = False) -> Json:
    """A Prometheus query: over time, or (table) its latest value as a table."""
    target: Json = {"datasource": PROMETHEUS, "expr": " ".join(expr.split())}
    if table:
        target |= {"format": "table", "instant": True, "range": False}
    else:
        target |= {"legendFormat": legend, "range": True, "instant": False}
    return target


@dataclass
class Panel:
    """A panel before layout: its kind, size and JSON (datasource, targets, options...)."""

    kind: str
    title: str
    description: str
    targets: list[Json]
    width: int
    height: int = 8
    unit: str = "short"
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)
    defaults: Json = field(default_factory=dict)
    transformations: list[Json] = field(default_factory=list)
    overrides: list[Json] = field(default_factory=list)

    def json(self, panel_id: int, x: int, y: int) -> Json:
        targets = [{"refId": chr(ord("A") + i), **target} for i, target in enumerate(self.targets)]
        panel: Json = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": self.targets[0]["datasource"],
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": targets,
            "fieldConfig": {
                "defaults": {"unit": self.unit, "custom": self.custom, **self.defaults},
                "overrides": self.overrides,
            },
            "options": self.options,
        }
        if self.transformations:
            panel["transformations"] = self.transformations
        return panel


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    width: int,
    *,
    stacked: bool = False,
    bars: bool = False,
    overrides: list[Json] | None = None,
    **defaults: Any,
) -> Panel:
    return Panel(
        "timeseries",
        title,
        description,
        targets,
        width,
        unit=unit,
        custom={
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stacked else 0,
            "showPoints": "never",
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        },
        defaults=defaults,
        options={
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        overrides=overrides or [],
    )


def mapped(*states: tuple[int, str, str]) -> list[Json]:
    """Value mappings: a number shown as a word in a colour."""
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(states)
            },
        }
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"value": value, "color": color} for value, color in steps],
    }


def table(
    title: str,
    description: str,
    target: Json,
    width: int,
    *,
    hide: tuple[str, ...] = ("Time",),
    rename: dict[str, str] | None = None,
    sort: str | None = None,
    **defaults: Any,
) -> Panel:
    return Panel(
        "table",
        title,
        description,
        [target],
        width,
        defaults=defaults,
        options={
            "showHeader": True,
            "cellHeight": "sm",
            "sortBy": [{"displayName": sort, "desc": True}] if sort else [],
        },
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": dict.fromkeys(hide, True),
                    "renameByName": rename or {},
                },
            }
        ],
    )


# --- the operations dashboard --------------------------------------------------------------


def requests(selector: str) -> str:
    return f"datamesh_http_requests_total{{{SERVICE}, {COUNTED}{selector}}}"


def per_service() -> list[Panel]:
    """The panels of the row Grafana repeats for each service."""
    all_requests = f"sum by (service) (rate({requests('')}[{RATE}]))"
    errors = f"sum by (service) (rate({requests(FIVE_XX)}[{RATE}]))"
    duration = f"datamesh_http_request_duration_seconds_bucket{{{SERVICE}, {COUNTED}}}"

    def quantile(q: float, by: str = "le") -> str:
        return f"histogram_quantile({q}, sum by ({by}) (rate({duration}[{RATE}])))"

    return [
        Panel(
            "stat",
            "Up",
            "Whether Prometheus' last scrape of the service succeeded (job `datamesh`).",
            [prom(f'up{{job="datamesh", {SERVICE}}}', "{{instance}}")],
            4,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "none",
                "textMode": "value",
            },
            defaults={
                "mappings": mapped((1, "UP", "green"), (0, "DOWN", "red")),
                "thresholds": thresholds((None, "red"), (1, "green")),
            },
        ),
        timeseries(
            "Requests by status class",
            "Requests answered per second, by status class (scrapes and probes aside).",
            [
                prom(
                    f"sum by (class) (label_replace(rate({requests('')}[{RATE}]), "
                    '"class", "${1}xx", "status", "([0-9]).."))',
                    "{{class}}",
                )
            ],
            "reqps",
            10,
            stacked=True,
        ),
        timeseries(
            "Error ratio (5xx)",
            "The share of requests answered with a 5xx (0 when there is none). "
            "DataMeshHighErrorRatio fires over 5% for 5 minutes.",
            [
                prom(
                    f"({errors} or {all_requests} * 0) / {all_requests}",
                    "5xx",
                )
            ],
            "percentunit",
            10,
            min=0,
            thresholds=thresholds((None, "green"), (0.05, "red")),
        ),
        timeseries(
            "Latency percentiles",
            "Time to the last byte: 50th, 95th and 99th percentiles over the histogram's "
            "buckets. The objective: 99% within 250 ms.",
            [prom(quantile(q), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
            "s",
            12,
            min=0,
        ),
        timeseries(
            "Slowest routes (p95)",
            "The five routes with the highest 95th percentile (route templates).",
            [prom(f"topk(5, {quantile(0.95, 'route, le')})", "{{route}}")],
            "s",
            12,
            min=0,
        ),
        timeseries(
            "Database pool",
            "Connections checked out against the pool's size (summed over workers).",
            [
                prom(f"datamesh_db_pool_in_use{{{SERVICE}}}", "in use"),
                prom(f"datamesh_db_pool_size{{{SERVICE}}}", "size"),
            ],
            "short",
            8,
            min=0,
        ),
        timeseries(
            "Pool waits and timeouts",
            "Per second: acquisitions that waited for a connection, that gave up (503), and "
            "statements cut by statement_timeout (504).",
            [
                prom(f"rate(datamesh_db_pool_waits_total{{{SERVICE}}}[{RATE}])", "waits"),
                prom(
                    f"rate(datamesh_db_pool_timeouts_total{{{SERVICE}}}[{RATE}])",
                    "pool timeouts",
                ),
                prom(
                    f"rate(datamesh_db_statement_timeouts_total{{{SERVICE}}}[{RATE}])",
                    "statement timeouts",
                ),
            ],
            "ops",
            8,
            min=0,
        ),
        timeseries(
            "Rows served by product",
            "Rows answered per second by product reads, every format.",
            [
                prom(
                    f"sum by (product) (rate(datamesh_rows_served_total{{{SERVICE}}}[{RATE}]))",
                    "{{product}}",
                )
            ],
            "rowsps",
            8,
            stacked=True,
        ),
        timeseries(
            "Freshness: age against SLA",
            "Now minus the newest value of each product's recency column, and the product's "
            "declared freshness SLA (dashed). DataMeshFreshnessSLABreached fires when the age "
            "passes the SLA.",
            [
                prom(f"datamesh_product_freshness_age_seconds{{{SERVICE}}}", "{{product}} age"),
                prom(f"datamesh_product_freshness_sla_seconds{{{SERVICE}}}", "{{product}} SLA"),
            ],
            "s",
            12,
            min=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* SLA"},
                    "properties": [
                        {
                            "id": "custom.lineStyle",
                            "value": {"fill": "dash", "dash": [10, 10]},
                        }
                    ],
                }
            ],
        ),
        Panel(
            "bargauge",
            "Freshness: share of the SLA used",
            "Each product's age over its freshness SLA: past 100% it is stale.",
            [
                prom(
                    f"datamesh_product_freshness_age_seconds{{{SERVICE}}} "
                    f"/ datamesh_product_freshness_sla_seconds{{{SERVICE}}}",
                    "{{product}}",
                )
            ],
            12,
            unit="percentunit",
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "horizontal",
                "displayMode": "basic",
                "showUnfilled": True,
            },
            defaults={
                "min": 0,
                "max": 1.5,
                "thresholds": thresholds((None, "green"), (0.8, "orange"), (1, "red")),
            },
        ),
        timeseries(
            "Quality score by product",
            "Each product's score (0-100) in the latest quality run, and the domain's.",
            [
                prom(f"datamesh_product_quality_score{{{SERVICE}}}", "{{product}}"),
                prom(f"datamesh_quality_score{{{SERVICE}}}", "domain"),
            ],
            "short",
            8,
            min=0,
            max=100,
        ),
        Panel(
            "stat",
            "Latest quality run",
            "How long ago the latest quality run finished.",
            [
                prom(
                    f"time() - datamesh_quality_last_run_timestamp_seconds{{{SERVICE}}}",
                    "age",
                )
            ],
            4,
            unit="s",
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "none",
            },
            defaults={"thresholds": thresholds((None, "text"))},
        ),
        table(
            "Quality checks",
            "Every check of the latest quality run, failing ones (1) first: failed or errored.",
            prom(f"sort_desc(datamesh_quality_check_failing{{{SERVICE}}})", table=True),
            12,
            hide=("Time", "__name__", "job", "instance", "service"),
            rename={"Value": "failing"},
            sort="failing",
            mappings=mapped((1, "failing", "red"), (0, "passing", "green")),
        ),
        timeseries(
            "Writes by operation and outcome",
            "Writes per second: create, change, replace, delete, batch, correct; accepted, "
            "refused or replayed (an idempotent replay).",
            [
                prom(
                    f"sum by (operation, outcome) "
                    f"(rate(datamesh_writes_total{{{SERVICE}}}[{RATE}]))",
                    "{{operation}} {{outcome}}",
                )
            ],
            "ops",
            12,
            stacked=True,
        ),
        timeseries(
            "Write refusals by reason",
            "Refused writes per second by problem code.",
            [
                prom(
                    f"sum by (reason) (rate(datamesh_write_refusals_total{{{SERVICE}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            "ops",
            12,
            stacked=True,
        ),
    ]


def mesh() -> list[Panel]:
    """The mesh's reads of the domains (no service variable: only the mesh exports them)."""
    fetch = f"rate(datamesh_mesh_fetch_duration_seconds_bucket[{RATE}])"
    return [
        timeseries(
            "Fetch latency per domain",
            "The mesh's fetch of one input product from a domain, retries included: 50th "
            "and 95th percentiles.",
            [
                prom(
                    f"histogram_quantile({q}, sum by (domain, le) ({fetch}))",
                    f"{{{{domain}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
            "s",
            8,
            min=0,
        ),
        timeseries(
            "Fetch retries and failures per domain",
            "Per second: requests to a domain tried again, and fetches that failed (by "
            "problem code).",
            [
                prom(
                    f"sum by (domain) (rate(datamesh_mesh_fetch_retries_total[{RATE}]))",
                    "{{domain}} retries",
                ),
                prom(
                    f"sum by (domain, reason) (rate(datamesh_mesh_fetch_failures_total[{RATE}]))",
                    "{{domain}} failed: {{reason}}",
                ),
            ],
            "ops",
            8,
            min=0,
        ),
        Panel(
            "state-timeline",
            "Circuit per domain",
            "The mesh's circuit breaker per domain: closed (calls go through), half-open (one "
            "probe), open (calls fail at once with 503 circuit_open).",
            [prom("max by (domain) (datamesh_mesh_circuit_state)", "{{domain}}")],
            8,
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
            defaults={
                "mappings": mapped(
                    (0, "closed", "green"), (1, "half-open", "yellow"), (2, "open", "red")
                ),
                "thresholds": thresholds((None, "green")),
                "color": {"mode": "thresholds"},
            },
        ),
    ]


def row(panel_id: int, y: int, title: str, repeat: str | None = None) -> Json:
    panel: Json = {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }
    if repeat:
        panel["repeat"] = repeat
    return panel


def laid_out(sections: list[tuple[Json, list[Panel]]]) -> list[Json]:
    """Rows and their panels, left to right, a new line when 24 columns are full."""
    panels: list[Json] = []
    y = 0
    panel_id = 1
    for heading, members in sections:
        heading = heading | {"id": panel_id, "gridPos": heading["gridPos"] | {"y": y}}
        panels.append(heading)
        panel_id += 1
        y += 1
        x, line = 0, 0
        for panel in members:
            if x + panel.width > 24:
                x, y, line = 0, y + line, 0
            panels.append(panel.json(panel_id, x, y))
            panel_id += 1
            x += panel.width
            line = max(line, panel.height)
        y += line
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[Json], **extra: Any) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["datamesh"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "browser",
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": []},
        "panels": panels,
    } | extra


def operations() -> Json:
    service_variable = {
        "name": "service",
        "label": "Service",
        "type": "query",
        "datasource": PROMETHEUS,
        "query": "label_values(datamesh_http_requests_total, service)",
        "definition": "label_values(datamesh_http_requests_total, service)",
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "hide": 0,
    }
    return dashboard(
        "datamesh-operations",
        "DataMesh operations",
        "Each service's traffic, errors, latency, database pool, freshness, quality and "
        "writes (a row per service, repeated over the service variable), and the mesh's "
        "reads of the domains. docs/observability.md#dashboards",
        laid_out(
            [
                (row(0, 0, "$service", repeat="service"), per_service()),
                (row(0, 0, "Mesh: reads of the domains"), mesh()),
            ]
        ),
        templating={"list": [service_variable]},
    )


# --- the business dashboard ----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column a panel reads, as Infinity's backend parser types it."""

    name: str
    kind: str = "number"  # number, string, timestamp

    def json(self) -> Json:
        # a timestamp column's ISO 8601 date (`2024-10-01`) is one Infinity parses as it is
        return {"selector": self.name, "text": self.name, "type": self.kind}


def api(service: str, path: str, columns: list[Column], **params: str | list[str]) -> Json:
    """An Infinity query of a service's API: JSON rows, the columns selected."""
    pairs = [{"key": "select", "value": ",".join(c.name for c in columns)}]
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        pairs += [{"key": key, "value": v} for v in values]
    return {
        "datasource": infinity(service),
        "type": "json",
        "source": "url",
        "format": "table",
        "parser": "backend",
        "url": f"/{service}/v1/{path}",
        "url_options": {"method": "GET", "params": pairs, "headers": [], "data": ""},
        "root_selector": "",
        "columns": [c.json() for c in columns],
        "filters": [],
    }


# the dashboard's time range, as the products' filters take it
FROM, TO = "${__from:date:YYYY-MM-DD}", "${__to:date:YYYY-MM-DD}"
FROM_MONTH = "${__from:date:YYYY-MM-01}"


def barchart(
    title: str, description: str, target: Json, width: int, unit: str, **options: Any
) -> Panel:
    return Panel(
        "barchart",
        title,
        description,
        [target],
        width,
        height=9,
        unit=unit,
        custom={"fillOpacity": 80, "lineWidth": 1},
        options={
            "orientation": "auto",
            "showValue": "auto",
            "groupWidth": 0.7,
            "barWidth": 0.9,
            "xTickLabelRotation": 0,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        }
        | options,
    )


def business_panels() -> list[Panel]:
    month = Column("month", "timestamp")
    campaigns = [
        Column("campaign_name", "string"),
        Column("channel", "string"),
        Column("spent"),
        Column("attributed_revenue"),
        Column("orders"),
        Column("roi_pct"),
    ]
    channels = [
        Column("channel", "string"),
        Column("campaigns"),
        Column("total_leads"),
        Column("converted_leads"),
        Column("total_spent"),
        Column("attributed_revenue"),
        Column("orders"),
        Column("revenue_per_dollar"),
    ]
    by_month: dict[str, str | list[str]] = {
        "order": "month.asc",
        "month": [f"gte.{FROM_MONTH}", f"lte.{TO}"],
    }
    period = {"since": FROM, "until": TO}
    return [
        barchart(
            "Revenue by month",
            "Sales' revenue per calendar month (every order but Cancelled ones), in US "
            "dollars: sales/sales-summary, the months of the time range.",
            api("sales", "sales-summary", [month, Column("total_revenue")], **by_month),
            12,
            "currencyUSD",
            xField="month",
        ),
        barchart(
            "Orders and customers by month",
            "Orders placed and distinct customers who ordered, per month: sales/sales-summary.",
            api(
                "sales",
                "sales-summary",
                [month, Column("order_count"), Column("unique_customers")],
                **by_month,
            ),
            12,
            "short",
            xField="month",
        ),
        barchart(
            "Campaign ROI",
            "Return on each campaign's spend in percent, from the revenue of the orders its "
            "converted leads placed in the time range: mesh/campaign-roi.",
            api(
                "mesh",
                "campaign-roi",
                [Column("campaign_name", "string"), Column("roi_pct")],
                order="roi_pct.desc.nullslast",
                **period,
            ),
            12,
            "percent",
            orientation="horizontal",
            xField="campaign_name",
        ),
        table(
            "Campaigns: spend, attributed revenue, ROI",
            "Per campaign: spend to date, the revenue and orders attributed to it in the time "
            "range, and the ROI: mesh/campaign-roi.",
            api("mesh", "campaign-roi", campaigns, order="roi_pct.desc.nullslast", **period),
            12,
            hide=(),
        ),
        barchart(
            "Lead funnel",
            "Leads at each funnel status now: marketing/lead-funnel.",
            api(
                "marketing",
                "lead-funnel",
                [Column("status", "string"), Column("lead_count")],
                order="lead_count.desc",
            ),
            8,
            "short",
            orientation="horizontal",
            xField="status",
        ),
        table(
            "Channel effectiveness",
            "Per marketing channel: campaigns, leads and conversions, spend, the revenue "
            "attributed in the time range and the revenue per dollar spent: "
            "mesh/channel-effectiveness.",
            api(
                "mesh",
                "channel-effectiveness",
                channels,
                order="revenue_per_dollar.desc.nullslast",
                **period,
            ),
            16,
            hide=(),
        ),
    ]


def business() -> Json:
    panels = business_panels()
    return dashboard(
        "datamesh-business",
        "DataMesh business views",
        "The seed's business views, live from the products and metrics of the services' API "
        "(Grafana's Infinity data source, read-only token). docs/observability.md#dashboards",
        laid_out([(row(0, 0, "Sales and marketing"), panels)]),
        time={"from": "now-1y", "to": "now"},
        refresh="5m",
    )


def business_services() -> list[str]:
    """The services business.json reads, in the order it first reads them."""
    found: list[str] = []
    for panel in business_panels():
        for target in panel.targets:
            service = target["url"].split("/")[1]
            if service not in found:
                found.append(service)
    return found


# --- provisioning ----------------------------------------------------------------------------


def datasources() -> str:
    text = (
        "# Generated by deploy/grafana/generate.py: edit it, not this file.\n"
        "# Grafana reads it at start-up from /etc/grafana/provisioning/datasources/.\n"
        "apiVersion: 1\n"
        "\n"
        "datasources:\n"
        "  # the operations dashboard and the alert rules' series\n"
        "  - name: Prometheus\n"
        f"    uid: {PROMETHEUS['uid']}\n"
        "    type: prometheus\n"
        "    access: proxy\n"
        "    url: http://prometheus:9090\n"
        "    isDefault: true\n"
        "    editable: false\n"
        "    jsonData:\n"
        "      timeInterval: 15s  # Prometheus' scrape interval: $__rate_interval follows it\n"
        "\n"
        "  # the business dashboard: the services' HTTP API through the Infinity plugin, one\n"
        "  # data source per service it reads (a data source has one base URL), all with the same\n"
        f"  # read-only token from {TOKEN_VARIABLE} (docs/observability.md#dashboards)\n"
    )
    for service in business_services():
        text += (
            f"  - name: DataMesh {service}\n"
            f"    uid: {infinity(service)['uid']}\n"
            f"    type: {INFINITY}\n"
            "    access: proxy\n"
            f"    url: ${{{url_variable(service)}}}\n"
            "    editable: false\n"
            "    jsonData:\n"
            "      auth_method: bearerToken\n"
            "      timeoutInSeconds: 60\n"
            "    secureJsonData:\n"
            f"      bearerToken: ${{{TOKEN_VARIABLE}}}\n"
        )
    return text


DASHBOARD_PROVIDER = """\
# Generated by deploy/grafana/generate.py: edit it, not this file.
# Grafana reads it at start-up from /etc/grafana/provisioning/dashboards/: the dashboards are
# deploy/grafana/dashboards/, mounted at /var/lib/grafana/dashboards.
apiVersion: 1

providers:
  - name: DataMesh
    orgId: 1
    folder: DataMesh
    type: file
    disableDeletion: true
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: /var/lib/grafana/dashboards
      foldersFromFilesStructure: false
"""


def files() -> dict[str, str]:
    """Path under deploy/grafana/ -> the text this script writes there."""

    def as_json(document: Json) -> str:
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    return {
        "dashboards/operations.json": as_json(operations()),
        "dashboards/business.json": as_json(business()),
        "provisioning/datasources/datamesh.yml": datasources(),
        "provisioning/dashboards/datamesh.yml": DASHBOARD_PROVIDER,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    check = parser.parse_args().check
    stale = []
    for name, text in files().items():
        path = HERE / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for name in stale:
        print(f"{'stale' if check else 'wrote'}: deploy/grafana/{name}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
