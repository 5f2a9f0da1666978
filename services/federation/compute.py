"""Running a metric: its inputs as Arrow tables, joined in an in-process DuckDB."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from services.federation.fetch import Period
from services.federation.metrics import MACROS, Metric
from shared.reading.formats import arrow_schema


def compute(metric: Metric, inputs: dict[str, pa.Table], period: Period) -> pa.Table:
    """The metric's rows, typed as its declared columns."""
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        for macro in MACROS:
            connection.execute(macro)
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
