"""Prometheus metrics of a service (docs/observability.md lists every family).

The families are defined once here; the layers record into them where things happen (the
request wrapper of shared.serving.hygiene, the pool of shared.storage.db, the mesh's fetches),
and `GET /metrics` renders them with prometheus-client.

With several worker processes (`python -m shared.serving.server --workers N`) the server sets
`PROMETHEUS_MULTIPROC_DIR` before the workers start: prometheus-client then keeps every value in
files there, and a scrape answered by any worker sums (counters, histograms, the pool) or takes
the latest (state) over all of them. The state of a domain's products (freshness, rows,
quality) is not a counter of events but a reading of the database: each service keeps its
latest reading (`ProductStates`, refreshed in the background) and renders it at the scrape,
so that an age is the age at that moment.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

disable_created_metrics()  # no `_created` series beside every counter

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# the text format every Prometheus 2 and 3 reads (the names here are all classic ones)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# where a handler notes the rows it answers, in the request's ASGI scope (a stream as it sends
# them), for the access log and the metrics
ROWS_NOTE = "datamesh.rows"
# 1 ms to 500 ms resolved, and the long tail of streams and metrics
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@functools.lru_cache(maxsize=8192)
def child(metric: Any, *labels: str) -> Any:
    """The labelled child of a family, looked up once per label values (prometheus-client's
    `.labels()` validates and locks on every call: a request's recording costs a few
    microseconds less this way). The label values are bounded: templates, declared names,
    statuses and problem codes."""
    return metric.labels(*labels)


# --- requests (shared.serving.hygiene) ---------------------------------------------------------

HTTP_REQUESTS = Counter(
    "datamesh_http_requests",
    "Requests answered, by route template (never the raw path), method and status.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "datamesh_http_request_duration_seconds",
    "Time from the request to the last byte of its answer.",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS,
)
ROWS_SERVED = Counter(
    "datamesh_rows_served", "Rows answered by product reads.", ["service", "product", "format"]
)
BYTES_SERVED = Counter(
    "datamesh_bytes_served",
    "Response bytes of product reads.",
    ["service", "product", "format"],
)
WRITES = Counter(
    "datamesh_writes",
    "Writes by operation and outcome (accepted, refused, replayed).",
    ["service", "product", "operation", "outcome"],
)
WRITE_REFUSALS = Counter(
    "datamesh_write_refusals",
    "Refused writes by the problem's code.",
    ["service", "product", "reason"],
)

# --- the database pool (shared.storage.db) ------------------------------------------------------

DB_POOL_SIZE = Gauge(
    "datamesh_db_pool_size",
    "Connections the pool may hold.",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE = Gauge(
    "datamesh_db_pool_in_use",
    "Connections checked out now.",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITS = Counter(
    "datamesh_db_pool_waits",
    "Acquisitions that found no idle connection and waited for one.",
    ["service"],
)
DB_POOL_TIMEOUTS = Counter(
    "datamesh_db_pool_timeouts",
    "Acquisitions that gave up waiting for a connection (answered 503).",
    ["service"],
)
DB_STATEMENT_TIMEOUTS = Counter(
    "datamesh_db_statement_timeouts",
    "Statements cut by the statement timeout (answered 504).",
    ["service"],
)

# --- the rate limits' store (shared.serving.rate_limits) ----------------------------------------

RATE_LIMIT_STORE_ERRORS = Counter(
    "datamesh_rate_limit_store_errors",
    "Requests whose rate limit the shared store (DATAMESH_RATE_LIMIT_STORAGE) could not count: "
    "counted by the process alone instead.",
    ["service"],
)

# --- the background jobs' leader (shared.storage.leader) ----------------------------------------

LEADER = Gauge(
    "datamesh_leader",
    "1 in the process that leads the domain's background jobs (view refresh, quality schedule, "
    "lake export); summed over a server's workers: 1 if one of them leads, 0 if another "
    "replica does.",
    ["service"],
    multiprocess_mode="livesum",
)

# --- the mesh's fetches (services/federation) ---------------------------------------------------

MESH_FETCH_DURATION = Histogram(
    "datamesh_mesh_fetch_duration_seconds",
    "The mesh's fetch of one input product from its domain, retries included.",
    ["service", "domain", "product"],
    buckets=LATENCY_BUCKETS,
)
MESH_INPUT_READS = Counter(
    "datamesh_mesh_input_reads",
    "The mesh's reads of an input product, by outcome: read (nothing kept), not_modified (the "
    "rows kept are current: 304), changed (kept, but the domain's data moved).",
    ["service", "domain", "product", "outcome"],
)
MESH_ANSWERS = Counter(
    "datamesh_mesh_answers",
    "Metric answers, by how: computed, or kept (every input unchanged since it was computed).",
    ["service", "metric", "how"],
)
MESH_CACHE_BYTES = Gauge(
    "datamesh_mesh_cache_bytes",
    "Bytes of Arrow data the mesh keeps between answers (inputs and answers).",
    ["service"],
    multiprocess_mode="livesum",
)
MESH_CACHE_ENTRIES = Gauge(
    "datamesh_mesh_cache_entries",
    "Inputs and answers the mesh keeps between answers.",
    ["service"],
    multiprocess_mode="livesum",
)
MESH_FETCH_RETRIES = Counter(
    "datamesh_mesh_fetch_retries", "Requests to a domain tried again.", ["service", "domain"]
)
MESH_FETCH_FAILURES = Counter(
    "datamesh_mesh_fetch_failures",
    "Fetches from a domain that failed, by the problem's code.",
    ["service", "domain", "reason"],
)
MESH_CIRCUIT_STATE = Gauge(
    "datamesh_mesh_circuit_state",
    "A domain's circuit in the mesh: 0 closed, 1 half-open, 2 open.",
    ["service", "domain"],
    multiprocess_mode="livemax",
)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


# --- the state of a domain's products -----------------------------------------------------------


@dataclass
class ProductReading:
    """One product as last read from its database."""

    rows: int
    newest: float | None  # the newest value of its recency column, as a Unix time
    freshness_sla: float | None  # its declared freshness, in seconds


@dataclass
class QualityReading:
    """The latest quality run: the domain's score, each product's, each check's outcome."""

    finished_at: float
    score: float | None
    products: dict[str, float | None]
    # (product, check, severity) -> failing (a check that failed or errored)
    checks: dict[tuple[str, str, str], bool]


