"""The cost of metrics per request: the same reads with the services' metrics on and off
(`DATAMESH_METRICS_ENABLED`), in the same run, and on with a Prometheus-like scrape every
second.

The setting is read by each service at start, and one PostgreSQL data directory serves one
`datamesh up` at a time; so two `datamesh up` run side by side, each on its own copy of the
bench data (the second seeded once, like the first, under `metrics-twin/`), one with
DATAMESH_METRICS_ENABLED=true in its environment and one with false (which `datamesh up` passes
to the services; checked in their environment and by `/metrics` answering 200 or 404). Then
every read is loaded by wrk as the reads section loads it, on, off, on scraped (then scraped,
off, on, ...), one run right after the other, so that the machine's other work weighs on
neighbours alike; halfway the two copies swap settings (both restarted), so that a difference
between the copies does not pass for a cost. Besides wrk's figures, the service's CPU time per
request (psutil, user + system, over the wrk run) is noted. Last, what a request records
(`shared.serving.hygiene._measure`) is timed alone in this process with timeit, and the
background reading of the products' states apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from bench.floor import PAGE
from bench.harness import (
    SERVICES,
    BenchError,
    DataMeshUp,
    RssSampler,
    Spread,
    bench_data,
    client,
    get_ok,
    run_wrk,
    say,
)
from bench.report import Section, Table, Target

ENABLED = "DATAMESH_METRICS_ENABLED"
# the background reading of the products' rows and freshness runs every 30 s whatever ENABLED
# says: at start only in both settings (0), so that a reading landing in some runs and not in
# others does not count as a cost per request; it is timed apart (`state_readings`)
STATE_SECONDS = "DATAMESH_METRICS_STATE_SECONDS"
COST_LIMIT = 0.05  # the most the metrics may take of a read's throughput (issue 14)
SCRAPE_SECONDS = 1.0  # the scraper's interval: harsher than deploy/prometheus's 15 s

# a table page and a view, both on sales; the view is the one the reads section finds the
# fastest, where a fixed cost per request weighs the most
READS = (
    ("orders, first page (limit 100)", "sales", "/sales/v1/orders", f"limit={PAGE}"),
    (
        "sales-summary (limit 100)",
        "sales",
        "/sales/v1/sales-summary",
        f"order=month.desc&limit={PAGE}",
    ),
)
OFF, ON, SCRAPED = "off", "on", "on, scraped every 1 s"
SETTINGS = (OFF, ON, SCRAPED)


@dataclass(frozen=True)
class Load:
    """One wrk run and the service's CPU time over it."""

    requests_per_second: float
    p50: float
    p99: float
    cpu_per_request: float  # seconds of the service's CPU (user + system) per request


class Scraper:
    """A Prometheus-like scraper in a thread: GET `/metrics` of every service, one after the
    other, every `interval` seconds; each scrape's duration and size noted. A scrape that
    fails fails the test."""

    def __init__(self, urls: list[str], interval: float = SCRAPE_SECONDS):
        self.urls = urls
        self.interval = interval
        self.durations: list[float] = []
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            due = time.monotonic()
            while not self._stop.is_set():
                for url in self.urls:
                    started = time.perf_counter()
                    try:
                        response = http.get(url)
                    except httpx.HTTPError as error:
                        self.failure = f"GET {url}: {error!r}"
                        return
                    if response.status_code != 200:
                        self.failure = f"GET {url}: {response.status_code}"
                        return
                    self.durations.append(time.perf_counter() - started)
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def started(data: Path, *, metrics: bool) -> Iterator[DataMeshUp]:
    """`datamesh up` on the data with the services' metrics on or off, checked: the setting is
    in every service's environment, and sales' `/metrics` answers (on) or is not found (off)."""
    value = "true" if metrics else "false"
    mesh = DataMeshUp(data)
    mesh.env[ENABLED] = value  # `datamesh up` passes its environment to the services
    mesh.env[STATE_SECONDS] = "0"
    with mesh.start():
        for name, pid in mesh.pids.items():
            seen = psutil.Process(pid).environ().get(ENABLED)
            if seen != value:
                raise BenchError(f"the {name} service has {ENABLED}={seen}, not {value}")
        status = httpx.get(f"{mesh.url('sales')}/metrics", timeout=30).status_code
        if status != (200 if metrics else 404):
            raise BenchError(f"with {ENABLED}={value}, GET /metrics answered {status}")
        yield mesh


