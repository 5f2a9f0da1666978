"""A domain's HTTP API, built from its declarations: reads, single rows, catalogue, health."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.convertors import StringConvertor, register_url_convertor

from shared.declarations.products import Column, ColumnType, Domain, Product
from shared.errors import (
    InvalidValue,
    NotAcceptable,
    NotFound,
    Problem,
    UnknownParameter,
    UnknownProduct,
    UnsupportedMediaType,
)
from shared.openapi import BEARER_CHALLENGE, problem
from shared.reading.formats import (
    MEDIA_TYPES,
    STREAMING,
    Format,
    RowSource,
    encode_json_array,
    negotiate,
)
from shared.reading.query import OPERATORS, Filter, PiiAccess, ReadQuery, parse_read
from shared.reading.rows import DatabaseRows
from shared.reading.streams import GuardedStream, Primed, StreamSlots
from shared.reading.values import json_schema, parse_value
from shared.security.auth import principal_of
from shared.security.pseudonym import PseudonymKey, PseudonymSettings
from shared.settings import ServiceSettings
from shared.storage.data_versions import COMPACT_ABOVE, Versions, compact
from shared.storage.db import Database
from shared.telemetry.metrics import ROWS_NOTE

_COUNT_MODES = ("exact", "planned", "estimated")
FORM = "application/x-www-form-urlencoded"
MASKED_COLUMNS = "Masked-Columns"  # the response header naming the columns read masked
_log = logging.getLogger("datamesh")


def product_path(service: str, product: Product) -> str:
    """The versioned path of a product of a service (a domain, or the mesh)."""
    return f"/{service}/v{product.version}/{product.name}"


def read_paths(service: str, product: Product) -> tuple[str, str]:
    """The paths a product's rows are read at: versioned, and the current version's alias."""
    return product_path(service, product), f"/{service}/{product.name}"


def posted_read_path(path: str) -> str:
    """Where a product's POST read is: `/<service>/v<N>/query/<product>` for the product at
    `/<service>/v<N>/<product>` (not under the product's path, where its rows' keys are)."""
    head, _, name = path.rpartition("/")
    return f"{head}/query/{name}"


def entity_tag(row_json: str) -> str:
    """The strong ETag of a row as answered: the SHA-256 of its JSON text (a single-row read
    and a write's response give the same one for the same row and caller)."""
    return '"' + hashlib.sha256(row_json.encode()).hexdigest() + '"'


# a read answered with a data version's ETag may be kept by its client, who must ask again
# (If-None-Match) before using it; its body depends on the token (PII) and on Accept
REVALIDATE = {"Cache-Control": "private, no-cache", "Vary": "Accept, Authorization, Prefer"}


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names the entity tag (weak comparison, RFC 9110
    13.1.2: `W/` ignored; `*` matches any)."""
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


_DECLARATIONS: dict[int, tuple[Product, str]] = {}


def declaration_digest(product: Product) -> str:
    """A digest of the product's declaration (its columns, key, version...), computed once per
    product: an answer's ETag changes with it (a migration that adds a column writes no row)."""
    found = _DECLARATIONS.get(id(product))
    if found is None or found[0] is not product:
        found = (product, hashlib.sha256(repr(product).encode()).hexdigest())
        _DECLARATIONS[id(product)] = found
    return found[1]


@dataclass(frozen=True)
class Representation:
    """What a read's body depends on besides its data, known before its parameters are parsed:
    the product, the format negotiated, the parameters as given, whether the caller reads PII
    in clear, the count asked for. Equal representations of equal data are equal bodies (the
    same parameters parse the same way: valid, or refused, alike)."""

    product: Product
    fmt: Format
    params: list[tuple[str, str]]
    pii_in_clear: bool
    count_mode: str | None

    @classmethod
    def of(
        cls,
        request: Request,
        product: Product,
        pii_scope: str | None,
        params: list[tuple[str, str]] | None = None,
    ) -> Representation:
        given = request.query_params.multi_items() if params is None else params
        pii = pii_access(request, pii_scope)
        return cls(
            product, requested_format(request, given), given, pii.granted, _prefer_count(request)
        )

    def tag(self, version: str, settings: ServiceSettings, salt: str = "") -> str:
        """The ETag of the answer over data at `version`: the version and a digest of the
        representation (with the product's declaration, the page size and public URL;
        `salt`: what else the service's answers depend on, such as its pseudonymisation
        key)."""
        shape = repr(
            (
                declaration_digest(self.product),
                self.fmt.value,
                sorted(self.params),
                self.pii_in_clear,
                self.count_mode,
                salt,
                settings.json_page_size,
                settings.public_url,
            )
        )
        return f'"{version}-{hashlib.sha256(shape.encode()).hexdigest()[:20]}"'


def requested_format(request: Request, params: list[tuple[str, str]]) -> Format:
    """The format a read asks for: its (last) `format` parameter, else its Accept header."""
    asked = [value for name, value in params if name == "format"]
    return negotiate(asked[-1] if asked else None, request.headers.get("accept"))


def _names_any(request: Request) -> bool:
    """Whether the request's If-None-Match is (or lists) `*`."""
    header = request.headers.get("if-none-match")
    return header is not None and any(t.strip() == "*" for t in header.split(","))


def unchanged(request: Request, tag: str | None) -> Response | None:
    """`304 Not Modified` (a POST read: the 412 problem, RFC 9110 13.1.2) if the request's
    If-None-Match names `tag`; else None."""
    if tag is None or not matches(request.headers.get("if-none-match"), tag):
        return None
    if request.method not in ("GET", "HEAD"):
        raise Unchanged(tag)
    return not_modified(tag)


def tagged(response: Response, tag: str | None) -> Response:
    """The response with its ETag and revalidation headers (none without a tag)."""
    if tag is not None:
        response.headers.update({"ETag": tag, **REVALIDATE})
    return response


class Unchanged(Problem):
    """A POST read whose If-None-Match names the current ETag: RFC 9110 answers 412 (not 304,
    which is for GET), and the client keeps the rows it has."""

    status = 412
    code = "not_modified"
    title = "Precondition failed: not modified"

    def __init__(self, tag: str):
        super().__init__(
            "The data has not changed since the ETag in If-None-Match: the rows already read "
            "are the current ones.",
            headers={"ETag": tag, **REVALIDATE},
            etag=tag,
        )


def not_modified(tag: str, headers: dict[str, str] | None = None) -> Response:
    """`304 Not Modified`: the client's copy, whose tag it sent, is the current one."""
    return Response(status_code=304, headers={"ETag": tag, **REVALIDATE, **(headers or {})})


def _prefer_count(request: Request) -> str | None:
    for preference in request.headers.get("prefer", "").split(","):
        key, _, value = preference.strip().partition("=")
        if key == "count" and value in _COUNT_MODES:
            return value
    return None


def public_link(path: str, settings: ServiceSettings) -> str:
    """A link to a path of this service: under the configured public URL, else relative (the
    request's Host header is the caller's to choose, so it never makes a link)."""
    return f"{settings.public_url or ''}{path}"


def _next_link(request: Request, cursor: str, settings: ServiceSettings) -> str:
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "cursor")
    ]
    params.append(("cursor", cursor))
    target = public_link(f"{request.url.path}?{urlencode(params)}", settings)
    return f'<{target}>; rel="next"'


