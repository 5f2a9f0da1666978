"""The SQL of writes: inserts, updates, upserts and row locks of declared tables, on the
request's own transaction; and the database's refusals as problems naming the constraint.

Identifiers come only from declarations (quoted); every value is a bound parameter. Nothing
here commits: the request's transaction does, once, when the whole write succeeded.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from shared.declarations.products import Domain, Product
from shared.errors import Problem
from shared.reading.values import sql_type
from shared.sql import quote_ident
from shared.writing.inputs import TableWrites, WriteContext

_SUFFIXES = ("_pkey", "_fkey", "_key", "_check", "_idx", "_excl")


def _key(product: Product) -> str:
    return quote_ident(product.key[0])


def _columns(product: Product) -> str:
    return ", ".join(quote_ident(c.name) for c in product.stored_columns)


async def insert_row(conn: asyncpg.Connection, product: Product, values: Mapping[str, Any]) -> Any:
    """Insert one row of the table; its key."""
    names = list(values)
    columns = ", ".join(quote_ident(n) for n in names)
    params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    return await conn.fetchval(
        f"INSERT INTO {quote_ident(product.source)} ({columns}) VALUES ({params}) "
        f"RETURNING {_key(product)}",
        *values.values(),
    )


async def upsert_row(
    conn: asyncpg.Connection,
    product: Product,
    values: Mapping[str, Any],
    conflict: Sequence[str],
) -> tuple[Any, bool]:
    """Insert the row, or replace the one with the same natural key (`conflict`, a unique
    constraint's columns); its key and whether it was inserted."""
    names = list(values)
    columns = ", ".join(quote_ident(n) for n in names)
    params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    updates = ", ".join(
        f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n in names if n not in conflict
    )
    row = await conn.fetchrow(
        f"INSERT INTO {quote_ident(product.source)} ({columns}) VALUES ({params}) "
        f"ON CONFLICT ({', '.join(quote_ident(c) for c in conflict)}) DO UPDATE SET {updates} "
        f"RETURNING {_key(product)}, (xmax = 0) AS inserted",
        *values.values(),
    )
    assert row is not None
    return row[0], bool(row[1])


async def update_row(
    conn: asyncpg.Connection, product: Product, key: Any, changes: Mapping[str, Any]
) -> None:
    """Change columns of the row with this key."""
    if not changes:
        return
    names = list(changes)
    assignments = ", ".join(f"{quote_ident(n)} = ${i}" for i, n in enumerate(names, start=1))
    await conn.execute(
        f"UPDATE {quote_ident(product.source)} SET {assignments} "
        f"WHERE {_key(product)} = ${len(names) + 1}",
        *changes.values(),
        key,
    )


async def correct_row(
    conn: asyncpg.Connection, product: Product, key: Any, changes: Mapping[str, Any]
) -> bool:
    """Set columns of the row with this key as given (an owner's correction), without reading
    the row first (it may hold values Python cannot); whether there was such a row."""
    names = list(changes)
    assignments = ", ".join(f"{quote_ident(n)} = ${i}" for i, n in enumerate(names, start=1))
    found = await conn.fetchval(
        f"UPDATE {quote_ident(product.source)} SET {assignments} "
        f"WHERE {_key(product)} = ${len(names) + 1} RETURNING true",
        *changes.values(),
        key,
    )
    return bool(found)


async def delete_row(
    conn: asyncpg.Connection, domain: Domain, writes: TableWrites, key: Any
) -> bool:
    """Delete the row with this key and its declared children; whether there was such a row.
    A row other rows still refer to raises the database's ForeignKeyViolationError."""
    product = domain.product(writes.product)
    assert product is not None
    if writes.children:
        child = domain.product(writes.children.product)
        assert child is not None
        await conn.execute(
            f"DELETE FROM {quote_ident(child.source)} "
            f"WHERE {quote_ident(writes.children.parent_key)} = $1",
            key,
        )
    found = await conn.fetchval(
        f"DELETE FROM {quote_ident(product.source)} WHERE {_key(product)} = $1 RETURNING true", key
    )
    return bool(found)


async def lock_row(
    conn: asyncpg.Connection, product: Product, where: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The stored columns of the row matching `where` (its key, or a natural key), locked
    until the transaction ends; None if there is none."""
    conditions = " AND ".join(f"{quote_ident(n)} = ${i}" for i, n in enumerate(where, start=1))
    row = await conn.fetchrow(
        f"SELECT {_columns(product)} FROM {quote_ident(product.source)} "
        f"WHERE {conditions} FOR UPDATE",
        *where.values(),
    )
    return dict(row) if row is not None else None


async def rows_by_key(
    conn: asyncpg.Connection, product: Product, keys: Sequence[Any], columns: Sequence[str]
) -> dict[Any, dict[str, Any]]:
    """Columns of the rows whose key is among `keys`, by key."""
    key = product.column(product.key[0])
    assert key is not None
    for name in columns:
        if product.column(name) is None:
            raise ValueError(f"product '{product.name}' declares no column '{name}'")
    selected = ", ".join(quote_ident(c) for c in dict.fromkeys((key.name, *columns)))
    rows = await conn.fetch(
        f"SELECT {selected} FROM {quote_ident(product.source)} "
        f"WHERE {_key(product)} = ANY($1::{sql_type(key)}[])",
        list(keys),
    )
    return {row[key.name]: dict(row) for row in rows}


async def transaction_time(conn: asyncpg.Connection) -> dt.datetime:
    """The transaction's time (now()): what timestamps of this write are set to."""
    now: dt.datetime = await conn.fetchval("SELECT now()")
    return now


class TransactionContext(WriteContext):
    """The WriteContext of one request's transaction."""

    def __init__(self, conn: asyncpg.Connection, domain: Domain, now: dt.datetime):
        self.conn = conn
        self.domain = domain
        self.now = now

    async def rows(
        self, product: str, keys: Sequence[Any], columns: Sequence[str]
    ) -> dict[Any, dict[str, Any]]:
        declared = self.domain.product(product)
        if declared is None or not declared.is_table:
            raise ValueError(f"domain '{self.domain.name}' declares no table '{product}'")
        return await rows_by_key(self.conn, declared, keys, columns)


# --- the database's refusals -----------------------------------------------------------------


class ConstraintViolation(Problem):
    """A write the database refused by one of its constraints, named in `constraint`."""

    status = 422
    code = "constraint_violation"
    title = "Constraint violation"


class WriteConflict(Problem):
    status = 409
    code = "write_conflict"
    title = "Write conflict"


_KINDS: tuple[tuple[type[asyncpg.PostgresError], int, str, str], ...] = (
    (asyncpg.UniqueViolationError, 409, "unique_violation", "another row already has this value"),
    (
        asyncpg.ForeignKeyViolationError,
        422,
        "foreign_key_violation",
        "the row it refers to does not exist",
    ),
    (asyncpg.CheckViolationError, 422, "check_violation", "the value breaks a rule of the table"),
    (asyncpg.NotNullViolationError, 422, "not_null_violation", "a value is required"),
    (asyncpg.ExclusionViolationError, 409, "exclusion_violation", "it overlaps another row"),
)


def constrained_fields(product: Product | None, table: str | None, constraint: str) -> list[str]:
    """The declared columns a constraint name mentions (`customers_email_key`: email), by the
    naming convention of the migrations (<table>_<columns>_<kind>)."""
    if product is None:
        return []
    middle = constraint
    if table and middle.startswith(table + "_"):
        middle = middle[len(table) + 1 :]
    for suffix in _SUFFIXES:
        if middle.endswith(suffix):
            middle = middle[: -len(suffix)]
            break
    return [
        c.name
        for c in product.stored_columns
        if re.search(rf"(^|_){re.escape(c.name)}(_|$)", middle)
    ]


def database_problem(exc: asyncpg.PostgresError, domain: Domain) -> Problem | None:
    """The problem a write refused by the database answers (None: not a refusal of the data,
    such as a lost connection or a timeout, which are not this module's to answer). Values
    never appear in it: the database's own detail can carry PII."""
    table = getattr(exc, "table_name", None)
    product = next((p for p in domain.products if p.is_table and p.source == table), None)
    where = f" of {product.name}" if product else ""
    for kind, status, code, reason in _KINDS:
        if isinstance(exc, kind):
            constraint = getattr(exc, "constraint_name", None) or ""
            fields = constrained_fields(product, table, constraint) if constraint else []
            column = getattr(exc, "column_name", None)
            if column and column not in fields:
                fields.append(column)
            named = f"constraint '{constraint}'" if constraint else "a constraint"
            on = f" on {', '.join(fields)}" if fields else ""
            problem = ConstraintViolation(
                f"The write breaks {named}{where}{on}: {reason}.",
                constraint=constraint or None,
                table=product.name if product else None,
                fields=fields,
            )
            problem.status, problem.code = status, code
            return problem
    if isinstance(exc, asyncpg.ProgramLimitExceededError):
        # a value too large for an index or a row ("index row size exceeds btree maximum"):
        # the declared lengths keep values below it; named by the index it did not fit
        index = getattr(exc, "constraint_name", None)
        if index is None and (found := re.search(r'index "([^"]+)"', str(exc))):
            index = found.group(1)
        if product is None and index:  # the index's name begins with its table's
            tables = [p for p in domain.products if p.is_table and index.startswith(p.source + "_")]
            product = max(tables, key=lambda p: len(p.source), default=None)
            table = product.source if product else None
            where = f" of {product.name}" if product else ""
        fields = constrained_fields(product, table, index) if index else []
        on = f" ({', '.join(fields)})" if fields else ""
        problem = ConstraintViolation(
            f"A value{where}{on} is too large for the database to store or index; shorten it.",
            constraint=index,
            table=product.name if product else None,
            fields=fields,
        )
        problem.code = "value_too_large"
        return problem
    if isinstance(exc, asyncpg.DataError):
        problem = ConstraintViolation(
            f"The database refused a value{where}: {type(exc).__name__} (for example a number "
            "out of its column's range).",
            table=product.name if product else None,
            fields=[],
        )
        problem.code = "invalid_for_database"
        return problem
    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        return WriteConflict(
            "The write collided with a concurrent one and was rolled back; retry it.",
            headers={"Retry-After": "1"},
        )
    return None
