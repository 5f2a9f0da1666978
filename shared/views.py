"""Materialized analytics views at run time (the schema is shared.view_schema): the refresher a
domain service runs in the background, and the freshness its metadata reports.

The promise: a write committed to a domain's tables is reflected in its analytics views within
the domain's `ServiceLevels.view_freshness`. The refresher looks for marked changes every
`DATAMESH_VIEW_REFRESH_SECONDS` (1 s by default) and refreshes every view of the domain
concurrently (readers keep reading the previous rows meanwhile); with several service
processes, one refreshes at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from shared.db import Database
from shared.products import Domain
from shared.schedule import every
from shared.view_schema import REFRESH_FUNCTION

_log = logging.getLogger("datamesh.views")

MECHANISM = "materialized view, refreshed concurrently when its source tables change"


def has_views(domain: Domain) -> bool:
    """Whether the domain publishes views (materialized, so refreshed)."""
    return any(not p.is_table for p in domain.products)


async def refresh_views(conn: asyncpg.Connection, *, concurrently: bool = True) -> int:
    """Refresh the domain's views if their sources changed (always, if not `concurrently`:
    a plain refresh, for loaders inside their own transaction). Returns the changes seen, or
    -1 if another refresh is running."""
    seen: int = await conn.fetchval(f"SELECT {REFRESH_FUNCTION}($1)", concurrently)
    return seen


async def refresh_views_if_present(conn: asyncpg.Connection) -> None:
    """A plain refresh, where the database has materialized views (loaders call this last)."""
    if await conn.fetchval(
        "SELECT to_regprocedure($1) IS NOT NULL", f"{REFRESH_FUNCTION}(boolean)"
    ):
        await refresh_views(conn, concurrently=False)


def view_refresher(
    domain: Domain, database: Database, interval_seconds: float
) -> AbstractAsyncContextManager[None]:
    """While inside, refresh the domain's views whenever their sources changed, looking every
    `interval_seconds` (0: never; a domain without views: never)."""

    async def run() -> None:
        async with database.connection() as conn:
            seen = await refresh_views(conn)
        if seen > 0:
            _log.info("refreshed the %s views after %s changes", domain.name, seen)

    interval = interval_seconds if has_views(domain) else 0
    return every(f"view refresh of the {domain.name} domain", interval, run, _log)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


async def view_freshness(conn: asyncpg.Connection, domain: Domain) -> dict[str, Any]:
    """How fresh the domain's views are: the instant their rows are as of (every write
    committed before it is in them), the last refresh, and the oldest change not yet in them."""
    row = await conn.fetchrow(
        "SELECT data_as_of, refreshed_at, duration_ms, "
        "(SELECT min(changed_at) FROM view_changes) AS pending_since FROM view_refreshes"
    )
    assert row is not None
    return {
        "mechanism": MECHANISM,
        "promise_seconds": domain.service_levels.view_freshness.total_seconds(),
        "data_as_of": _iso(row["data_as_of"]),
        "refreshed_at": _iso(row["refreshed_at"]),
        "refresh_ms": row["duration_ms"],
        "pending_since": _iso(row["pending_since"]),
    }