async def _primed(chunks: AsyncGenerator[bytes, None]) -> Primed:
    """Start a stream before the response does, so an early failure is still a problem+json.
    A failure after the response started (the database lost mid-stream) aborts it: the
    connection closes without the body's end (no final chunk), so the client gets an
    incomplete read, never a short answer that looks whole (docs/operations.md)."""
    first = b""
    while not first:  # an encoder may yield an empty chunk before its first read
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        first = chunk
    return Primed(first, chunks)


@dataclass(frozen=True)
class ReadRequest:
    """What a read asks for: the format, the parsed query and the count preference."""

    fmt: Format
    query: ReadQuery
    count_mode: str | None


def pii_access(request: Request, pii_scope: str | None) -> PiiAccess:
    """Whether the request's verified caller reads PII in clear: it holds `pii_scope`."""
    if pii_scope is None:
        return PiiAccess.masked()
    return PiiAccess(pii_scope, principal_of(request).allows(pii_scope))


def parse_request(
    request: Request,
    product: Product,
    settings: ServiceSettings,
    *,
    pii_scope: str | None,
    params: list[tuple[str, str]] | None = None,
) -> ReadRequest:
    """Parse a read of the product (its query parameters, Accept and Prefer headers). PII
    columns are masked unless the caller holds `pii_scope` (None: masked for everyone)."""
    given = request.query_params.multi_items() if params is None else params
    fmt = requested_format(request, given)
    paged = fmt in (Format.JSON, Format.OBJECT)
    query = parse_read(
        product,
        given,
        max_limit=settings.max_page_size if paged else None,
        pii=pii_access(request, pii_scope),
    )
    return ReadRequest(fmt, query, _prefer_count(request))


