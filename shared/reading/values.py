"""Typed values of declared columns: parsing from URLs and cursors, SQL types, Arrow types."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from shared.declarations.products import Column, ColumnType
from shared.errors import InvalidValue


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise ValueError("not a finite number")
    return value


def _timestamp(text: str) -> dt.datetime:
    # a '+' of an offset arrives as a space when the caller did not percent-encode it
    value = dt.datetime.fromisoformat(text[:11] + text[11:].replace(" ", "+"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered == "true"


_PARSERS: dict[ColumnType, Callable[[str], Any]] = {
    ColumnType.TEXT: str,
    ColumnType.INTEGER: int,
    ColumnType.BIGINT: int,
    ColumnType.MONEY: _decimal,
    ColumnType.DECIMAL: _decimal,
    ColumnType.DATE: dt.date.fromisoformat,
    ColumnType.TIMESTAMP: _timestamp,
    ColumnType.BOOLEAN: _boolean,
}

_EXPECTED = {
    ColumnType.TEXT: "text",
    ColumnType.INTEGER: "an integer",
    ColumnType.BIGINT: "an integer",
    ColumnType.MONEY: "a decimal number",
    ColumnType.DECIMAL: "a decimal number",
    ColumnType.DATE: "an ISO 8601 date (YYYY-MM-DD)",
    ColumnType.TIMESTAMP: "an ISO 8601 timestamp",
    ColumnType.BOOLEAN: "true or false",
}

_INT32 = 2**31
_INT64 = 2**63
# PostgreSQL's numeric: at most 131072 digits before the decimal point, 16383 after
_NUMERIC_DIGITS_BEFORE, _NUMERIC_DIGITS_AFTER = 131_072, 16_383


def _out_of_range(column: Column, value: Any) -> str | None:
    if column.type is ColumnType.INTEGER and not -_INT32 <= value < _INT32:
        return "a 32-bit integer"
    if column.type is ColumnType.BIGINT and not -_INT64 <= value < _INT64:
        return "a 64-bit integer"
    if column.type in (ColumnType.MONEY, ColumnType.DECIMAL):
        digits_before, digits_after = value.adjusted() + 1, -value.as_tuple().exponent
        if digits_before > _NUMERIC_DIGITS_BEFORE or digits_after > _NUMERIC_DIGITS_AFTER:
            return "a PostgreSQL numeric"
    return None


def parse_value(column: Column, text: str, *, parameter: str) -> Any:
    """The Python value of `text` for the column, or a 400 naming the parameter and value.

    Numbers, dates, timestamps and booleans are ASCII: Python would read other scripts' digits
    (full-width, Arabic-Indic) as numbers, PostgreSQL and PostgREST do not."""
    try:
        if column.type is not ColumnType.TEXT and not text.isascii():
            raise ValueError("only ASCII digits and signs")
        value = _PARSERS[column.type](text)
    except (ValueError, InvalidOperation, ArithmeticError):
        raise InvalidValue(
            f"Parameter '{parameter}' has value '{text}'; column '{column.name}' "
            f"expects {_EXPECTED[column.type]}.",
            parameter=parameter,
            value=text,
        ) from None
    if column.type is ColumnType.TEXT and "\x00" in value:
        # PostgreSQL text cannot hold a NUL character: the database would refuse the value
        raise InvalidValue(
            f"Parameter '{parameter}' has value {text!r}, which contains a NUL character.",
            parameter=parameter,
            value=text,
        )
    if (kind := _out_of_range(column, value)) is not None:
        raise InvalidValue(
            f"Parameter '{parameter}' has value '{text}', out of range for column "
            f"'{column.name}' ({kind}).",
            parameter=parameter,
            value=text,
        )
    return value


def format_value(value: Any) -> str | None:
    """The text form of a column value, as parse_value reads it back."""
    if value is None:
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def sql_type(column: Column) -> str:
    """The PostgreSQL type of a declared column."""
    return {
        ColumnType.TEXT: "text",
        ColumnType.INTEGER: "integer",
        ColumnType.BIGINT: "bigint",
        ColumnType.MONEY: f"numeric({column.precision},2)",
        ColumnType.DECIMAL: f"numeric({column.precision},{column.scale})",
        ColumnType.DATE: "date",
        ColumnType.TIMESTAMP: "timestamptz",
        ColumnType.BOOLEAN: "boolean",
    }[column.type]


def bind_type(column: Column, exact_numeric: str = "numeric") -> str:
    """The SQL type a value compared with the column is bound as.

    Numbers bind as an unconstrained exact type, not the column's numeric(p,s): a cast to the
    column's scale would round the value (gt.12.345 would mean > 12.35), while PostgREST
    compares exactly.
    """
    if column.type in (ColumnType.MONEY, ColumnType.DECIMAL):
        return exact_numeric
    return sql_type(column)


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type of a declared column (money and decimals stay exact)."""
    return {
        ColumnType.TEXT: pa.string(),
        ColumnType.INTEGER: pa.int32(),
        ColumnType.BIGINT: pa.int64(),
        ColumnType.MONEY: pa.decimal128(column.precision, 2),
        ColumnType.DECIMAL: pa.decimal128(column.precision, column.scale),
        ColumnType.DATE: pa.date32(),
        ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
        ColumnType.BOOLEAN: pa.bool_(),
    }[column.type]


def json_schema(column: Column) -> dict[str, Any]:
    """The JSON Schema of a declared column's values, for OpenAPI."""
    base: dict[ColumnType, dict[str, Any]] = {
        ColumnType.TEXT: {"type": "string"},
        ColumnType.INTEGER: {"type": "integer", "format": "int32"},
        ColumnType.BIGINT: {"type": "integer", "format": "int64"},
        ColumnType.MONEY: {"type": "number", "multipleOf": 0.01},
        ColumnType.DECIMAL: {"type": "number"},
        ColumnType.DATE: {"type": "string", "format": "date"},
        ColumnType.TIMESTAMP: {"type": "string", "format": "date-time"},
        ColumnType.BOOLEAN: {"type": "boolean"},
    }
    schema = dict(base[column.type])
    if column.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    schema["description"] = column.description
    schema["x-classification"] = str(column.classification)
    return schema
