"""The Grafana dashboards and provisioning (deploy/grafana/): as deploy/grafana/generate.py
writes them; every panel has a data source and queries; the operations dashboard repeats its
row per service and names no domain; the business panels read paths and columns the products
and metrics declare, and answer live with the read-only persona's token; and a real Prometheus
scraping the running services evaluates every panel's query and every rule's expression."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services import DOMAINS, PERSONAS, domain
from services.federation.app import create_app
from services.federation.metrics import METRICS
from services.federation.settings import FederationSettings
from shared.declarations.products import Product
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.embedded import free_port
from tests.conftest import ADMIN, sample_databases, token
from tests.postgres import PostgresServer
from tests.servers import served
from tests.test_layout import mentions
from tests.test_prometheus_rules import RULES, debian_tool

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy/grafana"
DASHBOARDS = ("operations", "business")
INFINITY = "yesoreyeram-infinity-datasource"
REQUESTS = "datamesh_http_requests_total"
SERVICE_QUERY = f"label_values({REQUESTS}, service)"

Json = dict[str, Any]


def dashboard(name: str) -> Json:
    document: Json = json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
    return document


def sections(board: Json) -> list[tuple[Json, list[Json]]]:
    """Each row of the dashboard with the panels under it (its own when collapsed, else those
    that follow it up to the next row)."""
    found: list[tuple[Json, list[Json]]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.append((panel, list(panel.get("panels", []))))
        else:
            assert found, f"panel '{panel['title']}' comes before any row"
            found[-1][1].append(panel)
    return found


def panels(board: Json) -> list[Json]:
    return [panel for _, members in sections(board) for panel in members]


def provisioned() -> dict[str, Json]:
    """uid -> the data source the provisioning file declares."""
    text = (GRAFANA / "provisioning/datasources/datamesh.yml").read_text()
    return {source["uid"]: source for source in yaml.safe_load(text)["datasources"]}


# --- what promql names -----------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*")
_KEYWORDS = {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan", "group_left"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, aggregations,
    keywords, label names or values)."""
    text = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr))))
    return {
        match.group()
        for match in _WORD.finditer(text)
        if not text[match.end() :].lstrip().startswith("(")
        and match.group().lower() not in _KEYWORDS
    }


def test_metric_names_are_the_selected_series_only() -> None:
    assert metric_names(
        'sum by (class) (label_replace(rate(a_total{service=~"$service", route!~"/x|y"}'
        '[$__rate_interval]), "class", "${1}xx", "status", "([0-9])..")) / on (service) b'
    ) == {"a_total", "b"}
    assert metric_names(
        "histogram_quantile(0.95, sum(rate(c_bucket[5m])) by (le)) > 1e3 and absent(up) "
        "unless (d offset 1h) - record:rule:rate5m >= bool 14.4 * 0.01 or vector(0) + time()"
    ) == {"c_bucket", "up", "d", "record:rule:rate5m"}


# --- the files --------------------------------------------------------------------------------