def masked_header(query: ReadQuery) -> dict[str, str]:
    """`Masked-Columns: email, phone`: the selected columns answered masked (null), if any."""
    masked = query.masked_columns
    return {MASKED_COLUMNS: ", ".join(masked)} if masked else {}


async def respond(
    request: Request,
    read: ReadRequest,
    source: RowSource,
    settings: ServiceSettings,
    slots: StreamSlots | None = None,
) -> Response:
    """The HTTP answer to a read: a JSON page with its headers, or a streamed format (within
    the stream bounds of `slots`, if given; aborted if its client stops reading,
    shared.reading.streams)."""
    query, fmt, count_mode = read.query, read.fmt, read.count_mode
    headers = masked_header(query)
    if count_mode:
        headers["Preference-Applied"] = f"count={count_mode}"
    if fmt not in (Format.JSON, Format.OBJECT):
        release = await slots.acquire(request) if slots else _nothing
        try:
            if count_mode:
                headers["Content-Range"] = f"*/{await source.count(query, count_mode)}"
            body = await _primed(source.stream(query, fmt, _counting(request)))
        except BaseException:
            release()
            raise
        if fmt is Format.PARQUET:
            headers["Content-Disposition"] = f'attachment; filename="{query.product.name}.parquet"'
        return GuardedStream(
            body,
            release=release,
            send_timeout=settings.stream_send_timeout_seconds,
            media_type=MEDIA_TYPES[fmt],
            headers=headers,
        )
    size = 1 if fmt is Format.OBJECT else query.limit
    page = await source.page(query, settings.json_page_size if size is None else size, count_mode)
    if fmt is Format.OBJECT:
        if len(page.rows) != 1 or page.last is not None:
            raise NotAcceptable(
                "A single JSON object was requested (Accept: application/vnd.pgrst.object+json) "
                "but the read matches " + ("no rows." if not page.rows else "more than one row."),
            )
        return Response(page.rows[0], media_type=MEDIA_TYPES[Format.OBJECT], headers=headers)
    if query.after is None or count_mode:
        span = f"{page.start}-{page.start + len(page.rows) - 1}" if page.rows else "*"
        headers["Content-Range"] = f"{span}/{'*' if page.total is None else page.total}"
    if page.last is not None:
        headers["Link"] = _next_link(request, query.encode_cursor(page.last), settings)
    return Response(encode_json_array(page.rows), media_type="application/json", headers=headers)


def _nothing() -> None:
    pass


def _counting(request: Request) -> Callable[[int], None]:
    """Note the rows a stream sends in the request's scope, for its access line and metrics."""
    scope = request.scope
    scope[ROWS_NOTE] = 0

    def counted(rows: int) -> None:
        scope[ROWS_NOTE] += rows

    return counted


def pii_scope(domain: Domain) -> str:
    """The scope a caller needs to read the domain's PII columns in clear."""
    return f"{domain.name}:pii"


