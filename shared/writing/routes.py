"""A domain's write API, built from its write declarations (shared.writing.inputs): POST, PATCH, PUT
and `:batch` routes for each writable table, all the same way in every domain.

Each request is one transaction: the request's body is checked against the declarations
first, then the write, the row it answers and (with an Idempotency-Key) its kept response are
committed together, or nothing is. A write answers the row exactly as a single-row read does,
with the same ETag.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError

from shared.declarations.products import Domain, Product
from shared.declarations.writes import WriteLogic
from shared.errors import InvalidValue, NotFound, Problem, UnknownParameter
from shared.openapi import problem
from shared.reading.query import Filter, parse_read
from shared.reading.routes import (
    MASKED_COLUMNS,
    ProductReader,
    _row_schema,
    entity_tag,
    masked_header,
    pii_access,
    pii_scope,
    product_path,
)
from shared.reading.rows import page_as_json
from shared.reading.values import parse_value
from shared.security.auth import Forbidden, principal_of, require
from shared.storage.db import Database
from shared.writing.idempotency import HEADER as IDEMPOTENCY_HEADER
from shared.writing.idempotency import (
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    REPLAYED,
    Fingerprint,
    idempotency_key,
    keep_response,
    kept_response,
    lock_key,
)
from shared.writing.inputs import (
    BodyShape,
    FieldError,
    FieldRule,
    InvalidBody,
    TableWrites,
    change_shape,
    correction_shape,
    create_shape,
    field_errors,
    field_rule,
    json_schema,
    key_shape,
    validate_body,
)
from shared.writing.store import (
    TransactionContext,
    correct_row,
    database_problem,
    delete_row,
    insert_row,
    lock_row,
    transaction_time,
    update_row,
    upsert_row,
)

MAX_LISTED_ERRORS = 100
# marks the write operations in OpenAPI (schemathesis.toml adjusts one check on them)
WRITE_EXTENSION = {"x-write": "declared"}
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
CSV_TYPE = "text/csv"
JSON_TYPE = "application/json"


class UnsupportedMediaType(Problem):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class PreconditionFailed(Problem):
    status = 412
    code = "precondition_failed"
    title = "Precondition failed"


class InvalidRows(Problem):
    status = 422
    code = "invalid_rows"
    title = "Invalid rows"


class PiiWrite(Forbidden):
    """A write of a PII column by a caller who reads it masked: refused before the database is
    asked, so that no answer (a unique email taken, a key computed from it) can tell such a
    caller whether a PII value exists."""

    code = "pii_column"
    title = "PII column not permitted"

    def __init__(self, column: str, scope: str):
        super().__init__(
            scope,
            f"Column '{column}' is classified PII: writing it needs the scope '{scope}', which "
            "the token does not carry.",
            column=column,
        )


def _given_fields(record: Any) -> set[str]:
    """The field names a body or batch record gives (none if it is not an object)."""
    if isinstance(record, bytes | str):
        try:
            record = orjson.loads(record)
        except orjson.JSONDecodeError:
            return set()  # validation names what is wrong with it
    return set(record) if isinstance(record, dict) else set()


def _refuse_pii_writes(
    request: Request, domain: Domain, product: Product, records: Sequence[Any]
) -> None:
    """403 if a record gives a PII column of the product and the caller lacks the domain's pii
    scope: writing (or clearing) a PII value needs the right to read it in clear."""
    if pii_access(request, pii_scope(domain)).granted:
        return
    pii = [c.name for c in product.columns if c.is_pii]
    for record in records:
        given = _given_fields(record)
        for name in pii:
            if name in given:
                raise PiiWrite(name, pii_scope(domain))


# --- preconditions -----------------------------------------------------------------------


def _entity_tags(value: str) -> tuple[str, ...]:
    """The entity tags of an If-Match / If-None-Match header (`*` alone, or a list)."""
    tags, current, quoted = [], "", False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            tags.append(current.strip())
            current = ""
        else:
            current += char
    tags.append(current.strip())
    return tuple(t for t in tags if t)


@dataclass(frozen=True)
class Preconditions:
    """If-Match (strong comparison; `*`: the row exists) and If-None-Match (`*`: it does
    not) of a PATCH or PUT."""

    if_match: tuple[str, ...] | None
    if_none_match: tuple[str, ...] | None

    @classmethod
    def of(cls, request: Request) -> Preconditions:
        match, none_match = request.headers.get("if-match"), request.headers.get("if-none-match")
        return cls(
            _entity_tags(match) if match is not None else None,
            _entity_tags(none_match) if none_match is not None else None,
        )

    def check(self, row_json: str | None) -> None:
        """Refuse (412) a write whose preconditions do not hold for the row as it is now."""
        current = entity_tag(row_json) if row_json is not None else None
        if self.if_match is not None:
            if current is None:
                raise PreconditionFailed("If-Match: the row does not exist.")
            if "*" not in self.if_match and current not in self.if_match:
                raise PreconditionFailed(
                    "If-Match: the row has changed since that ETag was read (its ETag is now "
                    f"{current}); read it again and reapply the change.",
                    etag=current,
                )
        if self.if_none_match is not None and current is not None:
            weak = {t.removeprefix("W/") for t in self.if_none_match}
            if "*" in weak or current in weak:
                raise PreconditionFailed("If-None-Match: the row exists.", etag=current)


# --- one table's writes ------------------------------------------------------------------


Precondition = Callable[[Any], Awaitable[None]]


class TableWriter:
    """The writes of one declared table: create, change, replace; domain logic and rules
    applied, statuses moved along their transitions, children written with their parent."""

    def __init__(self, domain: Domain, writes: TableWrites):
        product = domain.product(writes.product)
        assert product is not None
        self.domain = domain
        self.writes = writes
        self.product = product
        self.key = product.key[0]
        self.child: Product | None = None
        if writes.children:
            self.child = domain.product(writes.children.product)
        self.creation = create_shape(domain, writes)
        self.replacement = (
            create_shape(domain, writes, without=writes.upsert_key) if writes.upsert_key else None
        )
        self.natural = key_shape(domain, writes) if writes.upsert_key else None
        self.change_body = change_shape(domain, writes) if writes.updatable else None
        self.batch_body = self.creation  # a batch row is a whole row, natural key included
        self._models: dict[tuple[str, bool], type[BaseModel]] = {}

    def model(self, shape: BodyShape, *, strict: bool) -> type[BaseModel]:
        """The (cached) model of a body shape."""
        cache = (shape.name, strict)
        if cache not in self._models:
            self._models[cache] = shape.model(strict=strict)
        return self._models[cache]

    async def create(self, context: TransactionContext, values: dict[str, Any]) -> Any:
        """Insert a new row (and its children); its key."""
        row = dict(values)
        children: list[dict[str, Any]] = []
        if self.writes.children:
            children = [dict(c) for c in row.pop(self.writes.children.field)]
        transitions = self.writes.transitions
        if transitions:
            status = row.get(transitions.column) or transitions.initial[0]
            row[transitions.column] = status
            if status in transitions.stamps:
                row[transitions.stamps[status]] = context.now
        await self.writes.logic.before_create(context, row, children)
        self.writes.check_row(row)
        key = await insert_row(context.conn, self.product, row)
        if self.writes.children and self.child:
            for child in children:
                child[self.writes.children.parent_key] = key
                await insert_row(context.conn, self.child, child)
        return key

    async def change(
        self,
        context: TransactionContext,
        key: Any,
        changes: dict[str, Any],
        precondition: Precondition,
    ) -> bool:
        """Apply changes to the row with this key, locked first; False if there is none."""
        current = await lock_row(context.conn, self.product, {self.key: key})
        await precondition(key if current is not None else None)
        if current is None:
            return False
        transitions = self.writes.transitions
        if transitions and transitions.column in changes:
            old, new = current[transitions.column], changes[transitions.column]
            transitions.check(old, new)
            if new != old and new in transitions.stamps:
                changes[transitions.stamps[new]] = context.now
        await self.writes.logic.before_update(context, current, changes)
        self.writes.check_row({**current, **changes})
        await update_row(
            context.conn,
            self.product,
            key,
            {name: value for name, value in changes.items() if current.get(name) != value},
        )
        return True

    async def replace(
        self,
        context: TransactionContext,
        values: dict[str, Any],
        precondition: Precondition | None = None,
    ) -> tuple[Any, bool]:
        """Insert or replace the row with the natural key in `values`; its key and whether it
        was created."""
        row = dict(values)
        natural = {name: row[name] for name in self.writes.upsert_key}
        current = await lock_row(context.conn, self.product, natural)
        if precondition:
            await precondition(current[self.key] if current is not None else None)
        await self.writes.logic.before_create(context, row, [])
        self.writes.check_row(row)
        if current is None:
            return await upsert_row(context.conn, self.product, row, self.writes.upsert_key)
        transitions = self.writes.transitions
        if transitions and transitions.column in row:
            transitions.check(current[transitions.column], row[transitions.column])
        key = current[self.key]
        changed = {name: value for name, value in row.items() if current.get(name) != value}
        await update_row(context.conn, self.product, key, changed)
        return key, False

    async def write(self, context: TransactionContext, values: dict[str, Any]) -> tuple[Any, bool]:
        """A batch row: created, or replacing its natural key's row (daily upserts)."""
        if self.writes.upsert_key:
            return await self.replace(context, values)
        return await self.create(context, values), True


