"""Batches (`POST <table>:batch`): records from NDJSON, CSV or a JSON array, every row checked,
written all or nothing, and on a refusal every bad row listed with its reason."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import Request

from shared.errors import Problem
from shared.writing.inputs import (
    FieldError,
    InvalidBody,
    validate_body,
)
from shared.writing.requests import (
    CSV_TYPE,
    JSON_TYPE,
    MAX_LISTED_ERRORS,
    NDJSON_TYPES,
    InvalidRows,
    UnsupportedMediaType,
    media_type,
)
from shared.writing.store import (
    TransactionContext,
    database_problem,
)
from shared.writing.writer import (
    TableWriter,
)

# --- batches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    message: str

    def document(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


def problem_errors(row: int, refusal: Problem) -> list[RowError]:
    if isinstance(refusal, InvalidBody):
        return [RowError(row, e.field, e.message) for e in refusal.field_errors]
    fields = refusal.extra.get("fields") or []
    return [RowError(row, ", ".join(fields) or None, refusal.detail)]


def batch_records(request: Request, body: bytes, writer: TableWriter) -> list[tuple[int, Any]]:
    """The batch's records, numbered from 1: JSON texts (NDJSON, a JSON array) or dicts of
    text values (CSV)."""
    media = media_type(request)
    if media in NDJSON_TYPES:
        lines = [line.strip() for line in body.split(b"\n")]
        return list(enumerate((line for line in lines if line), start=1))
    if media == JSON_TYPE:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidBody([FieldError("body", f"not valid JSON: {exc}")]) from None
        if not isinstance(items, list):
            raise InvalidBody([FieldError("body", "expected a JSON array of rows")])
        return [(n, orjson.dumps(item)) for n, item in enumerate(items, start=1)]
    if media == CSV_TYPE:
        return _csv_records(body, writer)
    raise UnsupportedMediaType(
        f"A batch is sent as NDJSON ({NDJSON_TYPES[0]}), CSV ({CSV_TYPE}) or a JSON array "
        f"({JSON_TYPE}), not '{media or 'no content type'}'.",
        accepted=[*NDJSON_TYPES, CSV_TYPE, JSON_TYPE],
    )


def _csv_records(body: bytes, writer: TableWriter) -> list[tuple[int, Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidBody([FieldError("body", "CSV must be UTF-8 text")]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    known = writer.batch_body.names
    children = writer.writes.children.field if writer.writes.children else None
    try:
        header = [name.strip() for name in next(reader, [])]
        errors = [
            RowError(0, name, f"unknown column; accepted: {', '.join(known)}")
            for name in header
            if name not in known
        ]
        errors += [
            RowError(0, name, "column given twice")
            for i, name in enumerate(header)
            if name in header[:i]
        ]
        if errors:
            raise InvalidRows(
                "The CSV header names unknown or repeated columns; nothing was written.",
                errors=[e.document() for e in errors[:MAX_LISTED_ERRORS]],
            )
        records: list[tuple[int, Any]] = []
        for number, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue
            record: dict[str, Any] = {}
            if len(values) > len(header):
                record["__extra__"] = values[len(header) :]
            for name, value in zip(header, values, strict=False):
                if value == "":
                    continue
                record[name] = _cell(value) if name == children else value
            records.append((number, record))
    except csv.Error as exc:
        raise InvalidRows(
            f"The CSV is malformed at line {reader.line_num}: {exc}; nothing was written.",
            errors=[{"row": reader.line_num, "field": None, "message": str(exc)}],
        ) from None
    return records


def _cell(value: str) -> Any:
    """A CSV cell holding nested rows (an order's items) as JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value  # the model names the field: expected a list


def _refused(errors: list[RowError], more: bool) -> InvalidRows:
    errors = sorted(errors, key=lambda e: e.row)
    rows = sorted({e.row for e in errors})
    shown = "; ".join(
        f"row {e.row}: {e.field + ': ' if e.field else ''}{e.message}" for e in errors[:5]
    )
    listed = errors[:MAX_LISTED_ERRORS]
    return InvalidRows(
        f"The batch was refused and nothing was written: {len(rows)}{'+' if more else ''} "
        f"rows are invalid ({shown}{'; ...' if len(errors) > 5 else ''}).",
        errors=[e.document() for e in listed],
        rows_rejected=rows if not more else rows[:MAX_LISTED_ERRORS],
        complete=not more and len(errors) <= MAX_LISTED_ERRORS,
    )


async def _diagnose(
    context: TransactionContext,
    writer: TableWriter,
    rows: list[tuple[int, dict[str, Any]]],
    errors: list[RowError],
) -> bool:
    """Write each row in a savepoint of its own, noting the rows refused (up to the listed
    maximum); True if more rows might be bad than were noted."""
    for number, values in rows:
        if len(errors) >= MAX_LISTED_ERRORS:
            return True
        try:
            async with context.conn.transaction():
                await writer.write(context, values)
        except Problem as refusal:
            errors += problem_errors(number, refusal)
        except asyncpg.PostgresError as exc:
            mapped = database_problem(exc, writer.domain)
            if mapped is None:
                raise
            errors += problem_errors(number, mapped)
    return False


async def write_batch(
    context: TransactionContext,
    writer: TableWriter,
    rows: list[tuple[int, dict[str, Any]]],
    errors: list[RowError],
) -> dict[str, Any]:
    """Write every row, all or nothing: fast in one savepoint; on a refusal (or rows already
    invalid), row by row to list every refused row, then refused whole."""
    if not errors:
        savepoint = context.conn.transaction()
        await savepoint.start()
        try:
            written = [await writer.write(context, values) for _, values in rows]
        except (Problem, asyncpg.PostgresError) as exc:
            await savepoint.rollback()
            if (
                isinstance(exc, asyncpg.PostgresError)
                and database_problem(exc, writer.domain) is None
            ):
                raise
        else:
            await savepoint.commit()
            return {
                "product": writer.product.name,
                "rows": len(written),
                "created": sum(1 for _, created in written if created),
                "replaced": sum(1 for _, created in written if not created),
                "keys": [key for key, _ in written],
            }
    more = await _diagnose(context, writer, rows, errors)
    raise _refused(errors, more)


def checked_rows(
    records: list[tuple[int, Any]], writer: TableWriter, *, strict: bool
) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    """Each record checked as one POST body would be (CSV's text values converted: not
    `strict`): the valid rows' values and the errors of the others, by row number."""
    if not records:
        raise InvalidBody([FieldError("body", "the batch has no rows")])
    model = writer.model(writer.batch_body, strict=strict)
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for number, record in records:
        if isinstance(record, dict) and "__extra__" in record:
            errors.append(RowError(number, None, "more values than the header has columns"))
            continue
        try:
            values = validate_body(model, record, known=writer.batch_body.names)
        except InvalidBody as invalid:
            errors += problem_errors(number, invalid)
            continue
        rows.append((number, values.model_dump()))
    return rows, errors