def _load(url: str, token: str, pid: int, *, connections: int, seconds: float) -> Load:
    process = psutil.Process(pid)
    before = process.cpu_times()
    measured = run_wrk(url, token, connections=connections, seconds=seconds)
    after = process.cpu_times()
    if measured.failures:
        raise BenchError(
            f"{url}: {measured.failures} of {measured.requests} requests failed under wrk"
        )
    cpu = (after.user - before.user) + (after.system - before.system)
    return Load(measured.requests_per_second, measured.p50, measured.p99, cpu / measured.requests)


def run(root: Path, scale: int, *, reps: int, seconds: float, connections: int) -> Section:
    section = Section(
        "metrics",
        "Cost of metrics",
        f"The reads below with the services' metrics off (`{ENABLED}=false`: no recording, no "
        "`/metrics`), on (the default), and on while a scraper GETs every service's `/metrics` "
        f"every {SCRAPE_SECONDS:.0f} s. Two `datamesh up` run side by side, each on its own "
        f"copy of the bench data (scale {scale:,}), one with metrics on and one off; each read "
        f"is warmed (one request, one second of wrk) on both, then loaded by `wrk --latency "
        f"-t1 -c{connections} -d{seconds:.0f}s --timeout 30s` on loopback, on, off, on scraped "
        f"(then scraped, off, on, ...), one run right after the other, {reps} repetitions; "
        "halfway the copies swap settings (both restarted). "
        f"`{STATE_SECONDS}=0` in both (see the notes). Median (min-max) over the repetitions; "
        "the ratio is to metrics off in the same repetition, the cost 1 - ratio. CPU/request: "
        "the sales service's CPU time (user + system) over the wrk run divided by its requests.",
    )
    section.rss_title = (
        "Peak RSS of the sales service during each load test (MiB), the largest over the "
        "repetitions"
    )
    copies = (bench_data(root, scale), bench_data(root / "metrics-twin", scale))
    loads: dict[str, dict[str, list[Load]]] = {r[0]: {s: [] for s in SETTINGS} for r in READS}
    scrapes: list[float] = []
    sizes: dict[str, int] = {}  # each service's /metrics body after its loads
    readings: dict[str, float] = {}
    sample: httpx.Response | None = None
    load_before = os.getloadavg()[0]
    half = (reps + 1) // 2
    for first, last, (on_data, off_data) in ((0, half, copies), (half, reps, copies[::-1])):
        if first == last:
            continue
        say(f"metrics: {on_data.parent.name}/{on_data.name} on, the other copy off")
        with started(on_data, metrics=True) as on, started(off_data, metrics=False) as off:
            meshes = {ON: on, SCRAPED: on, OFF: off}
            tokens = {name: mesh.token() for name, mesh in meshes.items()}
            urls = {
                (read, setting): f"{mesh.url(s)}{path}?{query}"
                for read, s, path, query in READS
                for setting, mesh in meshes.items()
            }
            with client(tokens[ON]) as http:
                sample = sample or get_ok(http, urls[READS[0][0], ON])  # an orders page
            for (_, setting), url in urls.items():
                if setting != SCRAPED:  # the same URL as ON
                    with client(tokens[setting]) as http:
                        get_ok(http, url)  # pool, caches, plans
                    run_wrk(url, tokens[setting], connections=connections, seconds=1)
            scraped = [f"{on.url(name)}/metrics" for name in SERVICES]
            for rep in range(first, last):
                say(f"metrics: repetition {rep + 1} of {reps}")
                order = [ON, OFF, SCRAPED] if rep % 2 == 0 else [SCRAPED, OFF, ON]
                for read, service, _, _ in READS:
                    for setting in order:
                        pid = meshes[setting].pids[service]
                        scraper = Scraper(scraped) if setting == SCRAPED else None
                        with RssSampler({service: pid}) as rss, scraper or contextlib.nullcontext():
                            load = _load(
                                urls[read, setting],
                                tokens[setting],
                                pid,
                                connections=connections,
                                seconds=seconds,
                            )
                        if scraper is not None:
                            if scraper.failure:
                                raise BenchError(f"the scraper failed: {scraper.failure}")
                            scrapes += scraper.durations
                        loads[read][setting].append(load)
                        section.rss.add(read, {setting: rss.peaks_mib()[service]})
                        time.sleep(0.2)
            sizes = _scrape_sizes(on)
            readings = readings or state_readings(on)
    section.notes.append(
        f"Load average (1 min) just before the section: {load_before:.2f}, on "
        f"{psutil.cpu_count()} logical cores (work other than the bench's shares them: noise)."
    )
    _tabulate(section, loads)
    if scrapes:
        scrapes.sort()
        section.notes.append(
            f"The scrapes under load: {len(scrapes)} (three services a second), each answered "
            f"in {statistics.median(scrapes) * 1000:.1f} ms (median), "
            f"{scrapes[int(len(scrapes) * 0.99)] * 1000:.1f} ms (p99), "
            f"{scrapes[-1] * 1000:.1f} ms at most; the `/metrics` bodies: "
            + ", ".join(f"{n} {b / 1024:.1f} KiB" for n, b in sizes.items())
            + "."
        )
    assert sample is not None
    table, measure = recording(sample)
    section.tables.append(table)
    shares = [
        f"{name}: {measure / 1e6 / Spread.of([r.cpu_per_request for r in by[OFF]]).median:.1%}"
        for name, by in loads.items()
    ]
    section.notes.append(
        "Not in these figures: each domain service reads its products' rows and freshness "
        "for its metrics in the background, every 30 s by default "
        f"(`{STATE_SECONDS}`) and whatever `{ENABLED}` says (here only at start, in both "
        "settings). One reading, timed apart from this process (the same statements, median of "
        "3): " + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in readings.items()) + "."
    )
    section.notes.append(
        f"The recording alone (`_measure`, {measure:.1f} µs) against the sales service's CPU "
        f"per request with metrics off: {'; '.join(shares)}."
    )
    return section


