"""Materialized analytics views at run time (the schema is shared.storage.view_schema): the refresher a
domain service runs in the background, and the freshness its metadata reports.

The promise: a write committed to a domain's tables is reflected in its analytics views within
the domain's `ServiceLevels.view_freshness`. The refresher looks for marked changes every
`DATAMESH_VIEW_REFRESH_SECONDS` (1 s by default) and refreshes every view of the domain
concurrently (readers keep reading the previous rows meanwhile); of several service processes
the leader refreshes (shared.storage.leader), and two refreshes never overlap in any case.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from shared.declarations.products import Domain
from shared.schedule import every
from shared.storage.db import Database
from shared.storage.view_schema import REFRESH_ERRORS_TABLE, REFRESH_FUNCTION

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


async def refresh_and_note(conn: asyncpg.Connection, domain: Domain) -> int:
    """Refresh the domain's views if their sources changed (refresh_views), noting a failure
    (the database's message, never a value) in the metadata's freshness and in the log until
    a refresh succeeds again. The changes seen, -1 if another refresh is running, or -2 if it
    failed."""
    try:
        seen = await refresh_views(conn)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            raise
        error = f"{type(exc).__name__}: {exc}"
        since = await conn.fetchval(
            f"UPDATE {REFRESH_ERRORS_TABLE} SET last_error = $1, last_failed_at = now(), "
            "failing_since = coalesce(failing_since, now()) RETURNING failing_since",
            error,
        )
        _log.error(
            "refreshing the %s views failed (failing since %s; they keep the rows of their last "
            "refresh): %s",
            domain.name,
            _iso(since),
            error,
        )
        return -2
    if seen > 0:
        recovered = await conn.fetchval(
            f"UPDATE {REFRESH_ERRORS_TABLE} SET last_error = NULL, failing_since = NULL "
            "WHERE failing_since IS NOT NULL RETURNING true"
        )
        if recovered:
            _log.warning("refreshing the %s views succeeds again", domain.name)
        _log.info("refreshed the %s views after %s changes", domain.name, seen)
    return seen


def view_refresher(
    domain: Domain,
    database: Database,
    interval_seconds: float,
    leads: Callable[[], bool] | None = None,
) -> AbstractAsyncContextManager[None]:
    """While inside, refresh the domain's views whenever their sources changed, looking every
    `interval_seconds` (0: never; a domain without views: never), while `leads` says this
    process leads the domain's background jobs (shared.storage.leader)."""

    async def run() -> None:
        async with database.connection() as conn:
            await refresh_and_note(conn, domain)

    interval = interval_seconds if has_views(domain) else 0
    return every(f"view refresh of the {domain.name} domain", interval, run, _log, only_if=leads)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


async def view_freshness(conn: asyncpg.Connection, domain: Domain) -> dict[str, Any]:
    """How fresh the domain's views are: the instant their rows are as of (every write
    committed before it is in them), the last refresh, and the oldest change not yet in them."""
    row = await conn.fetchrow(
        "SELECT data_as_of, refreshed_at, duration_ms, "
        "(SELECT min(changed_at) FROM view_changes) AS pending_since, e.last_error, "
        f"e.failing_since, e.last_failed_at FROM view_refreshes, {REFRESH_ERRORS_TABLE} AS e"
    )
    assert row is not None
    return {
        "mechanism": MECHANISM,
        "promise_seconds": domain.service_levels.view_freshness.total_seconds(),
        "data_as_of": _iso(row["data_as_of"]),
        "refreshed_at": _iso(row["refreshed_at"]),
        "refresh_ms": row["duration_ms"],
        "pending_since": _iso(row["pending_since"]),
        # a refresh failing since then (null while refreshes succeed), and why, last time
        "failing_since": _iso(row["failing_since"]),
        "last_error": row["last_error"],
        "last_failed_at": _iso(row["last_failed_at"]),
    }