# --- rendering rows as the caller reads them ---------------------------------------------


class RowView:
    """A product's row as the caller reads it by key: the same JSON text, masking and ETag."""

    def __init__(self, request: Request, domain: Domain, product: Product, reader: ProductReader):
        self.product = product
        self.pii = pii_access(request, pii_scope(domain))
        self.pseudonym = reader.pseudonym
        self.masked = masked_header(parse_read(product, [], max_limit=None, pii=self.pii))

    def replayed(self, response: Response) -> Response:
        """A kept response replayed to this caller: PII columns answered in clear to the first
        caller are masked (null) for a caller without the pii scope, exactly as its own read
        of the row would answer them (same text, ETag and Masked-Columns)."""
        if self.pii.granted or not self.masked:
            return response
        masked = {name.strip() for name in self.masked[MASKED_COLUMNS].split(",")}
        text = _nulled(bytes(response.body).decode(), masked)
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "etag", MASKED_COLUMNS.lower())
        }
        headers |= {"ETag": entity_tag(text), **self.masked}
        return Response(text, status_code=response.status_code, headers=headers)

    async def render(self, conn: asyncpg.Connection, key: Any) -> str | None:
        """The row's JSON text, or None if there is no such row."""
        query = parse_read(self.product, [], max_limit=None, pii=self.pii)
        column = self.product.column(self.product.key[0])
        assert column is not None
        query.filters.append(Filter(column, "eq", key, negated=False))
        rows, _ = await page_as_json(conn, query, 1, self.pseudonym)
        return rows[0] if rows else None