def state_readings(mesh: DataMeshUp, reps: int = 3) -> dict[str, float]:
    """Seconds one background reading of a domain's product states takes (what the service
    runs every DATAMESH_METRICS_STATE_SECONDS), on its database as its own role."""
    from services import domain
    from shared.governance.readings import read_states
    from shared.telemetry.metrics import ProductStates

    async def timed(name: str) -> float:
        conn = await asyncpg.connect(mesh.database_url(name))
        try:
            durations = []
            for _ in range(reps):
                started = time.perf_counter()
                await read_states(conn, domain(name), ProductStates(name))
                durations.append(time.perf_counter() - started)
        finally:
            await conn.close()
        return statistics.median(durations)

    return {name: asyncio.run(timed(name)) for name in ("sales", "marketing")}


def _scrape_sizes(mesh: DataMeshUp) -> dict[str, int]:
    return {
        name: len(httpx.get(f"{mesh.url(name)}/metrics", timeout=30).content) for name in SERVICES
    }


def _tabulate(section: Section, loads: dict[str, dict[str, list[Load]]]) -> None:
    table = Table(
        ["read", "metrics", "req/s", "req/s / off", "p50", "p99", "CPU/request", "CPU / off"],
        title="Throughput, latency and the sales service's CPU per request",
    )

    def paired(runs: list[Load], off: list[Load], value: Callable[[Load], float]) -> Spread:
        """The ratio to metrics off in the same repetition."""
        return Spread.of([value(r) / value(o) for r, o in zip(runs, off, strict=True)])

    for name, by_setting in loads.items():
        off = by_setting[OFF]
        for setting in SETTINGS:
            runs = by_setting[setting]
            ratio = paired(runs, off, lambda r: r.requests_per_second)
            cpu = paired(runs, off, lambda r: r.cpu_per_request)
            table.rows.append(
                [
                    name,
                    setting,
                    Spread.of([r.requests_per_second for r in runs]).text("", 0),
                    "" if setting == OFF else ratio.text("x", 3),
                    Spread.of([r.p50 for r in runs]).text(" ms", 2, 1000),
                    Spread.of([r.p99 for r in runs]).text(" ms", 2, 1000),
                    Spread.of([r.cpu_per_request for r in runs]).text(" µs", 0, 1e6),
                    "" if setting == OFF else cpu.text("x", 3),
                ]
            )
            if setting == ON:
                cost = 1 - ratio.median
                section.targets.append(
                    Target(
                        f"cost of metrics, {name}",
                        f"{ratio.text('x', 3)} the throughput with metrics off: cost {cost:.1%}",
                        f"cost < {COST_LIMIT:.0%} of throughput",
                        cost < COST_LIMIT,
                    )
                )
    section.tables.append(table)


