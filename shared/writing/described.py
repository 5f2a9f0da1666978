"""What the OpenAPI document says of each write operation: its parameters (Idempotency-Key,
If-Match, If-None-Match), its responses and a description stated from the declarations."""

from __future__ import annotations

from typing import Any

from shared.declarations.products import Product
from shared.declarations.writes import WriteLogic
from shared.openapi import problem
from shared.reading.routes import (
    _row_schema,
    pii_scope,
)
from shared.writing.idempotency import HEADER as IDEMPOTENCY_HEADER
from shared.writing.idempotency import (
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    REPLAYED,
)
from shared.writing.inputs import (
    BodyShape,
)
from shared.writing.requests import (
    CSV_TYPE,
    JSON_TYPE,
    MAX_LISTED_ERRORS,
    NDJSON_TYPES,
)
from shared.writing.writer import (
    TableWriter,
)

# --- routes --------------------------------------------------------------------------------


IDEMPOTENCY_PARAMETER = {
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
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "The ETag of the row as last read: the write is refused (412) if the row "
    "has changed since (no lost update). Optional.",
    "schema": {"type": "string"},
}
IF_NONE_MATCH = {
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


def write_responses(
    writer: TableWriter, pii: str, *, success: dict[int, str], row: bool, preconditions: bool
) -> dict[int | str, dict[str, Any]]:
    return row_responses(writer.product, pii, success=success, preconditions=preconditions, row=row)


def row_responses(
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


def json_body(shape: BodyShape) -> dict[str, Any]:
    return {"required": True, "content": {JSON_TYPE: {"schema": shape.schema()}}}


def describe_create(writer: TableWriter) -> str:
    lines = [
        f"Creates one row of `{writer.product.source}` and answers it as a single-row read "
        "does, with its `ETag` and its URL in `Location`.",
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def describe_change(writer: TableWriter) -> str:
    lines = [
        f"Changes the given fields of one row of `{writer.product.source}` (any of: "
        f"{', '.join(writer.writes.updatable)}); absent fields keep their values. Send the "
        "row's `ETag` in `If-Match` to change it only if it is still the row you read (412 "
        "otherwise)."
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def describe_replace(writer: TableWriter) -> str:
    key = ", ".join(writer.writes.upsert_key)
    lines = [
        f"Creates (201) or replaces (200) the row of `{writer.product.source}` with this "
        f"natural key ({key}): a daily upsert; the body gives every other field."
    ]
    lines += _notes(writer)
    return "\n\n".join(lines)


def describe_batch(writer: TableWriter) -> str:
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


def path_parameter(name: str, schema: dict[str, Any], *, where: str = "path") -> dict[str, Any]:
    """A required parameter of the URL (a key in the path, a natural key's part in the query)."""
    return {"name": name, "in": where, "required": True, "schema": schema}


def describe_delete(writer: TableWriter) -> str:
    children = writer.writes.children
    with_children = f" Its rows of `{children.product}` are deleted with it." if children else ""
    return (
        f"Deletes one row of `{writer.product.source}` by its key.{with_children} A row other "
        "rows still refer to is not deleted: 409 `still_referenced` names the table and the "
        "constraint. Send the row's `ETag` in `If-Match` to delete it only if it is still the "
        "row you read (412 otherwise). The subject and the row are logged as an audit line of "
        "the access log."
    )


def batch_body(writer: TableWriter) -> dict[str, Any]:
    """A batch's request body: a JSON array of rows, NDJSON or CSV."""
    row_schema = writer.batch_body.schema()
    return {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": {"type": "array", "items": row_schema, "minItems": 1}},
            NDJSON_TYPES[0]: {
                "schema": {
                    "type": "string",
                    "description": "One JSON object per line, each as the JSON array's items.",
                }
            },
            CSV_TYPE: {
                "schema": {
                    "type": "string",
                    "description": "A header line naming the fields, then one row per line; an "
                    "empty cell is an absent value.",
                }
            },
        },
    }
