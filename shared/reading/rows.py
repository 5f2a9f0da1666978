"""The reads of a data product: every query the framework sends for a ReadQuery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import asyncpg
import orjson
import pyarrow as pa

from shared.reading.formats import (
    Counted,
    Format,
    Page,
    arrow_schema,
    csv_to_arrow,
    encode_arrow,
    encode_ndjson,
    encode_parquet,
)
from shared.reading.query import ReadQuery, SqlBuilder, order_by
from shared.security.pseudonym import PseudonymKey
from shared.settings import ServiceSettings
from shared.sql import quote_ident
from shared.storage.db import Database, connection_lost


def _json_row(sql: SqlBuilder, query: ReadQuery) -> str:
    # compact JSON in declaration order; numeric keeps its scale (money prints 2 decimals)
    return f"(SELECT row_to_json(r) FROM (SELECT {sql.outputs(query)}) r)::text"


def _select(
    sql: SqlBuilder, query: ReadQuery, outputs: str, *, limit: int | None
) -> tuple[str, list[Any]]:
    """The statement reading the outputs (already written with `sql`, whose parameters come
    first) of the rows the query matches, in its order."""
    statement = (
        f"SELECT {outputs} FROM {quote_ident(query.product.source)} s"
        f"{sql.where(query)}{order_by(query)}"
    )
    if limit is not None:
        sql.args.append(limit)
        statement += f" LIMIT ${len(sql.args)}"
    if query.offset:
        sql.args.append(query.offset)
        statement += f" OFFSET ${len(sql.args)}"
    return statement, sql.args


def json_page_statement(
    query: ReadQuery, size: int, pseudonym: PseudonymKey | None
) -> tuple[str, list[Any]]:
    """The statement of a JSON page: up to `size` + 1 rows (one more tells that more follow),
    each its JSON text then its keyset values."""
    sql = SqlBuilder(pseudonym=pseudonym)
    # the keyset: the order (never a masked column: parse_read refuses it) and the key
    keys = ", ".join(quote_ident(t.column.name) for t in query.keyset)
    return _select(sql, query, f"{_json_row(sql, query)}, {keys}", limit=size + 1)


async def page_as_json(
    conn: asyncpg.Connection, query: ReadQuery, size: int, pseudonym: PseudonymKey | None
) -> tuple[list[str], tuple[Any, ...] | None]:
    """Up to `size` rows as JSON texts, and the keyset of the last one if more rows follow."""
    statement, args = json_page_statement(query, size, pseudonym)
    rows = await conn.fetch(statement, *args)
    more = len(rows) > size
    rows = rows[:size]
    last = tuple(rows[-1][1:]) if more and rows else None
    return [r[0] for r in rows], last


async def _cursor_batches(
    conn: asyncpg.Connection, statement: str, args: list[Any], batch_rows: int
) -> AsyncGenerator[list[asyncpg.Record], None]:
    """The rows of a statement in batches, through a server-side cursor in a read-only
    transaction. Once every row is read, a commit that fails (the database lost just then)
    loses nothing: the stream still ends whole (the connection is closed, not pooled)."""
    transaction = conn.transaction(readonly=True)
    await transaction.start()
    try:
        cursor = await conn.cursor(statement, *args)
        while rows := await cursor.fetch(batch_rows):
            yield rows
            if len(rows) < batch_rows:  # the last batch: no need to ask again
                break
    except BaseException:
        if not conn.is_closed():
            # a failed rollback leaves the transaction open: the connection is then closed,
            # not pooled (shared.storage.db.Database.connection)
            with contextlib.suppress(Exception):
                await transaction.rollback()
        raise
    try:
        await transaction.commit()
    except Exception as exc:
        if not connection_lost(exc, conn):
            raise


async def json_batches(
    conn: asyncpg.Connection,
    query: ReadQuery,
    batch_rows: int,
    pseudonym: PseudonymKey | None,
    counted: Counted = None,
) -> AsyncGenerator[list[str], None]:
    """Every row as JSON text, in batches, through a server-side cursor."""
    sql = SqlBuilder(pseudonym=pseudonym)
    statement, args = _select(sql, query, _json_row(sql, query), limit=query.limit)
    async with aclosing(_cursor_batches(conn, statement, args, batch_rows)) as batches:
        async for rows in batches:
            if counted is not None:
                counted(len(rows))
            yield [r[0] for r in rows]


async def csv_chunks(
    conn: asyncpg.Connection,
    query: ReadQuery,
    pseudonym: PseudonymKey | None,
    *,
    header: bool = True,
    counted: Counted = None,
) -> AsyncGenerator[bytes, None]:
    """The rows as CSV (with a header line unless not `header`), straight from PostgreSQL's
    COPY (whose status tells `counted` how many rows it sent)."""
    sql = SqlBuilder(pseudonym=pseudonym)
    statement, args = _select(sql, query, sql.outputs(query, as_text=True), limit=query.limit)
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

    async def _copy() -> None:
        try:
            status = await conn.copy_from_query(
                statement, *args, output=chunks.put, format="csv", header=header
            )
            if counted is not None:
                counted(int(status.rsplit(" ", 1)[-1]))  # "COPY <rows>"
        finally:
            await chunks.put(None)

    task = asyncio.create_task(_copy())
    try:
        while (chunk := await chunks.get()) is not None:
            yield bytes(chunk)
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def arrow_batches(
    conn: asyncpg.Connection,
    query: ReadQuery,
    batch_rows: int,
    pseudonym: PseudonymKey | None,
    counted: Counted = None,
) -> AsyncGenerator[pa.RecordBatch, None]:
    """Every row as Arrow record batches of about `batch_rows` rows: PostgreSQL's COPY output
    parsed by Arrow's CSV reader with the declared types, so that no row becomes Python
    objects on the way. A batch is cut only at the end of a record (an even number of quotes
    so far: a quoted value may hold a newline)."""
    schema = arrow_schema(query.output_columns)
    block: list[bytes] = []
    lines = quotes = 0
    copy = csv_chunks(conn, query, pseudonym, header=False, counted=counted)
    async with aclosing(copy) as chunks:
        async for chunk in chunks:
            block.append(chunk)
            lines += chunk.count(b"\n")
            quotes += chunk.count(b'"')
            if lines >= batch_rows and quotes % 2 == 0 and chunk.endswith(b"\n"):
                for batch in csv_to_arrow(schema, b"".join(block)):
                    yield batch
                block, lines, quotes = [], 0, 0
    if block:
        for batch in csv_to_arrow(schema, b"".join(block)):
            yield batch


async def count(
    conn: asyncpg.Connection,
    query: ReadQuery,
    mode: str,
    exact_below: int,
    pseudonym: PseudonymKey | None,
) -> int:
    """The number of rows matching the filters: exact, planned, or estimated (PostgREST's)."""
    sql = SqlBuilder(pseudonym=pseudonym)
    source = f"FROM {quote_ident(query.product.source)}{sql.where(query, keyset=False)}"
    if mode == "exact":
        return int(await conn.fetchval(f"SELECT count(*) {source}", *sql.args))
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 {source}", *sql.args)
    if isinstance(plan, str | bytes):  # decoded already where a json codec is set (SQLAlchemy)
        plan = orjson.loads(plan)
    planned = int(plan[0]["Plan"]["Plan Rows"])
    if mode == "estimated" and planned <= exact_below:
        return int(await conn.fetchval(f"SELECT count(*) {source}", *sql.args))
    return planned


async def rows_before(
    conn: asyncpg.Connection, query: ReadQuery, pseudonym: PseudonymKey | None
) -> int:
    """How many matching rows come before the query's cursor (its page's first position)."""
    if query.after is None:
        return query.offset
    sql = SqlBuilder(pseudonym=pseudonym)
    where = sql.before_cursor(query)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM {quote_ident(query.product.source)}{where}", *sql.args
        )
    )