class ProductReader:
    """Answers reads of one domain's products from its database."""

    def __init__(
        self,
        domain: Domain,
        database: Callable[[], Database],
        settings: ServiceSettings,
        pseudonyms: PseudonymSettings | None = None,
    ):
        self.domain = domain
        self.database = database
        self.settings = settings
        self._pseudonyms = pseudonyms
        self.pseudonym: PseudonymKey | None = None
        self.slots = self._slots()
        self._versions: Versions | None = None  # found at the first read
        self._compacting: asyncio.Task[None] | None = None
        self._key_digest = ""

    def _slots(self) -> StreamSlots:
        settings = self.settings
        return StreamSlots(
            per_caller=settings.max_streams_per_caller,
            total=settings.stream_slots,
            wait=settings.pool_timeout_seconds,
            mesh_subjects=frozenset(settings.mesh_subjects),
        )

    @property
    def computes_pseudonyms(self) -> bool:
        """Whether a product of the domain declares a pseudonymous (computed) column."""
        return any(c.computed for p in self.domain.products for c in p.columns)

    def start(self) -> None:
        """Load the pseudonymisation key the domain's computed columns need (at startup: a
        domain that needs one and has none refuses to start, saying why)."""
        if self.computes_pseudonyms:
            self.pseudonym = (self._pseudonyms or PseudonymSettings()).key()
            # in the ETags: another key computes other pseudonyms from the same rows
            self._key_digest = hashlib.sha256(self.pseudonym.outer).hexdigest()
        self.slots = self._slots()  # fresh bounds for each run of the app
        self._versions = None  # the database may have been migrated in between

    def rows(self, conn: asyncpg.Connection | None = None) -> DatabaseRows:
        return DatabaseRows(self.database(), self.settings, self.pseudonym, conn)

    async def read(
        self, request: Request, product: Product, params: list[tuple[str, str]] | None = None
    ) -> Response:
        """Rows of a product, filtered, ordered, paged and encoded as asked (by the query
        string, or `params`: a POST read's); PII columns masked unless the caller holds the
        domain's pii scope. A product with a data version answers with an ETag, and `304 Not
        Modified` when the request's If-None-Match names the current one (nothing is read
        then). A JSON page reads the version and its rows on one connection; a stream takes
        its own (held as long as it streams)."""
        shape = Representation.of(request, product, pii_scope(self.domain), params)

        def parsed() -> ReadRequest:
            return parse_request(
                request, product, self.settings, pii_scope=pii_scope(self.domain), params=params
            )

        # a tag is only ever given to a valid read, so a request naming one is the same valid
        # read: its parameters need no parsing to be answered 304; `*` names any, so the
        # parameters of a request sending it are checked first
        read = parsed() if _names_any(request) else None
        if shape.fmt in STREAMING:  # the version first, on a connection of its own
            async with self.database().connection() as conn:
                tag = await self.entity_tag(conn, shape)
            answer = unchanged(request, tag)
            if answer is None:
                answer = await respond(
                    request, read or parsed(), self.rows(), self.settings, self.slots
                )
            return tagged(answer, tag)
        async with self.database().connection() as conn:
            tag = await self.entity_tag(conn, shape)
            answer = unchanged(request, tag)
            if answer is None:
                answer = await respond(request, read or parsed(), self.rows(conn), self.settings)
            return tagged(answer, tag)

    async def entity_tag(self, conn: asyncpg.Connection, shape: Representation) -> str | None:
        """The ETag of a read's answer: the product's data version (read before the rows:
        shared.storage.data_versions) and its representation (with the pseudonymisation key's
        digest). None if the product has no data version."""
        if self._versions is None:
            self._versions = await Versions.find(conn, self.domain)
        found = await self._versions.read(conn, shape.product)
        if found is None:
            return None
        version, pending = found
        if pending > COMPACT_ABOVE and self._compacting is None:
            self._compacting = asyncio.create_task(self._compact(self.database()))
        return shape.tag(str(version), self.settings, self._key_digest)

    async def read_posted(self, request: Request, product: Product) -> Response:
        """A read whose parameters are in its body too (a form, as in a query string), for
        filters too long for a URL, such as `customer_id=in.(...)` of thousands of keys; the
        same grammar, answers and ETags as a GET with all of them in its query string."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != FORM:
            raise UnsupportedMediaType(
                f"A POST read's body is a form ({FORM}): the read's parameters, as in a query "
                f"string; this one is '{media or 'none'}'.",
                content_type=media or None,
            )
        body = await request.body()
        try:
            text = body.decode()
            posted = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
        except (UnicodeDecodeError, ValueError):
            raise InvalidValue(
                "The POST read's body is not a form of UTF-8 name=value pairs joined by '&'."
            ) from None
        return await self.read(request, product, [*request.query_params.multi_items(), *posted])

    async def _compact(self, database: Database) -> None:
        try:
            async with database.connection() as conn:
                await compact(conn)
        except Exception:  # the next read past the threshold tries again
            _log.warning("compacting the %s data versions failed", self.domain.name, exc_info=True)
        finally:
            self._compacting = None

    async def read_one(self, request: Request, product: Product, key: str) -> Response:
        """One row of a table by its key, as a JSON object."""
        fmt = negotiate(request.query_params.get("format"), request.headers.get("accept"))
        if fmt not in (Format.JSON, Format.OBJECT):
            raise NotAcceptable(
                f"A single row is served as JSON only; the request asks for {fmt.value}.",
                accept=fmt.value,
            )
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "format"]
        for name, _ in params:
            if name != "select":
                raise UnknownParameter(
                    f"Parameter '{name}' is not accepted when reading one row; use select or format.",
                    parameter=name,
                )
        query = parse_read(
            product, params, max_limit=None, pii=pii_access(request, pii_scope(self.domain))
        )
        column = product.column(product.key[0])
        assert column is not None
        value = parse_value(column, key, parameter=column.name)
        query.filters.append(Filter(column, "eq", value, negated=False))
        page = await self.rows().page(query, 1, None)
        rows = page.rows
        if not rows:
            raise NotFound(
                f"No {product.name} row has {column.name} = {key}.", product=product.name, key=key
            )
        headers = {"ETag": entity_tag(rows[0]), **masked_header(query)}
        return Response(rows[0], media_type="application/json", headers=headers)


def _pii_note(column: Column, pii_scope: str | None) -> str:
    if not column.is_pii:
        return ""
    if pii_scope is None:
        return " PII: always masked (null)."
    return (
        f" PII: masked (null) unless the token carries `{pii_scope}`; filtering or sorting on "
        "it without that scope is a 403."
    )


_TEXT: dict[str, Any] = {"type": "string"}
# LIMIT and OFFSET: whole numbers up to PostgreSQL's bigint
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_INTEGER_RANGES = {ColumnType.INTEGER: 2**31, ColumnType.BIGINT: 2**63}
# marks the operations whose parameters are PostgREST's read grammar (see schemathesis.toml)
READ_GRAMMAR = {"x-read-grammar": "postgrest"}


def _choice(*words: str) -> dict[str, Any]:
    """A string that is one of the words, in any letter case (as the server compares them)."""
    spelled = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w) for w in words)
    return {"type": "string", "pattern": f"^(?:{'|'.join(spelled)})$"}


def _key_schema(column: Column) -> dict[str, Any]:
    """The schema of a key in a URL path: whole numbers in the column's range, else text."""
    bound = _INTEGER_RANGES.get(column.type)
    if bound is None:
        return {"type": "string"}
    return {"type": "integer", "minimum": -bound, "maximum": bound - 1}