@dataclass(eq=False)  # registered in a registry: hashed by identity
class ProductStates(Collector):
    """The latest readings of a domain's products and quality, rendered at each scrape."""

    service: str
    products: dict[str, ProductReading] = field(default_factory=dict)
    quality: QualityReading | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        labels = ["service", "product"]
        age = GaugeMetricFamily(
            "datamesh_product_freshness_age_seconds",
            "Now minus the newest value of the product's recency column.",
            labels=labels,
        )
        sla = GaugeMetricFamily(
            "datamesh_product_freshness_sla_seconds",
            "The product's declared freshness.",
            labels=labels,
        )
        rows = GaugeMetricFamily("datamesh_product_rows", "Rows in the product.", labels=labels)
        for name, reading in sorted(self.products.items()):
            rows.add_metric([self.service, name], reading.rows)
            if reading.newest is not None:
                age.add_metric([self.service, name], max(now - reading.newest, 0.0))
            if reading.freshness_sla is not None:
                sla.add_metric([self.service, name], reading.freshness_sla)
        yield from (age, sla, rows)
        yield from self._quality()

    def _quality(self) -> Iterator[GaugeMetricFamily]:
        product_score = GaugeMetricFamily(
            "datamesh_product_quality_score",
            "The product's quality score (0-100) in the latest quality run.",
            labels=["service", "product"],
        )
        score = GaugeMetricFamily(
            "datamesh_quality_score",
            "The domain's quality score (0-100) in the latest quality run.",
            labels=["service"],
        )
        failing = GaugeMetricFamily(
            "datamesh_quality_check_failing",
            "1 if the check failed or errored in the latest quality run, else 0.",
            labels=["service", "product", "check", "severity"],
        )
        finished = GaugeMetricFamily(
            "datamesh_quality_last_run_timestamp_seconds",
            "When the latest quality run finished.",
            labels=["service"],
        )
        run = self.quality
        if run is not None:
            finished.add_metric([self.service], run.finished_at)
            if run.score is not None:
                score.add_metric([self.service], run.score)
            for product, value in sorted(run.products.items()):
                if value is not None:
                    product_score.add_metric([self.service, product], value)
            for (product, check, severity), bad in sorted(run.checks.items()):
                failing.add_metric([self.service, product, check, severity], 1.0 if bad else 0.0)
        yield from (product_score, score, failing, finished)


def exposition(states: ProductStates | None = None) -> bytes:
    """The text a scrape gets: every family of this process (or, with several workers, of all
    of them), then the service's product states."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if states is not None:
        own = CollectorRegistry()
        own.register(states)
        text += generate_latest(own)
    return text