def test_the_files_are_those_the_generator_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"{done.stdout}{done.stderr}run `.venv/bin/python deploy/grafana/generate.py`"
    )


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_has_a_provisioned_data_source_and_queries(name: str) -> None:
    board = dashboard(name)
    sources = provisioned()
    assert board["uid"] == f"datamesh-{name}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        source = panel["datasource"]
        assert sources[source["uid"]]["type"] == source["type"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            if source["type"] == "prometheus":
                assert metric_names(target["expr"]), panel["title"]
            else:
                assert source["type"] == INFINITY
                assert target["url"] and target["columns"], panel["title"]


def test_the_operations_dashboard_repeats_a_row_per_service() -> None:
    board = dashboard("operations")
    [variable] = board["templating"]["list"]
    assert variable["name"] == "service"
    assert variable["query"] == variable["definition"] == SERVICE_QUERY
    assert variable["multi"] and variable["includeAll"]
    [(repeated, per_service), *others] = sections(board)
    assert repeated["repeat"] == "service" and "$service" in repeated["title"]
    assert len(per_service) >= 10
    for panel in per_service:  # each panel of the row shows that row's service only
        for target in panel["targets"]:
            assert 'service=~"$service"' in target["expr"], panel["title"]
    mesh_panels = [panel for _, members in others for panel in members]
    assert {
        name for p in mesh_panels for t in p["targets"] for name in metric_names(t["expr"])
    } >= {
        "datamesh_mesh_fetch_duration_seconds_bucket",
        "datamesh_mesh_fetch_retries_total",
        "datamesh_mesh_circuit_state",
    }


def test_the_operations_dashboard_names_no_domain() -> None:
    text = (GRAFANA / "dashboards/operations.json").read_text()
    assert mentions(text, DOMAINS) == []


def test_the_provisioning_reads_prometheus_and_the_api_with_a_token_from_the_environment() -> None:
    sources = provisioned()
    prometheus = sources["datamesh-prometheus"]
    assert (prometheus["type"], prometheus["url"]) == ("prometheus", "http://prometheus:9090")
    used = {panel["datasource"]["uid"] for name in DASHBOARDS for panel in panels(dashboard(name))}
    assert used == set(sources)
    for uid, source in sources.items():
        if source["type"] != INFINITY:
            continue
        service = uid.removeprefix("datamesh-")
        assert source["url"] == f"${{DATAMESH_{service.upper()}_URL}}"
        assert source["jsonData"]["auth_method"] == "bearerToken"
        assert source["secureJsonData"] == {"bearerToken": "${DATAMESH_GRAFANA_TOKEN}"}
    text = (GRAFANA / "provisioning/dashboards/datamesh.yml").read_text()
    [provider] = yaml.safe_load(text)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- the business panels against the declarations and the running services -------------------


def infinity_targets() -> list[tuple[str, Json]]:
    return [
        (panel["title"], target)
        for panel in panels(dashboard("business"))
        for target in panel["targets"]
    ]


def declared(service: str, name: str) -> Product:
    """The product (a domain's) or metric (the mesh's) an API path names."""
    if service == "mesh":
        metrics = {metric.name: metric.product for metric in METRICS}
        assert name in metrics, f"the mesh has no metric '{name}'"
        return metrics[name]
    product = domain(service).product(name)
    assert product is not None, f"{service} has no product '{name}'"
    return product


def parameters(target: Json) -> list[tuple[str, str]]:
    return [(pair["key"], pair["value"]) for pair in target["url_options"]["params"]]


@pytest.mark.parametrize(
    ("title", "target"),
    infinity_targets(),
    ids=[f"{title}: {target['url']}" for title, target in infinity_targets()],
)
def test_a_business_panel_reads_declared_columns(title: str, target: Json) -> None:
    service, version, name = target["url"].strip("/").split("/")
    assert version == "v1"
    product = declared(service, name)
    assert target["datasource"]["uid"] == f"datamesh-{service}"
    columns = [column["selector"] for column in target["columns"]]
    assert set(columns) <= set(product.column_names), set(columns) - set(product.column_names)
    params = parameters(target)
    assert ("select", ",".join(columns)) in params
    for key, value in params:
        if key == "order":
            ordered = {term.split(".")[0] for term in value.split(",")}
            assert ordered <= set(product.column_names), title
        elif key in ("since", "until"):
            assert service == "mesh", title  # a metric's period
        elif key != "select":
            assert key in product.column_names, f"{title}: filter on '{key}'"
    # the read-only token of the docs (`--persona analyst`) may read it
    needs = (
        next(m.scopes for m in METRICS if m.name == name)
        if service == "mesh"
        else (f"{service}:read",)
    )
    assert set(needs) <= set(PERSONAS["analyst"]), title


def grafana_dates(value: str, start: dt.date, end: dt.date) -> str:
    """A value with Grafana's `${__from:date:FORMAT}` and `${__to:date:FORMAT}` filled in."""

    def fill(match: re.Match[str]) -> str:
        day = start if match.group(1) == "from" else end
        return (
            match.group(2)
            .replace("YYYY", f"{day.year:04d}")
            .replace("MM", f"{day.month:02d}")
            .replace("DD", f"{day.day:02d}")
        )

    filled = re.sub(r"\$\{__(from|to):date:([^}]+)\}", fill, value)
    assert "$" not in filled, value
    return filled


async def test_every_business_panel_answers_its_columns_live(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient, mesh: httpx.AsyncClient
) -> None:
    clients = {"sales": sales, "marketing": marketing, "mesh": mesh}
    analyst = {"Authorization": f"Bearer {token(*PERSONAS['analyst'], subject='grafana')}"}
    for title, target in infinity_targets():
        service = target["url"].split("/")[1]
        params = httpx.QueryParams(
            [
                (key, grafana_dates(value, dt.date(2024, 1, 1), dt.date(2024, 12, 31)))
                for key, value in parameters(target)
            ]
        )
        response = await clients[service].get(target["url"], params=params, headers=analyst)
        assert response.status_code == 200, f"{title}: {response.text}"
        rows = response.json()
        assert rows, title
        columns = [column["selector"] for column in target["columns"]]
        assert all(list(row) == columns for row in rows), (title, rows[0])


# --- a real Prometheus over the running services ----------------------------------------------


async def unavailable(request: Request) -> JSONResponse:
    return JSONResponse({"title": "Service Unavailable"}, status_code=503)


@contextmanager
def prometheus(tmp_path: Path, targets: list[tuple[str, str]]) -> Iterator[httpx.Client]:
    """Debian's Prometheus on a free loopback port, scraping the targets (service, base URL)
    every second as the job `datamesh` and evaluating rules.yml; a client of its API."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "datamesh",
                "honor_labels": True,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [url.removeprefix("http://")], "labels": {"service": service}}
                    for service, url in targets
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                debian_tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    if client.get("/-/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "Prometheus did not start"
                time.sleep(0.2)
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class QueryError(Exception):
    """Prometheus could not parse or run a query."""


def query(client: httpx.Client, expr: str) -> list[Json]:
    """An instant query's result (QueryError if Prometheus cannot parse or run it)."""
    answer = client.get("/api/v1/query", params={"query": expr}).json()
    if answer["status"] != "success":
        raise QueryError(f"{expr}: {answer.get('error')}")
    result: list[Json] = answer["data"]["result"]
    return result


def traffic(domains: dict[str, str], meshes: list[str]) -> None:
    """Requests that give every family series: reads in two formats, a not-found, a refused
    write, a quality run on each domain; every metric of the healthy mesh and one of the mesh
    whose first domain fails."""
    with httpx.Client(headers=ADMIN, timeout=60) as client:
        for name, base in domains.items():
            declared_domain = domain(name)
            assert client.get(f"{base}/{name}/healthz").status_code == 200
            for product in declared_domain.products[:3]:
                for fmt in ("json", "csv"):
                    url = f"{base}/{name}/v1/{product.name}"
                    read = client.get(url, params={"limit": "5", "format": fmt})
                    assert read.status_code == 200, read.text
            assert client.get(f"{base}/{name}/v1/no-such-product").status_code == 404
            run = client.post(f"{base}/{name}/v1/quality/runs")
            assert run.status_code == 201, run.text
            for creatable in [w.product for w in declared_domain.writes if w.create][:1]:
                refused = client.post(f"{base}/{name}/v1/{creatable}", json={})
                assert refused.status_code == 422, refused.text
        healthy, failing = meshes
        for metric in METRICS:
            answer = client.get(f"{healthy}/mesh/v1/{metric.name}")
            assert answer.status_code == 200, answer.text
        broken = next(m for m in METRICS if DOMAINS[0] in {i.domain for i in m.inputs})
        assert client.get(f"{failing}/mesh/v1/{broken.name}").status_code >= 500


def wait_for_scrapes_and_rules(client: httpx.Client, targets: int) -> None:
    """Until every target was scraped twice, answering, and every rule group evaluated."""
    deadline = time.monotonic() + 60
    while True:
        scrapes = query(client, 'count_over_time(up{job="datamesh"}[1m])')
        groups = client.get("/api/v1/rules").json()["data"]["groups"]
        if (
            len(scrapes) == targets
            and all(float(s["value"][1]) >= 2 for s in scrapes)
            and all(not g["lastEvaluation"].startswith("0001-") for g in groups)
        ):
            break
        assert time.monotonic() < deadline, f"scrapes: {scrapes}"
        time.sleep(0.5)
    down = query(client, 'up{job="datamesh"} == 0')
    assert down == [], f"a service's /metrics does not answer: {down}"


def rule_expressions() -> list[tuple[str, str, bool]]:
    """(name, expression, is a recording rule) of every rule in rules.yml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [
        (rule.get("record") or rule["alert"], rule["expr"], "record" in rule)
        for group in groups
        for rule in group["rules"]
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prometheus_evaluates_every_panel_query_and_rule_over_the_services(
    postgres_servers: dict[str, PostgresServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    debian_tool("prometheus")
    monkeypatch.setenv("DATAMESH_METRICS_STATE_SECONDS", "1")
    settings = ServiceSettings()
    urls = sample_databases(postgres_servers, "observability")
    with ExitStack() as stack:
        domains = {
            name: stack.enter_context(
                served(create_domain_app(domain(name), database_url=url, settings=settings))
            )
            for name, url in urls.items()
        }
        down = stack.enter_context(served(Starlette(routes=[Route("/{path:path}", unavailable)])))
        meshes = [
            stack.enter_context(served(create_app(FederationSettings.model_validate(options))))
            for options in (
                {"domains": domains},
                # its first domain always answers 503: retries, failures, an open circuit
                {
                    "domains": domains | {DOMAINS[0]: down},
                    "retry_initial_seconds": 0,
                    "retry_jitter_seconds": 0,
                    "circuit_failure_threshold": 1,
                },
            )
        ]
        traffic(domains, meshes)
        targets = [*domains.items(), *(("mesh", url) for url in meshes)]
        client = stack.enter_context(prometheus(tmp_path, targets))
        wait_for_scrapes_and_rules(client, len(targets))
        check_panels_and_rules(client, services=[*domains, "mesh"])


def check_panels_and_rules(client: httpx.Client, services: list[str]) -> None:
    """Every operations panel's query ($service each service, $__rate_interval 1m) and every
    rule's expression parses and runs, names only exported families (or recorded ones, for a
    rule); a panel's query shows every service that exports the families it reads; a recording
    rule yields series; every rule evaluates without error."""
    exported = set(client.get("/api/v1/label/__name__/values").json()["data"])
    # which services export each family
    exporters: dict[str, set[str]] = {}
    for series in query(client, 'group by (__name__, service) ({__name__=~".+", job="datamesh"})'):
        exporters.setdefault(series["metric"]["__name__"], set()).add(series["metric"]["service"])
    variable = client.get("/api/v1/label/service/values", params={"match[]": REQUESTS})
    assert set(variable.json()["data"]) == set(services)  # a row for each

    problems: list[str] = []
    for panel in panels(dashboard("operations")):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            names = metric_names(expr)
            if unknown := names - exported:
                problems.append(f"{panel['title']}: no service exports {sorted(unknown)}")
                continue
            per_service = "$service" in expr
            answered = set()
            try:
                for service in services if per_service else [""]:
                    if query(client, expr.replace("$service", service)):
                        answered.add(service)
            except QueryError as error:
                problems.append(f"{panel['title']}: {error}")
                continue
            # every service exporting all the families a query reads must show in it
            expected = (
                {s for s in services if all(s in exporters.get(n, ()) for n in names)}
                if per_service
                else {""}
            )
            if not answered or not expected <= answered:
                problems.append(
                    f"{panel['title']}: {expr} answers for {sorted(answered)}, "
                    f"expected {sorted(expected) or 'some service'}"
                )
    recorded = {name for name, _, recording in rule_expressions() if recording}
    for name, expr, recording in rule_expressions():
        try:
            result = query(client, expr)  # it parses and runs
        except QueryError as error:
            problems.append(f"{name}: {error}")
            continue
        if unknown := metric_names(expr) - exported - recorded:
            problems.append(f"{name}: no service exports {sorted(unknown)}")
        if recording and not result:
            problems.append(f"{name}: no series over the running services")
    for group in client.get("/api/v1/rules").json()["data"]["groups"]:
        for rule in group["rules"]:
            if rule["health"] != "ok":
                problems.append(f"{rule['name']}: {rule.get('lastError')}")
    assert problems == [], "\n".join(problems)
