"""Reads of an in-memory Arrow table with the same grammar, via DuckDB (the mesh's products)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from shared.declarations.products import Column
from shared.errors import InvalidValue
from shared.reading.formats import Counted, Format, Page, arrow_schema, encode_arrow, encode_parquet
from shared.reading.query import ReadQuery, SqlBuilder, order_by
from shared.sql import quote_ident

_RELATION = "product_rows"
_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()


def duckdb_cursor() -> duckdb.DuckDBPyConnection:
    """A new connection (a cursor) to the process's one in-memory DuckDB database, in UTC.
    Opening a database costs tens of milliseconds (its extensions, the time zones); a cursor
    costs microseconds, and each is private to its user (its registered tables) and may run
    in its own thread."""
    global _database
    with _database_lock:
        if _database is None:
            database = duckdb.connect()
            database.execute("SET GLOBAL TimeZone = 'UTC'")
            _database = database
        return _database.cursor()


def _builder() -> SqlBuilder:
    # DuckDB's widest exact type; PostgreSQL's unconstrained numeric does not exist there
    return SqlBuilder(exact_numeric="DECIMAL(38, 10)")


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return f'"{value.isoformat()}"'
    return orjson.dumps(value).decode()


def json_texts(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows as compact JSON objects, rendered exactly as the domains' PostgreSQL renders them."""
    keys = [orjson.dumps(c.name).decode() for c in columns]
    return [
        "{"
        + ",".join(f"{k}:{_json_value(row[c.name])}" for k, c in zip(keys, columns, strict=True))
        + "}"
        for row in rows
    ]


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


class TableRows:
    """The rows of a table computed in memory (the RowSource of the mesh's metrics)."""

    def __init__(self, table: pa.Table, columns: Sequence[Column]):
        self.connection = duckdb_cursor()
        self.connection.register(_RELATION, table.cast(arrow_schema(columns)))

    def close(self) -> None:
        """Release the in-memory database."""
        self.connection.close()

    def _run(self, statement: str, args: list[Any]) -> pa.Table:
        try:
            return self.connection.sql(statement, params=args or None).to_arrow_table()
        except duckdb.ConversionException as exc:
            raise InvalidValue(f"A filter value is out of range: {exc}") from None

    def _select(self, query: ReadQuery, extra: str = "", *, limit: int | None) -> pa.Table:
        sql = _builder()
        outputs = sql.outputs(query) + extra  # a masked column is a typed NULL here too
        statement = f"SELECT {outputs} FROM {_RELATION} s{sql.where(query)}{order_by(query)}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        if query.offset:
            statement += f" OFFSET {int(query.offset)}"
        return self._run(statement, sql.args)

    def _count(self, query: ReadQuery, *, before_cursor: bool) -> int:
        sql = _builder()
        where = sql.before_cursor(query) if before_cursor else sql.where(query, keyset=False)
        return int(
            self._run(f"SELECT count(*) AS n FROM {_RELATION} s{where}", sql.args)["n"][0].as_py()
        )

    async def page(self, query: ReadQuery, size: int, count_mode: str | None) -> Page:
        """Up to `size` rows as JSON texts, the keyset of the last one if more follow."""
        keys = [
            f", {quote_ident(t.column.name)} AS {quote_ident(f'_key_{i}')}"
            for i, t in enumerate(query.keyset)
        ]
        rows = self._select(query, "".join(keys), limit=size + 1).to_pylist()
        more = len(rows) > size
        rows = rows[:size]
        last = (
            tuple(rows[-1][f"_key_{i}"] for i in range(len(query.keyset)))
            if more and rows
            else None
        )
        texts = json_texts(query.columns, rows)
        if not count_mode:
            return Page(texts, last, None, query.offset)
        start = self._count(query, before_cursor=True) if query.after is not None else query.offset
        return Page(texts, last, self._count(query, before_cursor=False), start)

    async def count(self, query: ReadQuery, count_mode: str) -> int:
        """The number of matching rows (always exact: the table is in memory)."""
        return self._count(query, before_cursor=False)

    async def stream(
        self, query: ReadQuery, fmt: Format, counted: Counted = None
    ) -> AsyncGenerator[bytes, None]:
        """Every matching row in a streaming format."""
        table = self._select(query, limit=query.limit)
        if counted is not None:
            counted(table.num_rows)
        if fmt is Format.CSV:
            yield _csv(query.columns, table)
        elif fmt is Format.NDJSON:
            lines = json_texts(query.columns, table.to_pylist())
            yield "".join(line + "\n" for line in lines).encode()
        else:
            encode: Callable[..., AsyncIterator[bytes]] = (
                encode_arrow if fmt is Format.ARROW else encode_parquet
            )
            schema = arrow_schema(query.output_columns)
            async for chunk in encode(schema, _batches(table.cast(schema))):
                yield chunk


async def _batches(table: pa.Table) -> AsyncGenerator[pa.RecordBatch, None]:
    for batch in table.to_batches():
        yield batch


def _csv(columns: Sequence[Column], table: pa.Table) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    for row in table.to_pylist():
        writer.writerow([_csv_value(row[c.name]) for c in columns])
    return out.getvalue().encode()
