"""Our reads against B0, the floor: the same query, the same database, interleaved.

Each row is one read (a view at limit 100, the first page of `orders`, a keyset page deep in
it); its contenders (our endpoint, B0) are loaded in turn by wrk with the same connections
and duration, the order alternating from one repetition to the next. A read too slow for a
load test (a single request slower than `slow_threshold`) is measured by sequential requests
instead, and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from bench.harness import (
    B0,
    BenchError,
    DataMeshUp,
    RssSampler,
    Spread,
    client,
    get_ok,
    run_wrk,
    say,
)
from bench.report import Section, Table, Target
from services import domain
from shared.reading.query import PiiAccess, SqlBuilder, order_by, parse_read
from shared.sql import quote_ident

DEEP = 500_000  # the depth of the deep keyset page, in rows
PAGE = 100


@dataclass(frozen=True)
class Contender:
    label: str  # "ours", "B0", ...
    url: str
    service: str  # the process that answers it (for its RSS)


@dataclass
class Read:
    name: str
    kind: str  # view, first, deep
    domain: str
    contenders: list[Contender]


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    p50: float
    p99: float


def b0_statement(
    domain_name: str, product_name: str, params: list[tuple[str, str]]
) -> tuple[str, list[Any]]:
    """The statement our endpoint runs for these parameters (written by the framework's own
    SqlBuilder), with the JSON built in PostgreSQL as PostgREST does."""
    product = domain(domain_name).product(product_name)
    if product is None:
        raise BenchError(f"no product {domain_name}/{product_name}")
    query = parse_read(product, params, max_limit=None, pii=PiiAccess(None, True))
    sql = SqlBuilder()
    inner = (
        f"SELECT {sql.outputs(query)} FROM {quote_ident(product.source)} s"
        f"{sql.where(query)}{order_by(query)}"
    )
    if query.limit is not None:
        sql.args.append(query.limit)
        inner += f" LIMIT ${len(sql.args)}"
    return f"SELECT coalesce(json_agg(t), '[]')::text FROM ({inner}) t", sql.args


VIEWS = (
    ("sales", "customer-lifetime-value", "lifetime_value.desc"),
    ("sales", "sales-summary", "month.desc"),
    ("sales", "product-performance", "total_revenue.desc"),
    ("marketing", "campaign-performance", "converted_leads.desc"),
    ("marketing", "lead-funnel", "lead_count.desc"),
)


def deep_position(mesh: DataMeshUp, token: str, depth: int) -> tuple[int, str]:
    """The key of the `depth`-th order and the real `Link: rel="next"` cursor after it: the
    page of `limit` rows ending there, read once by offset, links to the page we measure."""
    with client(token) as http:
        total_text = get_ok(
            http, f"{mesh.url('sales')}/sales/v1/orders?limit=1", headers={"Prefer": "count=exact"}
        ).headers["content-range"]
        total = int(total_text.split("/")[1])
        depth = min(depth, total // 2)
        start = max(depth - PAGE, 0)
        page = get_ok(
            http, f"{mesh.url('sales')}/sales/v1/orders?limit={depth - start}&offset={start}"
        )
        last = orjson.loads(page.content)[-1]["order_id"]
        link = page.headers.get("link", "")
    if 'rel="next"' not in link:
        raise BenchError("the orders page has no Link rel=next")
    cursor = link.split("cursor=", 1)[1].split(">", 1)[0]
    return int(last), cursor


def plan(mesh: DataMeshUp, token: str, b0_url: str) -> tuple[list[Read], dict[str, Any]]:
    """The reads, and the routes B0 needs for them."""
    routes: dict[str, Any] = {}
    reads: list[Read] = []

    def ours(dom: str, product: str, params: list[tuple[str, str]]) -> str:
        return f"{mesh.url(dom)}/{dom}/v1/{product}?{urlencode(params, safe='.,')}"

    def floor(route: str, dom: str, product: str, params: list[tuple[str, str]]) -> str:
        sql, args = b0_statement(dom, product, params)
        routes[f"/{route}"] = {"domain": dom, "sql": sql, "args": args}
        return f"{b0_url}/{route}"

    for dom, product, order in VIEWS:
        params = [("order", order), ("limit", str(PAGE))]
        reads.append(
            Read(
                f"{product} (limit {PAGE})",
                "view",
                dom,
                [
                    Contender("ours", ours(dom, product, params), dom),
                    Contender("B0", floor(product, dom, product, params), "b0"),
                ],
            )
        )
    first = [("limit", str(PAGE))]
    reads.append(
        Read(
            f"orders, first page (limit {PAGE})",
            "first",
            "sales",
            [
                Contender("ours", ours("sales", "orders", first), "sales"),
                Contender("B0", floor("orders-first", "sales", "orders", first), "b0"),
            ],
        )
    )
    key, cursor = deep_position(mesh, token, DEEP)
    filtered = [("order_id", f"gt.{key}"), ("limit", str(PAGE))]
    reads.append(
        Read(
            f"orders, keyset page after row {key:,}",
            "deep",
            "sales",
            [
                Contender("ours", ours("sales", "orders", [*first, ("cursor", cursor)]), "sales"),
                Contender("ours, order_id=gt.", ours("sales", "orders", filtered), "sales"),
                Contender("B0", floor("orders-deep", "sales", "orders", filtered), "b0"),
            ],
        )
    )
    return reads, routes


def _check_same(read: Read, bodies: dict[str, bytes]) -> None:
    parsed = {label: orjson.loads(body) for label, body in bodies.items()}
    first_label, first = next(iter(parsed.items()))
    for label, rows in parsed.items():
        if rows != first:
            raise BenchError(
                f"{read.name}: {label} answers other rows than {first_label} "
                f"({len(rows)} vs {len(first)}): the floor would not be the same query"
            )


def _sequential(url: str, token: str, count: int) -> Run:
    latencies = []
    with client(token) as http:
        for _ in range(count):
            started = time.perf_counter()
            get_ok(http, url)
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    return Run(count / sum(latencies), latencies[len(latencies) // 2], latencies[-1])


def run(
    mesh: DataMeshUp,
    token: str,
    scratch: Path,
    *,
    reps: int,
    seconds: float,
    connections: int,
    slow_threshold: float,
) -> Section:
    section = Section(
        "reads",
        "Reads against B0, the floor",
        f"Each read is loaded by `wrk --latency -t1 -c{connections} -d{seconds:.0f}s --timeout 30s` on "
        f"loopback, our endpoint and B0 in turn (the order alternating), {reps} repetitions; "
        "median (min-max) over the repetitions. B0 runs the statement our endpoint runs "
        "(written by the framework's SqlBuilder), JSON built in PostgreSQL by `json_agg` as "
        "PostgREST does, from a Starlette route on an asyncpg pool of the same size, on the same "
        "database and role; both answer the same rows (checked first). A read whose single "
        f"request takes over {slow_threshold * 1000:.0f} ms is measured by sequential requests "
        "instead (mode `seq`: one connection, req/s = 1 / mean latency). The ratio is ours / B0 "
        "in the same repetition. Before the repetitions, each contender is warmed by one "
        "request and one second of wrk.",
    )
    section.rss_title = (
        "Peak RSS during each load test (MiB): our service (the read's domain) and B0, the "
        "largest over the repetitions"
    )
    floor = B0(scratch / "b0-spec.json")
    reads, routes = plan(mesh, token, floor.url)
    spec = {
        "databases": {name: mesh.database_url(name) for name in ("sales", "marketing")},
        "pool_size": 10,
        "statement_timeout_ms": 30000,
        "routes": routes,
    }
    floor.start(spec)
    pids = {name: mesh.pids[name] for name in ("sales", "marketing")} | {"b0": floor.pid}
    results: dict[str, dict[str, list[Run]]] = {}
    modes: dict[str, str] = {}
    try:
        for read in reads:
            latencies: dict[str, float] = {}
            bodies: dict[str, bytes] = {}
            with client(token) as http:
                for contender in read.contenders:
                    get_ok(http, contender.url)  # warm: pool, caches, plans
                    started = time.perf_counter()
                    bodies[contender.label] = get_ok(http, contender.url).content
                    latencies[contender.label] = time.perf_counter() - started
            _check_same(read, bodies)
            modes[read.name] = "seq" if max(latencies.values()) > slow_threshold else "wrk"
            results[read.name] = {c.label: [] for c in read.contenders}
            if modes[read.name] == "wrk":  # every pooled connection opened, plans cached
                for contender in read.contenders:
                    run_wrk(contender.url, token, connections=connections, seconds=1)
        for rep in range(reps):
            say(f"reads: repetition {rep + 1} of {reps}")
            for read in reads:
                order = read.contenders if rep % 2 == 0 else list(reversed(read.contenders))
                for contender in order:
                    sampled = {contender.service: pids[contender.service]}
                    with RssSampler(sampled) as rss:
                        if modes[read.name] == "wrk":
                            measured = run_wrk(
                                contender.url, token, connections=connections, seconds=seconds
                            )
                            if measured.failures:
                                raise BenchError(
                                    f"{read.name}, {contender.label}: {measured.failures} of "
                                    f"{measured.requests} requests failed under wrk"
                                )
                            result = Run(measured.requests_per_second, measured.p50, measured.p99)
                        else:
                            result = _sequential(contender.url, token, 3)
                    results[read.name][contender.label].append(result)
                    peak = rss.peaks_mib()[contender.service]
                    section.rss.add(read.name, {contender.label: peak})
                    time.sleep(0.2)
    finally:
        floor.stop()
    _tabulate(section, reads, results, modes, connections)
    return section


def _ms(spread: Spread) -> str:
    return spread.text(" ms", 2 if spread.ok and spread.median < 0.01 else 1, 1000)


def _tabulate(
    section: Section,
    reads: list[Read],
    results: dict[str, dict[str, list[Run]]],
    modes: dict[str, str],
    connections: int,
) -> None:
    table = Table(
        [
            "read",
            "mode",
            "ours req/s",
            "B0 req/s",
            "ours / B0",
            "ours p50",
            "B0 p50",
            "ours p99",
            "B0 p99",
        ]
    )
    first_p50: list[float] = []
    for read in reads:
        runs = results[read.name]
        mode = f"wrk c={connections}" if modes[read.name] == "wrk" else "seq"
        for label in runs:
            if label == "B0":
                continue
            ours, floor = runs[label], runs["B0"]
            ratio = Spread.of(
                [
                    o.requests_per_second / f.requests_per_second
                    for o, f in zip(ours, floor, strict=True)
                ]
            )
            name = read.name if label == "ours" else f"{read.name}, {label}"
            table.rows.append(
                [
                    name,
                    mode,
                    Spread.of([r.requests_per_second for r in ours]).text("", 0),
                    Spread.of([r.requests_per_second for r in floor]).text("", 0),
                    ratio.text("x", 2),
                    _ms(Spread.of([r.p50 for r in ours])),
                    _ms(Spread.of([r.p50 for r in floor])),
                    _ms(Spread.of([r.p99 for r in ours])),
                    _ms(Spread.of([r.p99 for r in floor])),
                ]
            )
            p50 = Spread.of([r.p50 for r in ours])
            if read.kind == "view" and label == "ours":
                passed = modes[read.name] == "wrk" and ratio.median >= 0.5 and p50.median < 0.010
                section.targets.append(
                    Target(
                        f"view read {read.name}",
                        f"{ratio.median:.2f}x B0, p50 {_ms(p50)} ({mode})",
                        ">= 0.5x B0 throughput, p50 < 10 ms",
                        passed,
                    )
                )
            if read.kind == "first":
                first_p50 = [r.p50 for r in ours]
            if read.kind == "deep" and label == "ours" and first_p50:
                deep = Spread.of([d.p50 / f for d, f in zip(runs["ours"], first_p50, strict=True)])
                section.targets.append(
                    Target(
                        "keyset page at depth 500,000",
                        f"p50 {_ms(p50)} = {deep.text('x', 2)} the first page's",
                        "p50 <= 1.5x the first page's",
                        deep.median <= 1.5,
                    )
                )
    section.tables.append(table)