def _nulled(text: str, names: set[str]) -> str:
    """A JSON object's text with the values of the named members replaced by null, every other
    byte kept (numbers keep their scale, members their order)."""
    decoder = json.JSONDecoder()
    out, i = ["{"], text.index("{") + 1
    while True:
        while text[i] in " \t\r\n,":
            out.append(text[i])
            i += 1
        if text[i] == "}":
            out.append(text[i:])
            return "".join(out)
        name, after_name = decoder.raw_decode(text, i)
        start = text.index(":", after_name) + 1
        while text[start] in " \t\r\n":
            start += 1
        _, end = decoder.raw_decode(text, start)
        out.append(text[i:start])
        out.append("null" if name in names else text[start:end])
        i = end


# --- request plumbing ----------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    media = _media_type(request)
    if media and media != JSON_TYPE and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"The body is sent as '{media}'; this request takes {JSON_TYPE}.",
            accepted=[JSON_TYPE],
        )


def _only(request: Request, allowed: Sequence[str] = ()) -> None:
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise UnknownParameter(
                f"Unknown query parameter '{name}'; accepted here: {known}.", parameter=name
            )


def _url_values(model: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """Values of the URL's parameters, checked by their columns' rules (a 400 naming each)."""
    try:
        return model.model_validate(raw).model_dump()
    except ValidationError as exc:
        errors = field_errors(exc)
        raise InvalidValue(
            "The URL names no valid row: " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=[e.document() for e in errors],
        ) from None


Run = Callable[[TransactionContext], Awaitable[Response]]


async def _transaction(
    request: Request,
    domain: Domain,
    database: Database,
    body: bytes,
    run: Run,
    view: RowView | None = None,
) -> Response:
    """Run a write in one transaction, idempotently when the request carries a key (a replay
    masked for the caller presenting it, through the row's `view`); the database's refusals
    answered as problems naming their constraint."""
    principal = principal_of(request)
    key = idempotency_key(request)
    fingerprint = Fingerprint.of(request, body)
    async with database.connection() as conn:
        try:
            async with conn.transaction():
                if key is not None:
                    await lock_key(conn, principal.subject, key)
                    kept = await kept_response(conn, principal.subject, key)
                    if kept is not None:
                        replay = kept.replay(fingerprint, key)
                        return view.replayed(replay) if view is not None else replay
                context = TransactionContext(conn, domain, await transaction_time(conn))
                response = await run(context)
                if key is not None:
                    await keep_response(conn, principal.subject, key, fingerprint, response)
                return response
        except asyncpg.PostgresError as exc:
            mapped_problem = database_problem(exc, domain)
            if mapped_problem is None:
                raise
            raise mapped_problem from None


async def _row_response(
    conn: asyncpg.Connection,
    view: RowView,
    writer: TableWriter,
    key: Any,
    *,
    created: bool,
) -> Response:
    text = await view.render(conn, key)
    assert text is not None, "a row written in this transaction is readable in it"
    headers = {"ETag": entity_tag(text), **view.masked}
    domain = writer.domain.name
    if created:
        headers["Location"] = f"{product_path(domain, writer.product)}/{key}"
    if writer.writes.children and writer.child:
        related = (
            f"{product_path(domain, writer.child)}?{writer.writes.children.parent_key}=eq.{key}"
        )
        headers["Link"] = f'<{related}>; rel="related"'
    return Response(
        text, status_code=201 if created else 200, media_type=JSON_TYPE, headers=headers
    )


# --- batches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    message: str

    def document(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


def _problem_errors(row: int, refusal: Problem) -> list[RowError]:
    if isinstance(refusal, InvalidBody):
        return [RowError(row, e.field, e.message) for e in refusal.field_errors]
    fields = refusal.extra.get("fields") or []
    return [RowError(row, ", ".join(fields) or None, refusal.detail)]


def _records(request: Request, body: bytes, writer: TableWriter) -> list[tuple[int, Any]]:
    """The batch's records, numbered from 1: JSON texts (NDJSON, a JSON array) or dicts of
    text values (CSV)."""
    media = _media_type(request)
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
            errors += _problem_errors(number, refusal)
        except asyncpg.PostgresError as exc:
            mapped = database_problem(exc, writer.domain)
            if mapped is None:
                raise
            errors += _problem_errors(number, mapped)
    return False


async def _write_batch(
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


# --- routes --------------------------------------------------------------------------------


_IDEMPOTENCY_PARAMETER = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": f"A unique string of 1 to {MAX_KEY_LENGTH} printable ASCII characters (no "
    "space at either end; others are a 400): the write is done once; the same key with the "
    "same request within 24 hours replays the first response byte for byte (with "
    f"`{REPLAYED}: true`); with another request it is a 422.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "The ETag of the row as last read: the write is refused (412) if the row "
    "has changed since (no lost update). Optional.",
    "schema": {"type": "string"},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "`*`: create only; refused (412) if the row exists.",
    "schema": {"type": "string"},
}


def _row_headers(*, created: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "ETag": {
            "description": "Strong entity tag of the row as answered (as a single-row read "
            "gives it).",
            "schema": {"type": "string"},
        },
        REPLAYED: {
            "description": "`true` when this is the kept response of an earlier request with "
            "the same Idempotency-Key.",
            "schema": {"type": "string"},
        },
    }
    if created:
        headers["Location"] = {"description": "The new row's URL.", "schema": {"type": "string"}}
    return headers


def _responses(
    writer: TableWriter, pii: str, *, success: dict[int, str], row: bool, preconditions: bool
) -> dict[int | str, dict[str, Any]]:
    return _row_responses(
        writer.product, pii, success=success, preconditions=preconditions, row=row
    )


def _row_responses(
    product: Product,
    pii: str,
    *,
    success: dict[int, str],
    preconditions: bool,
    row: bool = True,
    missing: bool = False,
) -> dict[int | str, dict[str, Any]]:
    schema = _row_schema(product, pii) if row else _BATCH_SCHEMA
    responses: dict[int | str, dict[str, Any]] = {
        status: {
            "description": description,
            "content": {JSON_TYPE: {"schema": schema}},
            "headers": _row_headers(created=status == 201),
        }
        for status, description in success.items()
    }
    for status, description in success.items():
        if status == 204:
            responses[status] = {"description": description}
    responses |= {
        400: problem("A bad Idempotency-Key, query or path parameter."),
        409: problem(
            "Refused by the data's state: a status transition not allowed (naming from and to), "
            "a unique value taken, or a collision with a concurrent write."
        ),
        415: problem("The body's content type is not one this request takes."),
        422: problem(
            "The body breaks the declarations (each bad field named), refers to rows that do "
            "not exist, breaks a rule of the table (the constraint named), or reuses an "
            "Idempotency-Key for another request."
        ),
        503: problem("The domain database is unreachable."),
    }
    if preconditions or missing:
        responses[404] = problem("No row has this key.")
    if preconditions:
        responses[412] = problem("If-Match or If-None-Match does not hold for the row.")
    return dict(sorted(responses.items(), key=lambda item: str(item[0])))


_BATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "product": {"type": "string"},
        "rows": {"type": "integer"},
        "created": {"type": "integer"},
        "replaced": {"type": "integer"},
        "keys": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["product", "rows", "created", "replaced", "keys"],
}


def _json_body(shape: BodyShape) -> dict[str, Any]:
    return {"required": True, "content": {JSON_TYPE: {"schema": shape.schema()}}}


def write_router(
    domain: Domain, database: Callable[[], Database], reader: ProductReader
) -> APIRouter:
    """The write routes of every writable table of the domain (`<domain>:write` scope), and
    the owner's corrections of every table (`<domain>:admin` scope)."""
    router = APIRouter(dependencies=[Depends(require(f"{domain.name}:write"))])
    for writes in domain.writes:
        _add_table(router, domain, TableWriter(domain, writes), database, reader)
    corrections = APIRouter(dependencies=[Depends(require(admin_scope(domain)))])
    for product in domain.products:
        if product.is_table and len(product.key) == 1:
            _add_correction(corrections, domain, product, database, reader)
    both = APIRouter()
    both.include_router(router)
    both.include_router(corrections)
    return both


CORRECTIONS_PREFIX = "/{domain}/v1/corrections"


def admin_scope(domain: Domain) -> str:
    """The scope of a domain's corrections (the `admin` scope holds it too)."""
    return f"{domain.name}:admin"


# corrections and deletions, one JSON line each, next to the access log's line of the request
audit_log = logging.getLogger("datamesh.access.audit")


def _audit(
    request: Request, action: str, product: Product, key: Any, columns: Sequence[str]
) -> None:
    entry = {
        "audit": action,
        "subject": principal_of(request).subject,
        "method": request.method,
        "path": request.url.path,
        "product": product.name,
        "key": str(key),
        "columns": list(columns),  # the columns corrected, never their values (PII)
    }
    audit_log.info(orjson.dumps(entry).decode(), extra={"audit": entry})


class StillReferenced(Problem):
    status = 409
    code = "still_referenced"
    title = "Row still referenced"


def _still_referenced(domain: Domain, product: Product, key: Any, exc: Exception) -> Problem:
    table = getattr(exc, "table_name", None)
    constraint = getattr(exc, "constraint_name", None)
    referring = next((p.name for p in domain.products if p.is_table and p.source == table), table)
    return StillReferenced(
        f"The {product.name} row with {product.key[0]} = {key} is still referred to by rows of "
        f"{referring} (constraint '{constraint}'); delete or correct those first.",
        product=product.name,
        key=str(key),
        referenced_by=referring,
        constraint=constraint,
    )


def _add_correction(
    router: APIRouter,
    domain: Domain,
    product: Product,
    database: Callable[[], Database],
    reader: ProductReader,
) -> None:
    key_name = product.key[0]
    key_column = product.column(key_name)
    assert key_column is not None
    shape = correction_shape(product)
    model = shape.model(strict=True)
    # under a prefix of its own: a table's own paths (`/{key}`, a PUT's `/{a}/{b}`) would
    # take `/{key}/correction` as theirs
    path = f"{CORRECTIONS_PREFIX.format(domain=domain.name)}/{product.name}"

    async def correct(request: Request) -> Response:
        _only(request)
        _require_json(request)
        key = parse_value(key_column, request.path_params[key_name], parameter=key_name)
        body = await request.body()
        _refuse_pii_writes(request, domain, product, [body])
        values = validate_body(model, body, known=shape.names)
        changes = values.model_dump(include=values.model_fields_set)
        if not changes:
            raise InvalidBody(
                [
                    FieldError(
                        "body", f"give at least one column; accepted: {', '.join(shape.names)}"
                    )
                ]
            )
        view = RowView(request, domain, product, reader)

        async def run(context: TransactionContext) -> Response:
            if not await correct_row(context.conn, product, key, changes):
                raise NotFound(
                    f"No {product.name} row has {key_name} = {key}.",
                    product=product.name,
                    key=str(key),
                )
            text = await view.render(context.conn, key)
            assert text is not None
            return Response(
                text, media_type=JSON_TYPE, headers={"ETag": entity_tag(text), **view.masked}
            )

        response = await _transaction(request, domain, database(), body, run, view)
        if REPLAYED not in response.headers:  # committed now (a replay wrote nothing)
            _audit(request, "correction", product, key, list(changes))
        return response

    router.add_api_route(
        f"{path}/{{{key_name}}}",
        correct,
        methods=["PATCH"],
        name=f"correct_{product.source}",
        summary=f"Correct any stored value of a row of {product.name.replace('-', ' ')}",
        description=(
            f"The owner's repair of one row of `{product.source}` (scope "
            f"`{admin_scope(domain)}` or `admin`): sets any of its stored columns, including "
            "those a PATCH may not change, each checked by its column's declaration (type, "
            "nullability, accepted values, range, length, date range) and the row by the "
            "database's constraints (422 naming the constraint). Status transitions and the "
            "domain's logic (prices, totals, computed fields) are not applied: the correction "
            "is written as given. The subject, the row and the columns corrected (not the "
            "values) are logged as an audit line of the access log."
        ),
        tags=[product.name],
        response_class=Response,
        openapi_extra={
            **WRITE_EXTENSION,
            "parameters": [
                {
                    "name": key_name,
                    "in": "path",
                    "required": True,
                    "schema": json_schema(field_rule(product, key_column)),
                },
                _IDEMPOTENCY_PARAMETER,
            ],
            "requestBody": _json_body(shape),
        },
        responses=_row_responses(
            product,
            pii_scope(domain),
            success={200: "The row as corrected."},
            preconditions=False,
            missing=True,
        ),
    )


def _add_table(
    router: APIRouter,
    domain: Domain,
    writer: TableWriter,
    database: Callable[[], Database],
    reader: ProductReader,
) -> None:
    product, writes = writer.product, writer.writes
    path = product_path(domain.name, product)
    title = product.name.replace("-", " ")
    pii = pii_scope(domain)
    key_column = product.column(writer.key)
    assert key_column is not None

    if writes.create:
        shape = writer.creation

        async def create(request: Request) -> Response:
            _only(request)
            _require_json(request)
            body = await request.body()
            _refuse_pii_writes(request, domain, product, [body])
            values = validate_body(writer.model(shape, strict=True), body, known=shape.names)
            view = RowView(request, domain, product, reader)

            async def run(context: TransactionContext) -> Response:
                key = await writer.create(context, values.model_dump())
                return await _row_response(context.conn, view, writer, key, created=True)

            return await _transaction(request, domain, database(), body, run, view)

        router.add_api_route(
            path,
            create,
            methods=["POST"],
            status_code=201,
            name=f"create_{product.source}",
            summary=f"Create a row of {title}",
            description=_describe_create(writer),
            tags=[product.name],
            response_class=Response,
            openapi_extra={
                **WRITE_EXTENSION,
                "parameters": [_IDEMPOTENCY_PARAMETER],
                "requestBody": _json_body(shape),
            },
            responses=_responses(
                writer, pii, success={201: "The new row."}, row=True, preconditions=False
            ),
        )

    if writer.change_body is not None:
        change_body = writer.change_body
        key_rule = json_schema(_key_rule(writer))

        async def change(request: Request) -> Response:
            _only(request)
            _require_json(request)
            key = _path_key(writer, request.path_params[writer.key])
            body = await request.body()
            _refuse_pii_writes(request, domain, product, [body])
            model = validate_body(
                writer.model(change_body, strict=True), body, known=change_body.names
            )
            changes = model.model_dump(include=model.model_fields_set)
            if not changes:
                raise InvalidBody(
                    [
                        FieldError(
                            "body",
                            f"give at least one field to change; accepted: "
                            f"{', '.join(change_body.names)}",
                        )
                    ]
                )
            preconditions = Preconditions.of(request)
            view = RowView(request, domain, product, reader)

            async def run(context: TransactionContext) -> Response:
                async def precondition(current: Any) -> None:
                    if current is None and preconditions.if_match is None:
                        return
                    text = await view.render(context.conn, current) if current is not None else None
                    preconditions.check(text)

                if not await writer.change(context, key, changes, precondition):
                    raise _absent(writer, key)
                return await _row_response(context.conn, view, writer, key, created=False)

            return await _transaction(request, domain, database(), body, run, view)

        router.add_api_route(
            f"{path}/{{{writer.key}}}",
            change,
            methods=["PATCH"],
            name=f"change_{product.source}",
            summary=f"Change a row of {title}",
            description=_describe_change(writer),
            tags=[product.name],
            response_class=Response,
            openapi_extra={
                **WRITE_EXTENSION,
                "parameters": [
                    {"name": writer.key, "in": "path", "required": True, "schema": key_rule},
                    _IF_MATCH,
                    _IDEMPOTENCY_PARAMETER,
                ],
                "requestBody": _json_body(change_body),
            },
            responses=_responses(
                writer, pii, success={200: "The row as changed."}, row=True, preconditions=True
            ),
        )

    if writer.replacement is not None and writer.natural is not None:
        replacement, natural = writer.replacement, writer.natural
        in_path = [n for n in writes.upsert_key if n not in writes.upsert_query]
        rules = {f.rule.column.name: f.rule for f in natural.fields}

        async def replace(request: Request) -> Response:
            _only(request, writes.upsert_query)
            _require_json(request)
            raw = {name: request.path_params[name] for name in in_path}
            for name in writes.upsert_query:
                given = request.query_params.getlist(name)
                if len(given) != 1:
                    raise InvalidValue(
                        f"Query parameter '{name}' is required, once: it is part of the row's "
                        "natural key.",
                        parameter=name,
                    )
                raw[name] = given[0]
            keys = _url_values(writer.model(natural, strict=False), raw)
            body = await request.body()
            _refuse_pii_writes(request, domain, product, [body, raw])
            values = validate_body(
                writer.model(replacement, strict=True), body, known=replacement.names
            )
            preconditions = Preconditions.of(request)
            view = RowView(request, domain, product, reader)

            async def run(context: TransactionContext) -> Response:
                async def precondition(current: Any) -> None:
                    text = await view.render(context.conn, current) if current is not None else None
                    preconditions.check(text)

                key, created = await writer.replace(
                    context, {**values.model_dump(), **keys}, precondition
                )
                return await _row_response(context.conn, view, writer, key, created=created)

            return await _transaction(request, domain, database(), body, run, view)

        router.add_api_route(
            path + "".join(f"/{{{name}}}" for name in in_path),
            replace,
            methods=["PUT"],
            name=f"replace_{product.source}",
            summary=f"Create or replace a row of {title} by its natural key",
            description=_describe_replace(writer),
            tags=[product.name],
            response_class=Response,
            openapi_extra={
                **WRITE_EXTENSION,
                "parameters": [
                    *(
                        {
                            "name": name,
                            "in": "path",
                            "required": True,
                            "schema": json_schema(rules[name]),
                        }
                        for name in in_path
                    ),
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "required": True,
                            "schema": json_schema(rules[name]),
                        }
                        for name in writes.upsert_query
                    ),
                    _IF_MATCH,
                    _IF_NONE_MATCH,
                    _IDEMPOTENCY_PARAMETER,
                ],
                "requestBody": _json_body(replacement),
            },
            responses=_responses(
                writer,
                pii,
                success={201: "The row, created.", 200: "The row, replaced."},
                row=True,
                preconditions=True,
            ),
        )

    if writes.deletable:

        async def delete(request: Request) -> Response:
            _only(request)
            key = _path_key(writer, request.path_params[writer.key])
            preconditions = Preconditions.of(request)
            view = RowView(request, domain, product, reader)

            async def run(context: TransactionContext) -> Response:
                if preconditions.if_match is not None:
                    preconditions.check(await view.render(context.conn, key))
                try:
                    async with context.conn.transaction():
                        deleted = await delete_row(context.conn, domain, writes, key)
                except asyncpg.ForeignKeyViolationError as exc:
                    raise _still_referenced(domain, product, key, exc) from None
                if not deleted:
                    raise _absent(writer, key)
                return Response(status_code=204)

            response = await _transaction(request, domain, database(), b"", run)
            if REPLAYED not in response.headers:  # committed now (a replay wrote nothing)
                _audit(request, "deletion", product, key, [])
            return response

        children_note = (
            f" Its rows of `{writes.children.product}` are deleted with it."
            if writes.children
            else ""
        )
        router.add_api_route(
            f"{path}/{{{writer.key}}}",
            delete,
            methods=["DELETE"],
            status_code=204,
            name=f"delete_{product.source}",
            summary=f"Delete a row of {title}",
            description=(
                f"Deletes one row of `{product.source}` by its key.{children_note} A row other "
                "rows still refer to is not deleted: 409 `still_referenced` names the table "
                "and the constraint. Send the row's `ETag` in `If-Match` to delete it only if "
                "it is still the row you read (412 otherwise). The subject and the row are "
                "logged as an audit line of the access log."
            ),
            tags=[product.name],
            response_class=Response,
            openapi_extra={
                **WRITE_EXTENSION,
                "parameters": [
                    {
                        "name": writer.key,
                        "in": "path",
                        "required": True,
                        "schema": json_schema(_key_rule(writer)),
                    },
                    _IF_MATCH,
                    _IDEMPOTENCY_PARAMETER,
                ],
            },
            responses=_responses(
                writer, pii, success={204: "Deleted."}, row=False, preconditions=True
            ),
        )

    if writes.batch:
        batch_body = writer.batch_body

        async def batch(request: Request) -> Response:
            _only(request)
            body = await request.body()
            media = _media_type(request)
            records = _records(request, body, writer)
            if not records:
                raise InvalidBody([FieldError("body", "the batch has no rows")])
            _refuse_pii_writes(request, domain, product, [record for _, record in records])
            strict = media != CSV_TYPE
            model = writer.model(batch_body, strict=strict)
            rows: list[tuple[int, dict[str, Any]]] = []
            errors: list[RowError] = []
            for number, record in records:
                if isinstance(record, dict) and "__extra__" in record:
                    errors.append(RowError(number, None, "more values than the header has columns"))
                    continue
                try:
                    values = validate_body(model, record, known=batch_body.names)
                except InvalidBody as invalid:
                    errors += _problem_errors(number, invalid)
                    continue
                rows.append((number, values.model_dump()))

            async def run(context: TransactionContext) -> Response:
                summary = await _write_batch(context, writer, rows, errors)
                return Response(orjson.dumps(summary), media_type=JSON_TYPE)

            return await _transaction(request, domain, database(), body, run)

        row_schema = batch_body.schema()
        router.add_api_route(
            f"{path}:batch",
            batch,
            methods=["POST"],
            name=f"batch_{product.source}",
            summary=f"Write many rows of {title} at once",
            description=_describe_batch(writer),
            tags=[product.name],
            response_class=Response,
            openapi_extra={
                **WRITE_EXTENSION,
                "parameters": [_IDEMPOTENCY_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON_TYPE: {
                            "schema": {"type": "array", "items": row_schema, "minItems": 1}
                        },
                        NDJSON_TYPES[0]: {
                            "schema": {
                                "type": "string",
                                "description": "One JSON object per line, each as the "
                                "JSON array's items.",
                            }
                        },
                        CSV_TYPE: {
                            "schema": {
                                "type": "string",
                                "description": "A header line naming the fields, then one row "
                                "per line; an empty cell is an absent value.",
                            }
                        },
                    },
                },
            },
            responses=_responses(
                writer,
                pii,
                success={200: "Every row written: counts and keys in row order."},
                row=False,
                preconditions=False,
            ),
        )


