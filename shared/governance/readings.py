"""What a domain's metrics read from its database (shared.telemetry.metrics.ProductStates):
each product's row count and newest value, measured as its metadata measures them, and the
latest quality run. Read in the background every `DATAMESH_METRICS_STATE_SECONDS` and right
after every quality run, never per scrape."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from shared.declarations.products import Domain
from shared.governance.metadata import measure
from shared.governance.quality import Outcome, QualityRun, latest_run
from shared.schedule import every
from shared.storage.db import Database
from shared.telemetry.metrics import ProductReading, ProductStates, QualityReading

_log = logging.getLogger("datamesh.metrics")


def _unix_time(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=dt.UTC).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC).timestamp()
    return None


def quality_reading(run: QualityRun) -> QualityReading:
    """The figures of a quality run the metrics show."""
    failing = (Outcome.FAIL, Outcome.ERROR)
    return QualityReading(
        finished_at=run.finished_at.timestamp(),
        score=run.tally.score,
        products={name: tally.score for name, tally in run.product_tallies().items()},
        checks={
            (r.product, r.check_name, str(r.severity)): r.outcome in failing for r in run.results
        },
    )


async def read_states(conn: asyncpg.Connection, domain: Domain, states: ProductStates) -> None:
    """Read every product's rows and newest value, and the latest quality run, in one
    snapshot."""
    products: dict[str, ProductReading] = {}
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        for product in domain.products:
            rows, newest = await measure(conn, product)
            sla = product.freshness.total_seconds() if product.freshness else None
            products[product.name] = ProductReading(rows, _unix_time(newest), sla)
        run = await latest_run(conn)
    states.products = products
    if run is not None:
        states.quality = quality_reading(run)


@asynccontextmanager
async def state_reader(
    domain: Domain, database: Database, states: ProductStates, interval_seconds: float
) -> AsyncIterator[None]:
    """While inside, read the domain's product states every `interval_seconds`, the first time
    one interval after start, so that a service whose database is down does not give a pool
    connection to its metrics while it starts (0: once, at start; quality runs update theirs
    in any case)."""

    async def read() -> None:
        async with database.connection() as conn:
            await read_states(conn, domain, states)

    name = f"metrics reading of the {domain.name} domain"
    if interval_seconds <= 0:
        try:
            await read()
        except Exception:  # the service serves without them; the next quality run tells
            _log.exception("%s failed", name)
        yield
        return
    async with every(name, interval_seconds, read, _log, first_after=interval_seconds):
        yield