def _openapi_parameters(product: Product, pii_scope: str | None) -> list[dict[str, Any]]:
    grammar = (
        "PostgREST filter `<operator>.<value>`, operators: "
        + ", ".join(f"`{o}`" for o in OPERATORS)
        + "; prefix `not.` to negate; `in.(a,b)`; `is.null`."
    )
    common = [
        ("select", "Comma-separated columns to return (default all): `select=a,b`.", _TEXT),
        ("order", "Sort: `order=col.desc.nullslast,other` (the key breaks ties).", _TEXT),
        ("limit", "Rows to return; JSON pages default to 1000 and allow at most 10000.", _COUNT),
        ("offset", "Rows to skip (prefer the `Link` cursor for deep pages).", _COUNT),
        ("cursor", 'Opaque keyset cursor from a `Link: <...>; rel="next"` header.', _TEXT),
        (
            "format",
            "json, csv, ndjson, arrow or parquet, in any case (instead of an Accept header).",
            _choice(*(f.value for f in STREAMING), Format.JSON.value),
        ),
    ]
    parameters: list[dict[str, Any]] = [
        {"name": n, "in": "query", "required": False, "description": d, "schema": schema}
        for n, d, schema in common
    ]
    parameters.append(
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The `ETag` of an earlier answer to the same read: `304 Not Modified` "
            "(no body) if its data has not changed since.",
            "schema": {"type": "string"},
        }
    )
    parameters.append(
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "description": "`count=exact|planned|estimated`: the total in `Content-Range`.",
            "schema": {"type": "string"},
        }
    )
    for column in product.columns:
        if column.filterable:
            parameters.append(
                {
                    "name": column.name,
                    "in": "query",
                    "required": False,
                    "description": f"{column.description}{_pii_note(column, pii_scope)} {grammar}",
                    "schema": {"type": "string"},
                }
            )
    return parameters


