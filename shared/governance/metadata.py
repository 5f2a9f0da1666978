"""Live metadata of a domain, in the shape of the original platform's catalogue: declared values
from the declarations, measured values (row counts, last update, quality) from the data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.declarations.checks import Freshness
from shared.declarations.products import ColumnType, Domain, Product
from shared.openapi import problem
from shared.reading.routes import pii_scope, product_path
from shared.sql import quote_ident
from shared.storage.db import Database
from shared.storage.views import has_views, view_freshness


def recency_columns(product: Product) -> list[str]:
    """The columns whose newest value tells when a product last changed: its freshness
    check's column, else its timestamp columns."""
    declared = [c.column for c in product.checks if isinstance(c, Freshness)]
    timestamps = [c.name for c in product.columns if c.type is ColumnType.TIMESTAMP]
    return list(dict.fromkeys(declared or timestamps))


async def measure(conn: asyncpg.Connection, product: Product) -> tuple[int, Any]:
    """The product's row count and the newest value of its recency columns (None if none)."""
    source = quote_ident(product.source)
    columns = recency_columns(product)
    # the newest value Python can hold: not PostgreSQL's infinity, nor a year beyond 9999
    newest = (
        "greatest("
        + ", ".join(
            f"max({quote_ident(c)}) FILTER (WHERE {quote_ident(c)} "
            "BETWEEN '0001-01-02' AND '9999-12-30')"
            for c in columns
        )
        + ")"
        if columns
        else "NULL"
    )
    row = await conn.fetchrow(f"SELECT count(*) AS n, {newest} AS newest FROM {source}")
    assert row is not None
    return int(row["n"]), row["newest"]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value.isoformat())


async def domain_metadata(
    domain: Domain,
    conn: asyncpg.Connection,
    scores: dict[str, float],
) -> dict[str, Any]:
    """The domain's metadata, measured now in one snapshot."""
    tables: dict[str, Any] = {}
    read_scope = f"{domain.name}:read"
    freshness = await view_freshness(conn, domain) if has_views(domain) else None
    for product in domain.products:
        row_count, newest = await measure(conn, product)
        tables[product.name] = {
            "kind": "table" if product.is_table else "view",
            "source": product.source,
            "path": product_path(domain.name, product),
            "description": product.description,
            "row_count": row_count,
            "last_updated": _iso(newest),
            "last_updated_from": recency_columns(product),
            "quality_score": scores.get(product.name),
            "columns": [
                {
                    "name": c.name,
                    "type": str(c.type),
                    "nullable": c.nullable,
                    "classification": str(c.classification),
                    "read_in_clear_scope": pii_scope(domain) if c.is_pii else read_scope,
                    "computed_from": c.computed.source if c.computed else None,
                    "description": c.description,
                }
                for c in product.columns
            ],
        }
        if not product.is_table:
            tables[product.name]["freshness"] = freshness
    return {
        "domain": domain.name,
        "owner": domain.owner,
        "description": domain.description,
        "update_frequency": domain.update_frequency,
        "data_classification": domain.data_classification,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        "tables": tables,
    }


def metadata_router(
    domain: Domain,
    database: Callable[[], Database],
    quality_scores: Callable[[asyncpg.Connection], Any],
) -> APIRouter:
    """GET /<domain>/v1/metadata."""
    router = APIRouter()

    @router.get(
        f"/{domain.name}/v1/metadata",
        tags=["catalogue"],
        summary="Domain metadata",
        responses={
            503: problem("The domain database is unreachable (`Retry-After` says when to retry)."),
            504: problem("A query ran longer than the statement timeout (`statement_timeout`)."),
        },
    )
    async def metadata() -> JSONResponse:
        """Owner, classification and, per product, row count, last update and quality score,
        measured from the data at request time."""
        async with (
            database().connection() as conn,
            conn.transaction(readonly=True, isolation="repeatable_read"),
        ):
            scores = await quality_scores(conn)
            return JSONResponse(await domain_metadata(domain, conn, scores))

    return router