# --- what a request records, alone -------------------------------------------------------------


def recording(sample: httpx.Response) -> tuple[Table, float]:
    """`_measure` for a successful JSON page (the orders read), timed alone with timeit, and its
    parts: the four labelled-child lookups (`.labels(...)`), the four updates; the access
    line (written in both settings) for scale. Also gives `_measure`'s µs per request."""
    from shared.serving import hygiene
    from shared.telemetry import metrics

    async def endpoint() -> None:
        pass

    route = APIRoute("/sales/v1/orders", endpoint, methods=["GET"], tags=["orders"])
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/sales/v1/orders",
        "query_string": f"limit={PAGE}".encode(),
        "route": route,
        "path_params": {},
    }

    async def send(message: Any) -> None:
        pass

    response = hygiene._ResponseSeen(scope, send)
    response.status = 200
    response.bytes = len(sample.content)
    response.headers = Headers(headers=dict(sample.headers))
    entry = hygiene._access_entry("sales", scope, response, 4.2)
    if entry["product"] != "orders" or not entry["rows"]:
        raise BenchError(f"the sample request is not an orders page: {entry}")
    service, template, status = "sales", route.path, "200"
    counted = metrics.HTTP_REQUESTS.labels(service, template, "GET", status)
    timed = metrics.HTTP_DURATION.labels(service, template, "GET")
    rows = metrics.ROWS_SERVED.labels(service, "orders", "json")
    sent = metrics.BYTES_SERVED.labels(service, "orders", "json")

    def lookups() -> None:
        metrics.HTTP_REQUESTS.labels(service, template, "GET", status)
        metrics.HTTP_DURATION.labels(service, template, "GET")
        metrics.ROWS_SERVED.labels(service, "orders", "json")
        metrics.BYTES_SERVED.labels(service, "orders", "json")

    def updates() -> None:
        counted.inc()
        timed.observe(0.004)
        rows.inc(100)
        sent.inc(response.bytes)

    def access_line() -> None:
        line = hygiene._access_entry("sales", scope, response, 4.2)
        json.dumps(line, separators=(",", ":"))

    table = Table(
        ["a successful JSON read (orders, limit 100)", "µs per request"],
        title="What a request records, timed alone (timeit in the bench process, median of 5)",
    )
    parts: list[tuple[str, Callable[[], None]]] = [
        (
            "`_measure`: the whole recording (4 label lookups, 4 updates)",
            lambda: hygiene._measure("sales", scope, response, 0.004, entry),
        ),
        ("of which the 4 `.labels(...)` lookups", lookups),
        ("of which the 4 updates of the labelled children (inc, observe)", updates),
        ("for scale: the access line's entry and its JSON (both settings)", access_line),
    ]
    timed_parts = [(label, _microseconds(call)) for label, call in parts]
    table.rows += [[label, f"{micro:.1f}"] for label, micro in timed_parts]
    return table, timed_parts[0][1]


def _microseconds(call: Callable[[], None], number: int = 20_000) -> float:
    call()
    return statistics.median(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