def _column_schema(column: Column, pii_scope: str | None) -> dict[str, Any]:
    if not column.is_pii:
        return json_schema(column)
    schema = json_schema(replace(column, nullable=True))  # masked: null
    schema["description"] += _pii_note(column, pii_scope)
    return schema


def _row_schema(product: Product, pii_scope: str | None) -> dict[str, Any]:
    return {
        "type": "object",
        "title": product.name,
        "description": "Every column, or those named by `select`.",
        "properties": {c.name: _column_schema(c, pii_scope) for c in product.columns},
        "additionalProperties": False,
    }


_PAGE_HEADERS: dict[str, Any] = {
    "Content-Range": {
        "description": "The rows answered and the total, PostgREST's way: `0-999/*`, "
        "`0-999/7000` with `Prefer: count=...`, `*/0` for no rows; `*/N` on a streamed format.",
        "schema": {"type": "string", "pattern": "^(?:[0-9]+-[0-9]+|[*])/(?:[0-9]+|[*])$"},
    },
    "Link": {
        "description": 'The next page, when there is one: `<url>; rel="next"`.',
        "schema": {"type": "string", "pattern": '^<[^>]+>; rel="next"$'},
    },
    "Preference-Applied": {
        "description": "The `count` preference applied.",
        "schema": {"type": "string", "pattern": "^count=(?:exact|planned|estimated)$"},
    },
    "Content-Disposition": {
        "description": "On Parquet: an attachment named after the product.",
        "schema": {"type": "string"},
    },
}


def _responses(
    product: Product, pii_scope: str | None, *, many: bool
) -> dict[int | str, dict[str, Any]]:
    row = _row_schema(product, pii_scope)
    content: dict[str, Any] = {
        "application/json": {"schema": {"type": "array", "items": row} if many else row}
    }
    if many:
        for fmt in (Format.CSV, Format.NDJSON, Format.ARROW, Format.PARQUET):
            content[MEDIA_TYPES[fmt].split(";")[0]] = {
                "schema": {"type": "string", "format": "binary"}
            }
    ok: dict[str, Any] = {
        "description": "Rows of the product." if many else "One row.",
        "content": content,
    }
    if not many:
        ok["headers"] = {
            "ETag": {
                "description": "Strong entity tag of the row as answered: send it in `If-Match` "
                "to change the row only if it is still this one.",
                "schema": {"type": "string"},
            }
        }
    if many:
        ok["headers"] = dict(_PAGE_HEADERS) | {
            "ETag": {
                "description": "The answer's entity tag (its data's version and the read): send "
                "it in `If-None-Match` to get `304 Not Modified` while nothing changed. Absent "
                "where the data has no version.",
                "schema": {"type": "string"},
            }
        }
    if any(c.is_pii for c in product.columns):
        ok.setdefault("headers", {})
        ok["headers"] |= {
            MASKED_COLUMNS: {
                "description": "The selected PII columns answered masked (null), comma-separated; "
                "absent when none is.",
                "schema": {"type": "string"},
            }
        }
    answers: dict[int | str, dict[str, Any]] = {200: ok}
    if many:
        answers[304] = {
            "description": "Not modified: the `If-None-Match` names the current answer's ETag.",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        }
    return answers | {
        400: problem("A parameter is malformed or unknown."),
        403: problem(
            "The token lacks a scope: the product's, or (a filter or order on a PII column, code "
            "`pii_column`) the domain's pii scope.",
            headers=BEARER_CHALLENGE,
        ),
        404: problem("No such product or row."),
        406: problem("The Accept header or `format` asks for no supported format."),
        503: problem("The domain database is unreachable (`Retry-After` says when to retry)."),
        504: problem("The read ran longer than the statement timeout (`statement_timeout`)."),
    }


