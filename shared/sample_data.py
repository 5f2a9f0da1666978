"""Loading a domain's sample rows into an empty database, once."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.products import Domain
from shared.query import quote_ident
from shared.settings import asyncpg_url

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
        return True
    finally:
        await conn.close()
