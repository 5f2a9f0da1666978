"""Loading a domain's sample rows into an empty database, once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from shared.declarations.products import Domain
from shared.settings import asyncpg_url
from shared.sql import quote_ident
from shared.storage.views import refresh_views_if_present

_LOCK = 7_301_202_401  # advisory lock: two loaders never interleave


async def load_if_empty(domain: Domain, url: str, rows: dict[str, list[dict[str, Any]]]) -> bool:
    """Load the rows if every table they fill is empty; True if they were loaded.

    All tables are filled in one transaction: a failure leaves the database as it was.
    """
    conn = await asyncpg.connect(asyncpg_url(url).replace("postgresql+asyncpg", "postgresql"))
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            for table in rows:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)})"):
                    return False
            for table, records in rows.items():
                if not records:
                    continue
                columns = list(records[0])
                await conn.copy_records_to_table(
                    table, records=[tuple(r[c] for c in columns) for r in records], columns=columns
                )
            for product in domain.products:
                if product.is_table and product.source in rows and len(product.key) == 1:
                    key = product.key[0]
                    await conn.execute(
                        "SELECT setval(pg_get_serial_sequence($1, $2), "
                        f"(SELECT coalesce(max({quote_ident(key)}), 0) + 1 FROM "
                        f"{quote_ident(product.source)}), false)",
                        product.source,
                        key,
                    )
            await refresh_views_if_present(conn)
        return True
    finally:
        await conn.close()


Generator = Callable[[asyncpg.Connection], Awaitable[None]]


async def seed_if_empty(domain: Domain, url: str, generate: Generator) -> bool:
    """Fill an empty database with set-based SQL; True if it was empty and is now filled.

    One transaction: foreign keys, unique constraints and secondary indexes of the domain's
    tables are dropped, `generate` runs, then they are created again (a bulk build is much
    faster than maintaining them row by row; re-adding them validates every row), the serial
    sequences are moved past the data, and the tables analyzed. A failure leaves the database
    as it was.
    """
    tables = [p.source for p in domain.products if p.is_table]
    conn = await asyncpg.connect(asyncpg_url(url).replace("postgresql+asyncpg", "postgresql"))
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            for table in tables:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)})"):
                    return False
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await conn.execute("SET LOCAL work_mem = '64MB'")
            constraints = await conn.fetch(
                "SELECT conrelid::regclass::text AS tbl, conname, contype, "
                "pg_get_constraintdef(oid) AS def FROM pg_constraint "
                "WHERE contype IN ('f', 'u') AND conrelid = ANY($1::regclass[]) "
                "ORDER BY contype = 'f' DESC, conname",
                tables,
            )
            indexes = await conn.fetch(
                "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def "
                "FROM pg_index AS i WHERE i.indrelid = ANY($1::regclass[]) AND NOT i.indisprimary "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)"
                " ORDER BY 1",
                tables,
            )
            for c in constraints:  # foreign keys first: they depend on the unique ones
                await conn.execute(
                    f"ALTER TABLE {c['tbl']} DROP CONSTRAINT {quote_ident(c['conname'])}"
                )
            for i in indexes:
                await conn.execute(f"DROP INDEX {i['name']}")
            await generate(conn)
            for i in indexes:
                await conn.execute(i["def"])
            for c in reversed(constraints):  # unique ones first, then the foreign keys
                await conn.execute(
                    f"ALTER TABLE {c['tbl']} ADD CONSTRAINT {quote_ident(c['conname'])} {c['def']}"
                )
            for product in domain.products:
                if product.is_table and len(product.key) == 1:
                    key = product.key[0]
                    await conn.execute(
                        "SELECT setval(pg_get_serial_sequence($1, $2), "
                        f"(SELECT coalesce(max({quote_ident(key)}), 0) + 1 FROM "
                        f"{quote_ident(product.source)}), false)",
                        product.source,
                        key,
                    )
            for table in tables:
                await conn.execute(f"ANALYZE {quote_ident(table)}")
            await refresh_views_if_present(conn)
            for view in (p.source for p in domain.products if not p.is_table):
                await conn.execute(f"ANALYZE {quote_ident(view)}")
        return True
    finally:
        await conn.close()
