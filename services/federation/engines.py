"""The engines that compute a metric (MESH_ENGINE): the in-process DuckDB over the products read
over HTTP (the default), or Apache Spark over the domains' lake snapshots
(services/federation/spark.py). Both run the metric's one statement and answer an Arrow table
typed as the metric declares; the HTTP API is the same whichever answers (docs/mesh.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from services.federation.cache import RoundsByKey
from services.federation.compute import compute, key_values
from services.federation.fetch import DomainRegistry, Fetched, Period, key_filter
from services.federation.lake import Snapshot
from services.federation.metrics import Metric
from services.federation.settings import SERVICE, FederationSettings
from shared.telemetry import metrics

# the headers of every metric's answer: the engine that computed it, and on Spark the snapshots
# it read (`domain/product/v<version>=<id>`, comma-separated) and the oldest one's age
ENGINE_HEADER = "DataMesh-Engine"
KEPT_KEY_FILTERS = 256
Bodies = dict[str, bytes | None]
SNAPSHOTS_HEADER = "DataMesh-Snapshots"
SNAPSHOT_AGE_HEADER = "DataMesh-Snapshot-Age-Seconds"


@dataclass(frozen=True)
class Answer:
    """A metric's rows and where they came from."""

    table: pa.Table
    engine: str
    snapshots: tuple[Snapshot, ...] = ()
    version: str | None = None  # what the answer was computed from (None: unknown)

    def headers(self, now: dt.datetime | None = None) -> dict[str, str]:
        """The engine that answered; on Spark, the snapshots it read and how old the oldest is."""
        headers = {ENGINE_HEADER: self.engine}
        if self.snapshots:
            headers[SNAPSHOTS_HEADER] = ", ".join(s.lineage for s in self.snapshots)
            ages = [a for a in (s.age_seconds(now) for s in self.snapshots) if a is not None]
            if ages:
                headers[SNAPSHOT_AGE_HEADER] = str(max(ages))
        return headers


class Engine(Protocol):
    """What computes the metrics."""

    name: str

    async def answer(self, metric: Metric, period: Period, caller: str | None) -> Answer:
        """The metric's rows over the period, read on behalf of `caller`."""
        ...

    async def lineage(self, metric: Metric) -> list[dict[str, Any]]:
        """What the metric reads now, one entry per input product (the metric catalogue)."""
        ...

    async def start(self) -> None:
        """Get ready to answer (in the background: the first answer waits if it must)."""
        ...

    async def close(self) -> None:
        """Release what the engine holds."""
        ...


class DuckDBEngine:
    """The default: each input fetched from its domain over HTTP, joined in DuckDB. With a
    cache (services/federation/cache.py), inputs are revalidated by their ETags, an answer
    whose inputs did not change is not computed again, and concurrent requests for the same
    metric and period share their revalidations (rounds)."""

    name = "duckdb"

    def __init__(self, registry: Callable[[], DomainRegistry]):
        self._registry = registry
        self._rounds: RoundsByKey[Answer] = RoundsByKey()
        # the key filters of the latest metrics and periods read (at most KEPT_KEY_FILTERS), by
        # the tags of the inputs they came from
        self._keys: OrderedDict[tuple[str, Period], tuple[tuple[str | None, ...], Bodies]]
        self._keys = OrderedDict()

    async def answer(self, metric: Metric, period: Period, caller: str | None) -> Answer:
        if self._registry().cache is None:
            return await self._answer(metric, period, caller)
        # one answer for every caller: the inputs are read with the mesh's token (caller is
        # only whom the domain counts the read against: the caller that starts the round)
        return await self._rounds.run(
            (metric.name, period), lambda: self._answer(metric, period, caller)
        )

    async def _answer(self, metric: Metric, period: Period, caller: str | None) -> Answer:
        registry = self._registry()
        inputs = await self._inputs(registry, metric, period, caller)
        tags = tuple(inputs[i.name].tag for i in metric.inputs)
        cache = registry.cache
        key = ("answer", metric.name, period)
        version = _digest(tags) if None not in tags else None
        if cache is not None and version is not None:
            kept = cache.get(key)
            if kept is not None and kept.tag == tags:
                metrics.MESH_ANSWERS.labels(SERVICE, metric.name, "kept").inc()
                return Answer(kept.value, self.name, version=version)
        tables = {name: fetched.table for name, fetched in inputs.items()}
        table = await asyncio.to_thread(compute, metric, tables, period)
        if cache is not None and version is not None:
            cache.put(key, tags, table)
        metrics.MESH_ANSWERS.labels(SERVICE, metric.name, "computed").inc()
        return Answer(table, self.name, version=version)

    async def _inputs(
        self, registry: DomainRegistry, metric: Metric, period: Period, caller: str | None
    ) -> dict[str, Fetched]:
        """Every input: first those read whole, then (if any) the keyed ones, each only for
        the keys its Keys query finds in the first (a semi-join pushed to its domain). The
        keys of unchanged first inputs (the same tags) are the keys found last time."""
        whole = [i for i in metric.inputs if i.keys is None]
        keyed = [i for i in metric.inputs if i.keys is not None]
        first = await registry.fetch_all(whole, period, caller=caller)
        if not keyed:
            return first
        tags = tuple(first[i.name].tag for i in whole)
        found = self._keys.get((metric.name, period))
        if found is not None and found[0] == tags and None not in tags:
            bodies = found[1]
        else:
            tables = {name: fetched.table for name, fetched in first.items()}
            keys = await asyncio.to_thread(key_values, keyed, tables)
            bodies = {i.name: key_filter(i, keys[i.name]) for i in keyed}
            self._keys[(metric.name, period)] = (tags, bodies)
            self._keys.move_to_end((metric.name, period))
            while len(self._keys) > KEPT_KEY_FILTERS:
                self._keys.popitem(last=False)
        return first | await registry.fetch_all(keyed, period, caller=caller, bodies=bodies)

    async def lineage(self, metric: Metric) -> list[dict[str, Any]]:
        return [{"input": lineage, "read": "http"} for lineage in input_products(metric)]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _digest(parts: tuple[object, ...]) -> str:
    """A short, stable digest of what an answer was computed from (its inputs' tags or
    snapshots): the version in the answer's ETag."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def input_products(metric: Metric) -> list[str]:
    """The products the metric reads, `domain/product`, each once, sorted."""
    return sorted({i.lineage for i in metric.inputs})


def engine_for(settings: FederationSettings, registry: Callable[[], DomainRegistry]) -> Engine:
    """The engine MESH_ENGINE names (Spark's module, and pyspark, loaded only when asked for)."""
    if settings.engine == "spark":
        from services.federation.spark import SparkEngine

        return SparkEngine(settings)
    return DuckDBEngine(registry)