def _describe(product: Product, origin: str, pii_scope: str | None) -> str:
    lines = [product.description, "", f"Source: {origin}; key: {', '.join(product.key)}."]
    if product.definition:
        lines += ["", f"Definition: {product.definition}"]
    lines += ["", "| column | type | classification | description |", "|---|---|---|---|"]
    lines += [
        f"| {c.name} | {c.type}{' (nullable)' if c.nullable else ''} | {c.classification} | {c.description} |"
        for c in product.columns
    ]
    pii = [c.name for c in product.columns if c.is_pii]
    if pii:
        clear = f"unless the token carries `{pii_scope}`" if pii_scope else "always"
        lines += [
            "",
            f"PII columns ({', '.join(pii)}) are masked (null) {clear}; the `{MASKED_COLUMNS}` "
            "response header lists the masked columns, and a filter or order on one of them "
            "without the scope is a 403 (`pii_column`).",
        ]
    return "\n".join(lines)


def catalogue_entry(service: str, product: Product) -> dict[str, Any]:
    """What a product list says of one product (the mesh discovers products from it)."""
    return {
        "name": product.name,
        "domain": service,
        "version": product.version,
        "path": product_path(service, product),
        "kind": "table" if product.is_table else "view",
        "description": product.description,
        "definition": product.definition or None,
        "key": list(product.key),
        "columns": [
            {
                "name": c.name,
                "type": str(c.type),
                "nullable": c.nullable,
                "classification": str(c.classification),
                "description": c.description,
                "filterable": c.filterable,
                "sortable": c.sortable,
            }
            for c in product.columns
        ],
    }


Handler = Callable[[Request], Awaitable[Response]]


class _ProductName(StringConvertor):
    """A product's name in a path: no '/', and no ':' (`<table>:batch` is a write's path, which
    the unknown-product answer must not claim for GET)."""

    regex = "[^/:]+"


register_url_convertor("product_name", _ProductName())