class DatabaseRows:
    """A product's rows in its domain database (the RowSource of the domain services)."""

    def __init__(
        self,
        database: Database,
        settings: ServiceSettings,
        pseudonym: PseudonymKey | None = None,
        conn: asyncpg.Connection | None = None,
    ):
        self.database = database
        self.settings = settings
        self.pseudonym = pseudonym  # the key of computed (pseudonymous) columns
        self.conn = conn  # a connection the caller holds already (else one from the pool)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.conn is not None:
            yield self.conn
        else:
            async with self.database.connection() as conn:
                yield conn

    async def page(self, query: ReadQuery, size: int, count_mode: str | None) -> Page:
        """A JSON page; its count and position read in the same snapshot."""
        async with self._connection() as conn:
            if not count_mode:  # one statement: a snapshot of its own, no transaction needed
                rows, last = await page_as_json(conn, query, size, self.pseudonym)
                return Page(rows, last, None, query.offset)
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                rows, last = await page_as_json(conn, query, size, self.pseudonym)
                total = await count(
                    conn, query, count_mode, self.settings.max_page_size, self.pseudonym
                )
                return Page(rows, last, total, await rows_before(conn, query, self.pseudonym))

    async def count(self, query: ReadQuery, count_mode: str) -> int:
        """The number of matching rows."""
        async with self._connection() as conn:
            return await count(conn, query, count_mode, self.settings.max_page_size, self.pseudonym)

    async def stream(
        self, query: ReadQuery, fmt: Format, counted: Counted = None
    ) -> AsyncGenerator[bytes, None]:
        """Every matching row in a streaming format, read in batches."""
        batch = self.settings.stream_batch_rows
        # every generator is closed explicitly, innermost last, so that a client that goes
        # away ends the cursor's transaction before the connection returns to the pool
        async with self.database.connection() as conn:
            if fmt is Format.CSV:
                async with aclosing(
                    csv_chunks(conn, query, self.pseudonym, counted=counted)
                ) as chunks:
                    async for chunk in chunks:
                        yield chunk
            elif fmt is Format.NDJSON:
                async with (
                    aclosing(json_batches(conn, query, batch, self.pseudonym, counted)) as lines,
                    aclosing(encode_ndjson(lines)) as chunks,
                ):
                    async for chunk in chunks:
                        yield chunk
            else:
                encode = encode_arrow if fmt is Format.ARROW else encode_parquet
                async with (
                    aclosing(arrow_batches(conn, query, batch, self.pseudonym, counted)) as batches,
                    aclosing(encode(arrow_schema(query.output_columns), batches)) as chunks,
                ):
                    async for chunk in chunks:
                        yield chunk
