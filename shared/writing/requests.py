"""What every write request is checked for before its transaction: the query parameters and
content type it may have, PII columns given without the pii scope (403 before the data is asked
anything), and its preconditions (If-Match, If-None-Match)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from shared.declarations.products import Domain, Product
from shared.errors import InvalidValue, Problem, UnsupportedMediaType
from shared.reading.routes import (
    entity_tag,
    pii_access,
    pii_scope,
)
from shared.security.auth import Forbidden
from shared.writing.inputs import (
    BodyShape,
    FieldError,
    InvalidBody,
    field_errors,
)

MAX_LISTED_ERRORS = 100

# marks the write operations in OpenAPI (schemathesis.toml adjusts one check on them)
WRITE_EXTENSION = {"x-write": "declared"}
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
CSV_TYPE = "text/csv"
JSON_TYPE = "application/json"


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


def refuse_pii_writes(
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


# --- request plumbing ----------------------------------------------------------------------


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request) -> None:
    media = media_type(request)
    if media and media != JSON_TYPE and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"The body is sent as '{media}'; this request takes {JSON_TYPE}.",
            accepted=[JSON_TYPE],
        )


def url_values(model: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """Values of the URL's parameters, checked by their columns' rules (a 400 naming each)."""
    try:
        return model.model_validate(raw).model_dump()
    except ValidationError as exc:
        errors = field_errors(exc)
        raise InvalidValue(
            "The URL names no valid row: " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=[e.document() for e in errors],
        ) from None


def given_changes(model: BaseModel, shape: BodyShape, what: str) -> dict[str, Any]:
    """The fields a PATCH body gives (a 422 if none)."""
    changes = model.model_dump(include=model.model_fields_set)
    if not changes:
        raise InvalidBody(
            [FieldError("body", f"give at least one {what}; accepted: {', '.join(shape.names)}")]
        )
    return changes