def product_router(domain: Domain, reader: ProductReader) -> APIRouter:
    """The routes of every declared product, with their OpenAPI descriptions (the app that
    includes it loads the reader's pseudonymisation key at startup)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader.start()
        yield

    router = APIRouter(lifespan=lifespan)
    prefix = f"/{domain.name}"

    async def list_products(request: Request) -> JSONResponse:
        """The data products this domain publishes, with their columns."""
        return JSONResponse([catalogue_entry(domain.name, p) for p in domain.products])

    router.add_api_route(
        f"{prefix}/v1",
        list_products,
        methods=["GET"],
        summary="List data products",
        tags=["catalogue"],
    )
    for product in domain.products:
        _add_product(router, domain, product, reader)

    known = ", ".join(p.name for p in domain.products)

    async def unknown_product(name: str) -> Response:
        raise UnknownProduct(
            f"Unknown data product '{name}' in domain '{domain.name}'; known: {known}.",
            product=name,
        )

    router.add_api_route(
        f"{prefix}/v1/{{name:product_name}}",
        unknown_product,
        methods=["GET"],
        include_in_schema=False,
    )
    return router


def read_handlers(domain: Domain, reader: ProductReader) -> dict[str, Handler]:
    """Each product's read handler by its paths (versioned, and the current alias): what the
    read lane serves (shared.reading.lane)."""
    handlers: dict[str, Handler] = {}
    for product in domain.products:

        async def read(request: Request, product: Product = product) -> Response:
            return await reader.read(request, product)

        handlers |= dict.fromkeys(read_paths(domain.name, product), read)
    return handlers


def _add_product(
    router: APIRouter, domain: Domain, product: Product, reader: ProductReader
) -> None:
    async def read(request: Request) -> Response:
        return await reader.read(request, product)

    add_read_routes(router, domain.name, product, read, pii_scope=pii_scope(domain))
    path = product_path(domain.name, product)

    async def read_posted(request: Request) -> Response:
        return await reader.read_posted(request, product)

    router.add_api_route(
        posted_read_path(path),
        read_posted,
        methods=["POST"],
        name=f"query_{product.name}",
        summary=f"Read {product.name.replace('-', ' ')} with parameters in the body",
        description=f"The read of `GET {path}` with its parameters (any of them) in a form body "
        "as well as in the query string: for filters too long for a URL, such as "
        "`customer_id=in.(1,2,...)` with thousands of keys. Same grammar, formats, ETags and "
        "errors; the body is at most the service's body limit.",
        tags=[product.name],
        openapi_extra={
            "parameters": [
                p for p in _openapi_parameters(product, pii_scope(domain)) if p["in"] == "header"
            ],
            "requestBody": {
                "required": True,
                "content": {
                    FORM: {
                        "schema": {
                            "type": "object",
                            "description": "The read's parameters: `select`, `order`, `limit`, "
                            "`format`, filters `<column>=<operator>.<value>`.",
                            "additionalProperties": {"type": "string"},
                        }
                    }
                },
            },
            **READ_GRAMMAR,
        },
        responses={
            k: v for k, v in _responses(product, pii_scope(domain), many=True).items() if k != 304
        }
        | {
            412: problem(
                "`not_modified`: the If-None-Match names the current ETag (RFC 9110 answers "
                "a POST so): the rows read before are current."
            ),
            415: problem(f"The body is not a form ({FORM})."),
        },
        response_class=Response,
    )
    title = product.name.replace("-", " ").capitalize()
    if product.is_table and len(product.key) == 1:
        key = product.key[0]
        key_column = product.column(key)
        assert key_column is not None

        async def read_one(request: Request) -> Response:
            return await reader.read_one(request, product, request.path_params[key])

        router.add_api_route(
            f"{path}/{{{key}}}",
            read_one,
            methods=["GET"],
            name=f"read_{product.source}_by_key",
            summary=f"Read one {title} row by {key}",
            description=f"One row of `{product.source}` by its key `{key}`; 404 if absent.",
            tags=[product.name],
            openapi_extra={
                "parameters": [
                    {
                        "name": key,
                        "in": "path",
                        "required": True,
                        "schema": _key_schema(key_column),
                    },
                    {
                        "name": "select",
                        "in": "query",
                        "required": False,
                        "description": "Comma-separated columns to return (default all).",
                        "schema": _TEXT,
                    },
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "description": "json, in any case: one row is served as JSON only.",
                        "schema": _choice(Format.JSON.value),
                    },
                ],
                **READ_GRAMMAR,
            },
            responses=_responses(product, pii_scope(domain), many=False),
            response_class=Response,
        )


def add_read_routes(
    router: APIRouter,
    service: str,
    product: Product,
    read: Handler,
    *,
    origin: str | None = None,
    parameters: tuple[dict[str, Any], ...] = (),
    notes: str = "",
    pii_scope: str | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> None:
    """A product's versioned read route and its un-versioned alias, documented from its
    declaration (plus any service-specific origin, parameters, notes and responses, and the
    scope that reads its PII columns in clear)."""
    title = product.name.replace("-", " ").capitalize()
    if origin is None:
        origin = f"{'table' if product.is_table else 'analytics view'} `{product.source}`"
    description = _describe(product, origin, pii_scope) + (f"\n\n{notes}" if notes else "")
    versioned, current = read_paths(service, product)
    for route, visible in ((versioned, True), (current, False)):
        router.add_api_route(
            route,
            read,
            methods=["GET"],
            name=f"read_{product.name}" if visible else f"read_{product.name}_current",
            summary=f"Read {title}",
            description=description,
            tags=[product.name],
            openapi_extra={
                "parameters": [*_openapi_parameters(product, pii_scope), *parameters],
                **READ_GRAMMAR,
            },
            responses=_responses(product, pii_scope, many=True) | (responses or {}),
            response_class=Response,
            include_in_schema=visible,
        )