def _key_rule(writer: TableWriter) -> FieldRule:
    column = writer.product.column(writer.key)
    assert column is not None
    return field_rule(writer.product, column)


def _path_key(writer: TableWriter, raw: str) -> Any:
    """The key in a PATCH's path, as its column's type (a 400 naming it otherwise)."""
    return parse_value(_key_rule(writer).column, raw, parameter=writer.key)


def _absent(writer: TableWriter, key: Any) -> Problem:
    return NotFound(
        f"No {writer.product.name} row has {writer.key} = {key}.",
        product=writer.product.name,
        key=str(key),
    )


def _describe_create(writer: TableWriter) -> str:
    lines = [
        f"Creates one row of `{writer.product.source}` and answers it as a single-row read "
        "does, with its `ETag` and its URL in `Location`.",
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def _describe_change(writer: TableWriter) -> str:
    lines = [
        f"Changes the given fields of one row of `{writer.product.source}` (any of: "
        f"{', '.join(writer.writes.updatable)}); absent fields keep their values. Send the "
        "row's `ETag` in `If-Match` to change it only if it is still the row you read (412 "
        "otherwise)."
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def _describe_replace(writer: TableWriter) -> str:
    key = ", ".join(writer.writes.upsert_key)
    lines = [
        f"Creates (201) or replaces (200) the row of `{writer.product.source}` with this "
        f"natural key ({key}): a daily upsert; the body gives every other field."
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def _describe_batch(writer: TableWriter) -> str:
    how = "created" if writer.writes.create else "created or replaced by natural key"
    return (
        f"Writes many rows of `{writer.product.source}` ({how}), all or nothing, from NDJSON "
        f"(`{NDJSON_TYPES[0]}`), CSV (`{CSV_TYPE}`, a header line first) or a JSON array. "
        f"Each row is checked as one POST body would be. On any bad row nothing is written "
        f"and a 422 lists each bad row's number (from 1, the CSV header is row 0) with the "
        f"reason, the first {MAX_LISTED_ERRORS}."
    )


def _notes(writer: TableWriter) -> list[str]:
    notes = []
    pii = [c.name for c in writer.product.columns if c.is_pii]
    if pii:
        notes.append(
            f"PII columns ({', '.join(f'`{n}`' for n in pii)}): giving one, even as null, needs "
            f"`{pii_scope(writer.domain)}` (403 `pii_column` otherwise, before anything is "
            "checked against the data)."
        )
    transitions = writer.writes.transitions
    if transitions:
        moves = "; ".join(
            f"{start} -> {', '.join(ends)}" for start, ends in transitions.allowed.items()
        )
        notes.append(
            f"`{transitions.column}` starts as one of {', '.join(transitions.initial)} and may "
            f"change only: {moves} (409 otherwise, naming from and to)."
            + "".join(
                f" Becoming {status} sets `{column}`."
                for status, column in transitions.stamps.items()
            )
        )
    for rule in writer.writes.rules:
        notes.append(f"`{rule.column}`: {rule.message} (422).")
    if writer.writes.children:
        children = writer.writes.children
        notes.append(
            f"`{children.field}`: the rows of `{children.product}` written with it, each with "
            f"{', '.join(children.accepted)}."
        )
    doc = type(writer.writes.logic).__doc__
    if doc and type(writer.writes.logic) is not WriteLogic:
        notes.append(" ".join(doc.split()))
    return notes
