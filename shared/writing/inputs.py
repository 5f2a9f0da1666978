"""Writes of a domain's tables: what each table accepts (declared by its domain next to its
products), the input models generated from the declarations, and the hooks of domain logic.

A domain declares, per writable table, the columns a body gives, the columns a PATCH may
change, the natural key of its daily upserts, defaults, status transitions, rules between the
fields of a row, the rows of a child table written with it (an order's items) and its own logic
(pricing). Types, NOT NULL, accepted values, ranges and patterns come from the product's
declaration: the models are generated from it, never written twice.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from shared.declarations.products import Column, ColumnType, Product

# the declarations and their problems, used here and re-exported for the domains' writes.py
from shared.declarations.writes import (
    Children,
    FieldError,
    ForbiddenTransition,
    InvalidBody,
    RowRule,
    TableWrites,
    Transitions,
    WriteContext,
    WriteLogic,
    check_writes,
)

if TYPE_CHECKING:
    from shared.declarations.products import Domain

_INT32 = 2**31
_INT64 = 2**63
# binary floating-point noise a JSON number may carry (0.1 + 0.2): within this of a step of the
# column's scale, a number is taken as that step; further off, it has too many decimals
_FLOAT_NOISE = Decimal("1e-9")
# What `\s` means differs between regex engines (Python, Rust in pydantic, PostgreSQL, the
# JSON Schema tools that generate requests); patterns are checked and documented with an
# explicit class instead: every character str.isspace() takes for a space.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# text a NOT NULL column accepts: no NUL (PostgreSQL text cannot hold it), not only spaces
TEXT_PATTERN = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"
NULLABLE_TEXT_PATTERN = r"^[^\x00]*$"


def explicit_pattern(pattern: str) -> str:
    """A declared pattern with each `\\s` spelled out as WHITESPACE, so that every engine
    reads it alike."""
    out: list[str] = []
    in_class = escaped = False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
            if char == "s":
                out[-1] = WHITESPACE if in_class else f"[{WHITESPACE}]"
                continue
            out.append(char)
            continue
        if char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class and pattern[i - 1] not in "[^":
            in_class = False
        out.append(char)
    return "".join(out)


__all__ = [
    "Children",
    "FieldError",
    "ForbiddenTransition",
    "InvalidBody",
    "RowRule",
    "TableWrites",
    "Transitions",
    "WriteContext",
    "WriteLogic",
    "check_writes",
]


# --- input models --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """What a declared column accepts, from its type and the product's single-column checks;
    both the pydantic model and the documented JSON Schema are made from it."""

    column: Column
    choices: tuple[str, ...] | None
    minimum: Decimal | None
    maximum: Decimal | None
    pattern: str | None
    # the table and column a value must exist in (a foreign key): JSON Schema cannot say which
    # values those are, the description does
    references: tuple[str, str] | None = None

    @property
    def scale(self) -> int:
        return 2 if self.column.type is ColumnType.MONEY else self.column.scale

    @property
    def numeric(self) -> bool:
        return self.column.type in (ColumnType.MONEY, ColumnType.DECIMAL)

    def integer_bounds(self) -> tuple[int, int]:
        width = _INT64 if self.column.type is ColumnType.BIGINT else _INT32
        low, high = -width, width - 1
        if self.minimum is not None:
            low = max(low, math.ceil(self.minimum))
        if self.maximum is not None:
            high = min(high, math.floor(self.maximum))
        return low, high

    def numeric_bound(self) -> Decimal:
        """The exclusive magnitude of numeric(precision, scale)."""
        return Decimal(10) ** (self.column.precision - self.scale)


def field_rule(
    product: Product, column: Column, choices: tuple[str, ...] | None = None
) -> FieldRule:
    """The rule of one column of a product (`choices` narrows its accepted values)."""
    minimum = maximum = None
    pattern = None
    references = None
    for check in product.checks:  # each kind says what it asks of a written value
        if check.warn_only or check.checked_columns != (column.name,):
            continue
        rule = check.write_rule()
        if choices is None:
            choices = rule.get("choices")
        minimum = rule.get("minimum", minimum)
        maximum = rule.get("maximum", maximum)
        pattern = rule.get("pattern", pattern)
        references = references or rule.get("references")
    return FieldRule(column, choices, minimum, maximum, pattern, references)


def _no_float_noise(scale: int) -> Callable[[Any], Any]:
    step = Decimal(1).scaleb(-scale)

    def snap(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, float) and math.isfinite(value):
            exact = Decimal(repr(value))
            try:
                nearest = exact.quantize(step)
            except InvalidOperation:  # more digits than decimal's context: far out of range,
                return exact  # refused by the field's digits and bounds, naming it
            return nearest if abs(exact - nearest) < _FLOAT_NOISE else exact
        return value

    return snap


def _json_number(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise PydanticCustomError("decimal_type", "Input should be a JSON number")
    return value


def _integral(value: Any) -> Any:
    # JSON Schema's integer is any number without a fractional part: 3.0 is one (and clients
    # send it so); pydantic's strict int would refuse it
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _ascii_number(value: Any) -> Any:
    # Python's Decimal reads other scripts' digits (full-width ones); a CSV cell's number is ASCII
    if isinstance(value, str) and not value.isascii():
        raise PydanticCustomError("decimal_parsing", "Input should be a number in ASCII digits")
    return value


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "Text may not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("text_encoding", "Text must be valid Unicode") from None
    return value


def _at_most(column: Column) -> Callable[[str], str]:
    limit = column.length_limit
    assert limit is not None

    def check(value: str) -> str:
        if len(value) > limit:
            raise PydanticCustomError(
                "string_too_long",
                "{length} characters; column '{column}' holds at most {limit}",
                {"length": len(value), "column": column.name, "limit": limit},
            )
        return value

    return check


def _within_dates(column: Column) -> Callable[[Any], Any]:
    span = column.date_range
    assert span is not None
    first, last = span

    def check(value: dt.date) -> dt.date:
        # a timestamp by the day it names (its offset's); the database's CHECK holds the instant
        day = value.date() if isinstance(value, dt.datetime) else value
        if not first <= day <= last:
            raise PydanticCustomError(
                "date_out_of_range",
                "{value} is outside the range of column '{column}': {first} to {last}",
                {
                    "value": value.isoformat(),
                    "column": column.name,
                    "first": first.isoformat(),
                    "last": last.isoformat(),
                },
            )
        return value

    return check


_DATE_SHAPE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# RFC 3339's date-time (JSON Schema's format): seconds and an offset required
_TIMESTAMP_SHAPE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _shaped(column: Column) -> Callable[[Any], Any]:
    """Dates and timestamps as text in the shape OpenAPI states (a timestamp's `T`; no unix
    numbers, no other spellings pydantic would take); their range is checked after."""
    date = column.type is ColumnType.DATE
    shape, kind = (
        (_DATE_SHAPE, "a date, YYYY-MM-DD")
        if date
        else (_TIMESTAMP_SHAPE, "a timestamp, YYYY-MM-DDThh:mm:ss with an offset")
    )

    def check(value: Any) -> Any:
        if isinstance(value, dt.date):  # a value given in Python (a default), not JSON
            return value
        if not isinstance(value, str) or not shape.search(value):
            raise PydanticCustomError(
                "date_shape", "{value} is not {kind}", {"value": repr(value)[:40], "kind": kind}
            )
        return value

    return check


def year_pattern(first: int, last: int) -> str:
    """A regular expression matching exactly the four-digit years first to last, by whole
    centuries and decades where it can (1900 to 2199: `19\\d\\d|20\\d\\d|21\\d\\d`)."""
    parts, year = [], first
    while year <= last:
        if year % 100 == 0 and year + 99 <= last:
            parts.append(f"{year // 100:02d}\\d\\d")
            year += 100
        elif year % 10 == 0 and year + 9 <= last:
            parts.append(f"{year // 10:03d}\\d")
            year += 10
        else:
            parts.append(f"{year:04d}")
            year += 1
    return "|".join(parts)


def date_pattern(column: Column) -> str:
    """The pattern OpenAPI states for a date or timestamp column's values: its range's years,
    a month and a day (the `format` says which days exist)."""
    span = column.date_range
    assert span is not None
    years = year_pattern(span[0].year, span[1].year)
    tail = "$" if column.type is ColumnType.DATE else "T"
    return f"^({years})-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01]){tail}"


def _matching(pattern: str, message: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.search(value):  # as JSON Schema and PostgreSQL's ~ match: a search
            raise PydanticCustomError("string_pattern_mismatch", message)
        return value

    return check


def annotation(rule: FieldRule, *, strict: bool) -> Any:
    """The pydantic type of a field following its rule (strict: as JSON gives values; lax:
    as CSV does, everything as text)."""
    column = rule.column
    kind: Any
    if column.type is ColumnType.TEXT:
        if rule.choices:
            kind = Literal[rule.choices]
        else:
            checks: list[Any] = [AfterValidator(_storable_text)]
            if not column.nullable:
                blank = "Text may not be empty or only spaces"
                checks.append(AfterValidator(_matching(TEXT_PATTERN, blank)))
            if rule.pattern:
                pattern = explicit_pattern(rule.pattern)
                checks.append(
                    AfterValidator(
                        _matching(pattern, f"String should match pattern '{rule.pattern}'")
                    )
                )
            checks.append(AfterValidator(_at_most(column)))
            kind = Annotated[str, *checks]
    elif column.type in (ColumnType.INTEGER, ColumnType.BIGINT):
        low, high = rule.integer_bounds()
        kind = Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral)]
    elif rule.numeric:
        bound = rule.numeric_bound()
        limits: dict[str, Any] = {
            "max_digits": column.precision,
            "decimal_places": rule.scale,
            "gt": -bound if rule.minimum is None else None,
            "ge": rule.minimum,
            "lt": bound if rule.maximum is None else None,
            "le": rule.maximum,
        }
        validators: list[Any] = [BeforeValidator(_no_float_noise(rule.scale))]
        if strict:
            validators.append(BeforeValidator(_json_number))
        else:
            validators.append(BeforeValidator(_ascii_number))
        kind = Annotated[
            Decimal, Field(**{k: v for k, v in limits.items() if v is not None}), *validators
        ]
    elif column.type in (ColumnType.DATE, ColumnType.TIMESTAMP):
        # the text as OpenAPI states it (pydantic alone would also take other spellings), then
        # the day within the column's range; a timestamp with its offset
        shaped = BeforeValidator(_shaped(column))
        within = AfterValidator(_within_dates(column))
        base = dt.date if column.type is ColumnType.DATE else AwareDatetime
        kind = Annotated[base, Strict(False), shaped, within]
    else:
        kind = bool
    return kind | None if column.nullable else kind


def json_schema(rule: FieldRule) -> dict[str, Any]:
    """The documented JSON Schema of a field, matching what its model accepts (strict)."""
    column = rule.column
    schema: dict[str, Any]
    if column.type is ColumnType.TEXT:
        schema = {"type": "string"}
        if rule.choices:
            schema["enum"] = list(rule.choices)
        else:
            schema["pattern"] = NULLABLE_TEXT_PATTERN if column.nullable else TEXT_PATTERN
            schema["maxLength"] = column.length_limit
            if rule.pattern:
                schema["allOf"] = [{"pattern": explicit_pattern(rule.pattern)}]
    elif column.type in (ColumnType.INTEGER, ColumnType.BIGINT):
        low, high = rule.integer_bounds()
        schema = {"type": "integer", "minimum": low, "maximum": high}
    elif rule.numeric:
        bound = rule.numeric_bound()
        schema = {"type": "number", "multipleOf": float(Decimal(1).scaleb(-rule.scale))}
        if rule.minimum is None:
            schema["exclusiveMinimum"] = -float(bound)
        else:
            schema["minimum"] = _plain_number(rule.minimum)
        if rule.maximum is None:
            schema["exclusiveMaximum"] = float(bound)
        else:
            schema["maximum"] = _plain_number(rule.maximum)
    elif column.type in (ColumnType.DATE, ColumnType.TIMESTAMP):
        kind = "date" if column.type is ColumnType.DATE else "date-time"
        schema = {"type": "string", "format": kind, "pattern": date_pattern(column)}
    else:
        schema = {"type": "boolean"}
    if column.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    schema["description"] = column.description + _range_note(column)
    if rule.references:
        table, target = rule.references
        schema["description"] += (
            f" Must be the {target} of an existing row of {table} (else 422, naming it)."
        )
    return schema


def _range_note(column: Column) -> str:
    if (span := column.date_range) is not None:
        return f" From {span[0].isoformat()} to {span[1].isoformat()}."
    if (limit := column.length_limit) is not None:
        return f" At most {limit} characters."
    return ""


def _plain_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass(frozen=True)
class InputField:
    """One field of a body: its rule, whether it must be given, and its default."""

    rule: FieldRule
    required: bool
    default: Any = None


@dataclass(frozen=True)
class BodyShape:
    """The fields of one kind of body (create, replace, change) of a table, and of its
    children; turned into a strict model (JSON), a lax one (CSV) and a JSON Schema."""

    name: str
    fields: tuple[InputField, ...]
    partial: bool = False
    children: Children | None = None
    child_shape: BodyShape | None = None

    def model(self, *, strict: bool) -> type[BaseModel]:
        """The pydantic model of the body: unknown fields refused."""
        definitions: dict[str, Any] = {}
        for f in self.fields:
            kind = annotation(f.rule, strict=strict)
            if self.partial:
                definitions[f.rule.column.name] = (kind, None)
            elif f.required:
                definitions[f.rule.column.name] = (kind, ...)
            else:
                definitions[f.rule.column.name] = (kind, f.default)
        if self.children and self.child_shape:
            child = self.child_shape.model(strict=strict)
            limits = Field(min_length=self.children.min_items, max_length=self.children.max_items)
            definitions[self.children.field] = (Annotated[list[child], limits], ...)  # type: ignore[valid-type]
        config = ConfigDict(extra="forbid", strict=strict, title=self.name)
        return create_model(
            self.name + ("" if strict else "Text"), __config__=config, **definitions
        )

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the body as documented in OpenAPI."""
        properties = {f.rule.column.name: json_schema(f.rule) for f in self.fields}
        required = [f.rule.column.name for f in self.fields if f.required and not self.partial]
        for f in self.fields:
            if not f.required and not self.partial and f.default is not None:
                properties[f.rule.column.name]["default"] = _json_default(f.default)
        if self.children and self.child_shape:
            properties[self.children.field] = {
                "type": "array",
                "items": self.child_shape.schema(),
                "minItems": self.children.min_items,
                "maxItems": self.children.max_items,
            }
            required.append(self.children.field)
        schema: dict[str, Any] = {
            "type": "object",
            "title": self.name,
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            schema["required"] = required
        if self.partial:
            schema["minProperties"] = 1
        return schema

    @property
    def names(self) -> tuple[str, ...]:
        extra = (self.children.field,) if self.children else ()
        return (*(f.rule.column.name for f in self.fields), *extra)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _plain_number(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _title(product: Product) -> str:
    return "".join(part.capitalize() for part in product.name.split("-"))


def _fields(
    product: Product, writes: TableWrites, names: Sequence[str], *, partial: bool
) -> tuple[InputField, ...]:
    found = []
    transitions = writes.transitions
    for name in names:
        column = product.column(name)
        assert column is not None
        choices = None
        default = writes.defaults.get(name)
        if transitions and name == transitions.column and not partial:
            choices, default = transitions.initial, transitions.initial[0]
        required = not (column.nullable or default is not None or name in writes.filled)
        found.append(InputField(field_rule(product, column, choices), required, default))
    return tuple(found)


def create_shape(domain: Domain, writes: TableWrites, *, without: Sequence[str] = ()) -> BodyShape:
    """The body of a new row (POST, batch row; `without` the columns a PUT's URL gives)."""
    product = domain.product(writes.product)
    assert product is not None
    names = [n for n in writes.accepted if n not in without]
    children = writes.children
    child_shape = None
    if children:
        child = domain.product(children.product)
        assert child is not None
        child_writes = TableWrites(
            product=children.product, accepted=children.accepted, defaults=children.defaults
        )
        child_shape = BodyShape(
            f"{_title(child)}Line", _fields(child, child_writes, children.accepted, partial=False)
        )
    suffix = "Replacement" if without else "Creation"
    return BodyShape(
        f"{_title(product)}{suffix}",
        _fields(product, writes, names, partial=False),
        children=children,
        child_shape=child_shape,
    )


def change_shape(domain: Domain, writes: TableWrites) -> BodyShape:
    """The body of a PATCH: any of the updatable columns, at least one."""
    product = domain.product(writes.product)
    assert product is not None
    return BodyShape(
        f"{_title(product)}Change",
        _fields(product, writes, writes.updatable, partial=True),
        partial=True,
    )


def correction_shape(product: Product) -> BodyShape:
    """The body of an owner's correction of a table row: any stored column but the key, at
    least one, each checked by its column's declaration (type, nullability, accepted values,
    range, length, date range)."""
    fields = tuple(
        InputField(field_rule(product, column), required=False)
        for column in product.stored_columns
        if column.name not in product.key
    )
    return BodyShape(f"{_title(product)}Correction", fields, partial=True)


def field_errors(error: ValidationError, *, known: Sequence[str] = ()) -> list[FieldError]:
    """Pydantic's errors, one per field, named by their dotted path."""
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "not a field this request accepts"
            if known:
                message += f"; accepted: {', '.join(known)}"
        elif item["type"] in ("model_type", "model_attributes_type"):
            message = "expected a JSON object"
        found.append(FieldError(path, message))
    return found


def validate_body(model: type[BaseModel], data: bytes | Any, *, known: Sequence[str]) -> BaseModel:
    """The body (JSON text, or the values of a CSV row) as its model, or a 422 naming every
    bad field."""
    try:
        if isinstance(data, bytes | str):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidBody(field_errors(exc, known=known)) from None


def key_shape(domain: Domain, writes: TableWrites) -> BodyShape:
    """The natural key of a PUT, as its URL gives it (validated as text: lax)."""
    product = domain.product(writes.product)
    assert product is not None
    return BodyShape(
        f"{_title(product)}Key", _fields(product, writes, writes.upsert_key, partial=False)
    )
