"""Data versions: a cheap number per product that moves on every committed write to it, so that
a reader that has its rows can ask "changed since?" and get `304 Not Modified` when not
(docs/reading.md, "Conditional reads").

- **A table** product: `compacted + count(data_changes)` of its table. A statement-level
  trigger on the table (`<table>_marks_data_change`, installed after each migration from the
  declarations by `track`) appends a row to `data_changes` in the writing transaction, so the
  version moves exactly when that transaction commits, and not at all if it rolls back. The
  rows are compacted into `data_versions` now and then (`compact`), in one statement that keeps
  the sum.
- **A view** (materialized, shared.storage.views): the time of its last refresh, in
  microseconds, which the refresh writes in the same transaction as the rows.
- Anything else (a table without the trigger, a view computed on each read): no version; its
  reads carry no ETag and are always answered whole.

A reader must read the version **before** the rows (or in the same snapshot): rows newer than
their version only cost a needless re-read later; rows older than it would be stale forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.declarations.products import Domain, Product
from shared.sql import quote_ident

MARK_FUNCTION = "datamesh_mark_data_change"
COMPACT_FUNCTION = "datamesh_compact_data_changes"
TRIGGER_SUFFIX = "_marks_data_change"
# compact once a table's change rows pass this many (a version read counts them)
COMPACT_ABOVE = 1_000

TABLE_VERSION = (
    "SELECT coalesce((SELECT compacted FROM data_versions WHERE table_name = $1), 0) "
    "+ c.n, c.n FROM (SELECT count(*) AS n FROM data_changes WHERE table_name = $1) c"
)
VIEW_VERSION = (
    "SELECT coalesce((extract(epoch FROM refreshed_at) * 1000000)::bigint, 0), 0 "
    "FROM view_refreshes"
)


def trigger_name(table: str) -> str:
    return f"{table}{TRIGGER_SUFFIX}"


async def track(conn: asyncpg.Connection, domain: Domain) -> list[str]:
    """Install the marking trigger on every table the domain publishes (as the schema owner,
    after a migration: idempotent), and move every table's version: a migration may have
    changed rows while a trigger was not there (a table dropped and made again). The tables
    tracked; none if the database predates the framework's data versions."""
    if not await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", f"{MARK_FUNCTION}()"):
        return []
    tracked = []
    for product in domain.products:
        if not product.is_table:
            continue
        table = quote_ident(product.source)
        await conn.execute(
            f"CREATE OR REPLACE TRIGGER {quote_ident(trigger_name(product.source))} "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {MARK_FUNCTION}()"
        )
        await conn.execute("INSERT INTO data_changes (table_name) VALUES ($1)", product.source)
        tracked.append(product.source)
    return tracked


@dataclass(frozen=True)
class Versions:
    """Which of a domain's products have a data version, and how it is read (found once, at
    the service's start, from the database's catalogue)."""

    statements: dict[str, str]  # product name -> the statement reading its version

    @classmethod
    async def find(cls, conn: asyncpg.Connection, domain: Domain) -> Versions:
        triggers = set(
            await conn.fetchval(
                "SELECT coalesce(array_agg(c.relname::text), '{}') FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname::text = "
                "c.relname::text || $1 AND NOT t.tgisinternal",
                TRIGGER_SUFFIX,
            )
        )
        materialized = set(
            await conn.fetchval(
                "SELECT coalesce(array_agg(matviewname::text), '{}') FROM pg_matviews "
                "WHERE schemaname = 'public'"
            )
        )
        refreshes = await conn.fetchval("SELECT to_regclass('view_refreshes') IS NOT NULL")
        statements = {}
        for product in domain.products:
            if product.is_table and product.source in triggers:
                statements[product.name] = TABLE_VERSION
            elif not product.is_table and refreshes and product.source in materialized:
                statements[product.name] = VIEW_VERSION
        return cls(statements)

    def versioned(self, product: Product) -> bool:
        return product.name in self.statements

    async def read(self, conn: asyncpg.Connection, product: Product) -> tuple[int, int] | None:
        """The product's version, and how many change rows it counted (None: unversioned)."""
        statement = self.statements.get(product.name)
        if statement is None:
            return None
        args = (product.source,) if statement is TABLE_VERSION else ()
        row = await conn.fetchrow(statement, *args)
        assert row is not None
        return int(row[0]), int(row[1])


async def compact(conn: asyncpg.Connection) -> int:
    """Fold the change rows into data_versions (versions unchanged); the tables compacted."""
    return int(await conn.fetchval(f"SELECT {COMPACT_FUNCTION}()"))
