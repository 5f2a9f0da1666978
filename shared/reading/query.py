"""PostgREST's read grammar, parsed against a declaration and compiled to parameterised SQL.

Identifiers come only from the declaration (and are quoted); every value is a bound parameter.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from shared.declarations.products import Column, ColumnType, Product
from shared.errors import (
    InvalidCursor,
    InvalidValue,
    LimitOutOfRange,
    Problem,
    UnknownColumn,
    UnknownOperator,
    UnknownParameter,
)
from shared.reading.values import bind_type, format_value, parse_value, sql_type
from shared.security.pseudonym import PseudonymKey
from shared.sql import quote_ident

RESERVED = ("select", "order", "limit", "offset", "cursor", "format")
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PATTERNS = {"like": "LIKE", "ilike": "ILIKE"}
OPERATORS = (*_COMPARISONS, *_PATTERNS, "in", "is")
_IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE"}
_IS_VALUES["unknown"] = "UNKNOWN"


class PiiColumn(Problem):
    """A filter or an order on a PII column by a caller who reads it masked: refused, so that
    a masked value cannot be probed one comparison at a time."""

    status = 403
    code = "pii_column"
    title = "PII column not permitted"

    def __init__(self, column: str, parameter: str, scope: str | None):
        use = "an order" if parameter == "order" else "a filter"
        detail = f"Column '{column}' is classified PII: {use} on it (parameter '{parameter}') "
        headers: dict[str, str] = {}
        if scope:
            detail += (
                f"needs the scope '{scope}', which the token does not carry; without it the "
                "column is read masked (null)."
            )
            challenge = f'Bearer realm="datamesh", error="insufficient_scope", scope="{scope}"'
            headers["WWW-Authenticate"] = challenge
        else:
            detail += "is not allowed: the column is always read masked (null)."
        super().__init__(
            detail,
            headers=headers,
            parameter=parameter,
            column=column,
            scope=scope,
        )


@dataclass(frozen=True)
class PiiAccess:
    """Whether the caller reads PII columns in clear, and the scope that would let it."""

    scope: str | None  # e.g. <domain>:pii; None where no scope reads PII in clear
    granted: bool = False

    @classmethod
    def masked(cls) -> PiiAccess:
        """No one reads PII in clear (products without a pii scope, such as the mesh's)."""
        return cls(None, False)


@dataclass(frozen=True)
class Filter:
    column: Column
    operator: str
    value: Any
    negated: bool


@dataclass(frozen=True)
class OrderTerm:
    column: Column
    descending: bool = False
    nulls_first: bool | None = None

    @property
    def effective_nulls_first(self) -> bool:
        """PostgreSQL's default: NULLs sort as larger than every value."""
        return self.descending if self.nulls_first is None else self.nulls_first

    def sql(self) -> str:
        direction = "DESC" if self.descending else "ASC"
        nulls = "NULLS FIRST" if self.effective_nulls_first else "NULLS LAST"
        return f"{quote_ident(self.column.name)} {direction} {nulls}"

    def signature(self) -> str:
        return f"{self.column.name}.{'desc' if self.descending else 'asc'}." + (
            "nullsfirst" if self.effective_nulls_first else "nullslast"
        )


@dataclass
class ReadQuery:
    """A parsed read of one product."""

    product: Product
    columns: tuple[Column, ...]
    filters: list[Filter] = field(default_factory=list)
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int = 0
    after: tuple[Any, ...] | None = None
    format: str | None = None
    masked: frozenset[str] = frozenset()  # the product's PII columns this caller reads masked

    @property
    def masked_columns(self) -> tuple[str, ...]:
        """The selected columns that are masked (the Masked-Columns header), in order."""
        return tuple(c.name for c in self.columns if c.name in self.masked)

    @property
    def output_columns(self) -> tuple[Column, ...]:
        """The selected columns as they are answered: a masked column is null, so nullable."""
        return tuple(
            replace(c, nullable=True) if c.name in self.masked else c for c in self.columns
        )

    @property
    def keyset(self) -> tuple[OrderTerm, ...]:
        """The requested order, completed by the key so that it is total (keyset paging)."""
        named = {t.column.name for t in self.order}
        tail = tuple(
            OrderTerm(c)
            for k in self.product.key
            if (c := self.product.column(k)) and k not in named
        )
        return self.order + tail

    def encode_cursor(self, last_row: tuple[Any, ...]) -> str:
        """An opaque cursor pointing just after a row (given its keyset values)."""
        payload = {
            "o": [t.signature() for t in self.keyset],
            "v": [format_value(v) for v in last_row],
        }
        return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def parse_read(
    product: Product, params: list[tuple[str, str]], *, max_limit: int | None, pii: PiiAccess
) -> ReadQuery:
    """Parse PostgREST-style query parameters against the product's declaration.

    Without `pii.granted`, the product's PII columns are masked and a filter or an order on
    one of them is a 403 naming it."""
    masked = frozenset() if pii.granted else frozenset(c.name for c in product.columns if c.is_pii)
    query = ReadQuery(product=product, columns=product.columns, masked=masked)
    cursor: str | None = None
    seen: dict[str, str] = {}
    for name, raw in params:
        if name in RESERVED:
            if name in seen:
                raise InvalidValue(
                    f"Parameter '{name}' is given more than once ('{seen[name]}' and '{raw}').",
                    parameter=name,
                    value=raw,
                )
            seen[name] = raw
        if name == "select":
            query.columns = _parse_select(product, raw)
        elif name == "order":
            query.order = _parse_order(product, raw, pii)
        elif name == "limit":
            query.limit = _parse_count(name, raw)
            if max_limit is not None and query.limit > max_limit:
                raise LimitOutOfRange(
                    f"Parameter 'limit' has value {query.limit}; the maximum is {max_limit} "
                    'rows per request (follow the Link rel="next" cursor for more).',
                    parameter="limit",
                    maximum=max_limit,
                )
        elif name == "offset":
            query.offset = _parse_count(name, raw)
        elif name == "cursor":
            cursor = raw
        elif name == "format":
            query.format = raw
        else:
            query.filters.append(_parse_filter(product, name, raw, pii))
    if cursor is not None:
        if query.offset:
            raise InvalidValue(
                f"Parameter 'offset' has value '{seen['offset']}'; 'offset' and 'cursor' "
                "cannot be combined (the cursor already says where the page starts).",
                parameter="offset",
                value=seen["offset"],
            )
        query.after = _decode_cursor(query, cursor)
    return query


def _known(product: Product, what: str) -> str:
    return ", ".join(product.column_names)


def _column(product: Product, name: str, *, parameter: str) -> Column:
    column = product.column(name)
    if column is None:
        raise UnknownColumn(
            f"Unknown column '{name}' in '{parameter}'; known: {_known(product, parameter)}.",
            parameter=parameter,
            column=name,
        )
    return column


def _parse_select(product: Product, raw: str) -> tuple[Column, ...]:
    if raw.strip() in ("", "*"):
        return product.columns
    columns: list[Column] = []
    for part in raw.split(","):
        name = part.strip()
        if name == "*":
            columns.extend(product.columns)
            continue
        column = _column(product, name, parameter="select")
        if column not in columns:
            columns.append(column)
    return tuple(columns)


def _refuse_masked(column: Column, parameter: str, pii: PiiAccess) -> None:
    if column.is_pii and not pii.granted:
        raise PiiColumn(column.name, parameter, pii.scope)


def _parse_order(product: Product, raw: str, pii: PiiAccess) -> tuple[OrderTerm, ...]:
    terms: list[OrderTerm] = []
    for part in raw.split(","):
        name, *modifiers = part.strip().split(".")
        column = _column(product, name, parameter="order")
        _refuse_masked(column, "order", pii)
        if any(t.column.name == name for t in terms):
            # each column once: a longer order means nothing more, and PostgreSQL refuses
            # one of more than 1,664 terms
            raise InvalidValue(
                f"Parameter 'order' names column '{name}' more than once.",
                parameter="order",
                column=name,
            )
        if not column.sortable:
            sortable = ", ".join(c.name for c in product.columns if c.sortable)
            raise InvalidValue(
                f"Parameter 'order' has '{part}': column '{name}' is not sortable; "
                f"sortable columns: {sortable}.",
                parameter="order",
                column=name,
            )
        descending, nulls_first = False, None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls_first = modifier == "nullsfirst"
            else:
                raise InvalidValue(
                    f"Parameter 'order' has '{part}': '{modifier}' is not one of "
                    "asc, desc, nullsfirst, nullslast.",
                    parameter="order",
                    value=part,
                )
        terms.append(OrderTerm(column, descending, nulls_first))
    return tuple(terms)


_MAX_COUNT = 2**63 - 1  # LIMIT and OFFSET are bigint in PostgreSQL


def _parse_count(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_COUNT:
        raise InvalidValue(
            f"Parameter '{name}' has value '{raw}'; expected a whole number from 0 to "
            f"{_MAX_COUNT}.",
            parameter=name,
            value=raw,
        )
    return int(raw)


def _parse_filter(product: Product, name: str, raw: str, pii: PiiAccess) -> Filter:
    column = product.column(name)
    if column is None:
        raise UnknownParameter(
            f"Unknown query parameter '{name}'. Filterable columns: "
            f"{', '.join(c.name for c in product.columns if c.filterable)}; "
            f"other parameters: {', '.join(RESERVED)}.",
            parameter=name,
        )
    _refuse_masked(column, name, pii)
    if not column.filterable:
        raise InvalidValue(
            f"Parameter '{name}' has '{raw}': column '{name}' cannot be filtered.", parameter=name
        )
    negated = raw.startswith("not.")
    body = raw[4:] if negated else raw
    operator, dot, text = body.partition(".")
    if not dot or operator not in OPERATORS:
        raise UnknownOperator(
            f"Parameter '{name}' has '{raw}': expected <operator>.<value> with an operator "
            f"among {', '.join(OPERATORS)} (optionally after 'not.').",
            parameter=name,
            operator=operator,
        )
    value: Any
    if operator == "is":
        if text not in _IS_VALUES or (
            text in ("true", "false", "unknown") and column.type is not ColumnType.BOOLEAN
        ):
            allowed = "null, not_null" + (
                ", true, false, unknown" if column.type is ColumnType.BOOLEAN else ""
            )
            raise InvalidValue(
                f"Parameter '{name}' has 'is.{text}'; expected one of {allowed}.",
                parameter=name,
                value=text,
            )
        value = text
    elif operator in _PATTERNS:
        if column.type is not ColumnType.TEXT:
            raise InvalidValue(
                f"Parameter '{name}' has '{raw}': operator '{operator}' needs a text column; "
                f"'{name}' is {column.type}.",
                parameter=name,
                value=raw,
            )
        value = parse_value(column, text, parameter=name).replace("*", "%")
    elif operator == "in":
        value = [parse_value(column, item, parameter=name) for item in _parse_list(name, text)]
    else:
        value = parse_value(column, text, parameter=name)
    return Filter(column, operator, value, negated)


def _parse_list(name: str, text: str) -> list[str]:
    if not (text.startswith("(") and text.endswith(")")):
        raise InvalidValue(
            f"Parameter '{name}' has 'in.{text}'; expected a list like in.(a,b,\"c,d\").",
            parameter=name,
        )
    inner = text[1:-1]
    if '"' not in inner:  # no quoting: a plain split (a POST read's thousands of keys)
        return inner.split(",") if text != "()" else []
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in inner:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise InvalidValue(
            f"Parameter '{name}' has an unclosed quote in 'in.{text}'.", parameter=name
        )
    if text != "()":  # in.() is the empty list; in.("") holds one empty string
        items.append("".join(current))
    return items


def _decode_cursor(query: ReadQuery, raw: str) -> tuple[Any, ...]:
    problem = InvalidCursor(
        f"Parameter 'cursor' has value '{raw}', which is not a cursor this product issued "
        'for this order; use the Link rel="next" URL as given.',
        parameter="cursor",
        value=raw,
    )
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise problem from None
    terms = query.keyset
    if (
        not isinstance(payload, dict)
        or payload.get("o") != [t.signature() for t in terms]
        or not isinstance(payload.get("v"), list)
        or len(payload["v"]) != len(terms)
    ):
        raise problem
    values: list[Any] = []
    for term, text in zip(terms, payload["v"], strict=True):
        if text is not None and not isinstance(text, str):
            raise problem
        try:
            values.append(
                None if text is None else parse_value(term.column, text, parameter="cursor")
            )
        except Problem:
            raise problem from None
    return tuple(values)


class SqlBuilder:
    """Collects bound parameters while a statement is written."""

    def __init__(
        self, *, exact_numeric: str = "numeric", pseudonym: PseudonymKey | None = None
    ) -> None:
        self.args: list[Any] = []
        self.exact_numeric = exact_numeric
        self.pseudonym = pseudonym

    def bind(self, value: Any, column: Column, *, array: bool = False) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{bind_type(column, self.exact_numeric)}{'[]' if array else ''}"

    def _bind_bytes(self, value: bytes) -> str:
        self.args.append(value)
        return f"${len(self.args)}::bytea"

    def column(self, column: Column) -> str:
        """A column's value in SQL: its quoted name, or a computed column's expression."""
        if column.computed is None:
            return quote_ident(column.name)
        if self.pseudonym is None:
            raise RuntimeError(
                f"Column '{column.name}' is computed with the pseudonymisation key, which this "
                "reader was not given."
            )
        return self.pseudonym.sql(quote_ident(column.computed.source), self._bind_bytes)

    def output(self, column: Column, query: ReadQuery, *, as_text: bool = False) -> str:
        """A selected column as an output of the SELECT list: a masked column is a typed
        NULL (its value never leaves the database), a computed one its expression; with
        `as_text`, timestamps are rendered as ISO 8601 text (COPY's CSV)."""
        name = quote_ident(column.name)
        if column.name in query.masked:
            return f"CAST(NULL AS {'text' if as_text else sql_type(column)}) AS {name}"
        value = self.column(column)
        if as_text and column.type is ColumnType.TIMESTAMP:
            return f"to_json({value}) #>> '{{}}' AS {name}"
        return value if value == name else f"{value} AS {name}"

    def outputs(self, query: ReadQuery, *, as_text: bool = False) -> str:
        """The SELECT list of the query's selected columns."""
        return ", ".join(self.output(c, query, as_text=as_text) for c in query.columns)

    def where(self, query: ReadQuery, *, keyset: bool = True) -> str:
        clauses = [self._filter(f) for f in query.filters]
        if keyset and query.after is not None:
            clauses.append(self._after(query.keyset, query.after))
        return " WHERE " + " AND ".join(clauses) if clauses else ""

    def before_cursor(self, query: ReadQuery) -> str:
        """WHERE clause of the matching rows that sort before the query's cursor."""
        assert query.after is not None
        clauses = [self._filter(f) for f in query.filters]
        # IS NOT TRUE, not NOT: a NULL column makes the comparison NULL for rows sorted before
        clauses.append(f"{self._after(query.keyset, query.after)} IS NOT TRUE")
        return " WHERE " + " AND ".join(clauses)

    def _filter(self, f: Filter) -> str:
        col = self.column(f.column)
        if f.operator == "is":
            clause = f"{col} IS {_IS_VALUES[f.value]}"
        elif f.operator == "in":
            clause = f"{col} = ANY({self.bind(f.value, f.column, array=True)})"
        elif f.operator in _PATTERNS:
            clause = f"{col} {_PATTERNS[f.operator]} {self.bind(f.value, f.column)}"
        else:
            clause = f"{col} {_COMPARISONS[f.operator]} {self.bind(f.value, f.column)}"
        return f"NOT ({clause})" if f.negated else clause

    def _after(self, terms: tuple[OrderTerm, ...], values: tuple[Any, ...]) -> str:
        """Rows strictly after `values` in the keyset order (NULL placement respected)."""
        alternatives: list[str] = []
        for i, (term, value) in enumerate(zip(terms, values, strict=True)):
            equal = [self._equal(t, v) for t, v in zip(terms[:i], values[:i], strict=True)]
            later = self._later(term, value)
            if later is None:
                continue
            alternatives.append("(" + " AND ".join([*equal, later]) + ")")
        if not alternatives:
            return "FALSE"
        after = "(" + " OR ".join(alternatives) + ")"
        first, value = terms[0], values[0]
        if len(alternatives) > 1 and value is not None and not first.column.nullable:
            # implied by the alternatives, and an index on the first column can start there:
            # a deep page costs what the first one does
            bound = "<=" if first.descending else ">="
            column = quote_ident(first.column.name)
            after = f"({column} {bound} {self.bind(value, first.column)} AND {after})"
        return after

    def _equal(self, term: OrderTerm, value: Any) -> str:
        col = quote_ident(term.column.name)
        return f"{col} IS NULL" if value is None else f"{col} = {self.bind(value, term.column)}"

    def _later(self, term: OrderTerm, value: Any) -> str | None:
        col = quote_ident(term.column.name)
        nulls_first = term.effective_nulls_first
        if value is None:
            return f"{col} IS NOT NULL" if nulls_first else None
        comparison = f"{col} {'<' if term.descending else '>'} {self.bind(value, term.column)}"
        if nulls_first or not term.column.nullable:  # no NULLs come after it
            return comparison
        return f"({comparison} OR {col} IS NULL)"


def order_by(query: ReadQuery) -> str:
    """The ORDER BY clause: the requested order completed by the key."""
    return " ORDER BY " + ", ".join(t.sql() for t in query.keyset)
