"""Running a metric: its inputs as Arrow tables, joined in an in-process DuckDB."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from services.federation.fetch import Input, Period
from services.federation.metrics import MACROS, Metric
from shared.reading.formats import arrow_schema
from shared.reading.tables import duckdb_cursor

_macros_lock = threading.Lock()
_macros_created = False


def _connection() -> duckdb.DuckDBPyConnection:
    """A cursor of the process's DuckDB database, the metrics' macros created in it (once: a
    macro is in the database's catalogue, which every cursor reads)."""
    global _macros_created
    connection = duckdb_cursor()
    with _macros_lock:
        if not _macros_created:
            for macro in MACROS:
                connection.execute(macro)
            _macros_created = True
    return connection


def compute(metric: Metric, inputs: dict[str, pa.Table], period: Period) -> pa.Table:
    """The metric's rows, typed as its declared columns."""
    connection = _connection()
    try:
        for name, table in inputs.items():
            connection.register(name, table)
        parameters = {
            name: value
            for name, value in (("since", period.since), ("until", period.until))
            if f"${name}" in metric.sql
        }
        result: pa.Table = connection.sql(metric.sql, params=parameters or None).to_arrow_table()
        return typed(metric, result)
    finally:
        connection.close()


def typed(metric: Metric, result: pa.Table) -> pa.Table:
    """An engine's result as the metric declares it: its columns, in order, of their types."""
    return result.select(list(metric.product.column_names)).cast(
        arrow_schema(metric.product.columns)
    )


def key_values(keyed: Sequence[Input], tables: dict[str, pa.Table]) -> dict[str, list[Any]]:
    """Each keyed input's keys: its Keys query run over the inputs read already, sorted (the
    same keys, the same request: its ETag revalidates)."""
    found: dict[str, list[Any]] = {}
    for source in keyed:
        assert source.keys is not None
        connection = _connection()
        try:
            for name, table in tables.items():
                connection.register(name, table)
            rows = connection.sql(source.keys.sql).fetchall()
        finally:
            connection.close()
        found[source.name] = sorted({row[0] for row in rows if row[0] is not None})
    return found
