"""A domain's HTTP API, built from its declarations: reads, single rows, catalogue, health."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from shared.db import Database
from shared.errors import NotAcceptable, NotFound, UnknownParameter, UnknownProduct
from shared.formats import MEDIA_TYPES, Format, RowSource, encode_json_array, negotiate
from shared.products import Domain, Product
from shared.query import OPERATORS, Filter, ReadQuery, parse_read
from shared.reads import DatabaseRows
from shared.settings import MeshSettings
from shared.values import json_schema, parse_value

_COUNT_MODES = ("exact", "planned", "estimated")


def product_path(service: str, product: Product) -> str:
    """The versioned path of a product of a service (a domain, or the mesh)."""
    return f"/{service}/v{product.version}/{product.name}"


def _prefer_count(request: Request) -> str | None:
    for preference in request.headers.get("prefer", "").split(","):
        key, _, value = preference.strip().partition("=")
        if key == "count" and value in _COUNT_MODES:
            return value
    return None


def _next_link(request: Request, cursor: str) -> str:
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "cursor")
    ]
    params.append(("cursor", cursor))
    return f'<{request.url.replace(query=urlencode(params))}>; rel="next"'


async def _primed(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Start a stream before the response does, so an early failure is still a problem+json."""
    first = await anext(chunks, b"")

    async def _rest() -> AsyncGenerator[bytes, None]:
        async with aclosing(chunks):
            yield first
            async for chunk in chunks:
                yield chunk

    return _rest()


@dataclass(frozen=True)
class ReadRequest:
    """What a read asks for: the format, the parsed query and the count preference."""

    fmt: Format
    query: ReadQuery
    count_mode: str | None


def parse_request(
    request: Request,
    product: Product,
    settings: MeshSettings,
    *,
    params: list[tuple[str, str]] | None = None,
) -> ReadRequest:
    """Parse a read of the product (its query parameters, Accept and Prefer headers)."""
    fmt = negotiate(request.query_params.get("format"), request.headers.get("accept"))
    paged = fmt in (Format.JSON, Format.OBJECT)
    query = parse_read(
        product,
        request.query_params.multi_items() if params is None else params,
        max_limit=settings.max_page_size if paged else None,
    )
    return ReadRequest(fmt, query, _prefer_count(request))


async def respond(
    request: Request, read: ReadRequest, source: RowSource, settings: MeshSettings
) -> Response:
    """The HTTP answer to a read: a JSON page with its headers, or a streamed format."""
    query, fmt, count_mode = read.query, read.fmt, read.count_mode
    headers: dict[str, str] = {}
    if count_mode:
        headers["Preference-Applied"] = f"count={count_mode}"
    if fmt not in (Format.JSON, Format.OBJECT):
        if count_mode:
            headers["Content-Range"] = f"*/{await source.count(query, count_mode)}"
        body = await _primed(source.stream(query, fmt))
        if fmt is Format.PARQUET:
            headers["Content-Disposition"] = f'attachment; filename="{query.product.name}.parquet"'
        return StreamingResponse(body, media_type=MEDIA_TYPES[fmt], headers=headers)
    size = 1 if fmt is Format.OBJECT else query.limit
    page = await source.page(query, settings.json_page_size if size is None else size, count_mode)
    if fmt is Format.OBJECT:
        if len(page.rows) != 1 or page.last is not None:
            raise NotAcceptable(
                "A single JSON object was requested (Accept: application/vnd.pgrst.object+json) "
                "but the read matches " + ("no rows." if not page.rows else "more than one row."),
            )
        return Response(page.rows[0], media_type=MEDIA_TYPES[Format.OBJECT])
    if query.after is None or count_mode:
        span = f"{page.start}-{page.start + len(page.rows) - 1}" if page.rows else "*"
        headers["Content-Range"] = f"{span}/{'*' if page.total is None else page.total}"
    if page.last is not None:
        headers["Link"] = _next_link(request, query.encode_cursor(page.last))
    return Response(encode_json_array(page.rows), media_type="application/json", headers=headers)


class ProductReader:
    """Answers reads of one domain's products from its database."""

    def __init__(self, domain: Domain, database: Callable[[], Database], settings: MeshSettings):
        self.domain = domain
        self.database = database
        self.settings = settings

    async def read(self, request: Request, product: Product) -> Response:
        """Rows of a product, filtered, ordered, paged and encoded as asked."""
        read = parse_request(request, product, self.settings)
        return await respond(
            request, read, DatabaseRows(self.database(), self.settings), self.settings
        )

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
        query = parse_read(product, params, max_limit=None)
        column = product.column(product.key[0])
        assert column is not None
        value = parse_value(column, key, parameter=column.name)
        query.filters.append(Filter(column, "eq", value, negated=False))
        page = await DatabaseRows(self.database(), self.settings).page(query, 1, None)
        rows = page.rows
        if not rows:
            raise NotFound(
                f"No {product.name} row has {column.name} = {key}.", product=product.name, key=key
            )
        return Response(rows[0], media_type="application/json")


def _openapi_parameters(product: Product) -> list[dict[str, Any]]:
    grammar = (
        "PostgREST filter `<operator>.<value>`, operators: "
        + ", ".join(f"`{o}`" for o in OPERATORS)
        + "; prefix `not.` to negate; `in.(a,b)`; `is.null`."
    )
    common = [
        ("select", "Comma-separated columns to return (default all): `select=a,b`."),
        ("order", "Sort: `order=col.desc.nullslast,other` (the key breaks ties)."),
        ("limit", "Rows to return; JSON pages default to 1000 and allow at most 10000."),
        ("offset", "Rows to skip (prefer the `Link` cursor for deep pages)."),
        ("cursor", 'Opaque keyset cursor from a `Link: <...>; rel="next"` header.'),
        ("format", "json, csv, ndjson, arrow or parquet (instead of an Accept header)."),
    ]
    parameters: list[dict[str, Any]] = [
        {
            "name": n,
            "in": "query",
            "required": False,
            "description": d,
            "schema": {"type": "string"},
        }
        for n, d in common
    ]
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
                    "description": f"{column.description} {grammar}",
                    "schema": {"type": "string"},
                }
            )
    return parameters


def _row_schema(product: Product) -> dict[str, Any]:
    return {
        "type": "object",
        "title": product.name,
        "properties": {c.name: json_schema(c) for c in product.columns},
        "required": list(product.column_names),
    }


_PROBLEM = {
    "application/problem+json": {
        "schema": {
            "type": "object",
            "properties": {
                k: {"type": "string"} for k in ("type", "title", "code", "detail", "instance")
            }
            | {"status": {"type": "integer"}},
        }
    }
}


def _responses(product: Product, *, many: bool) -> dict[int | str, dict[str, Any]]:
    row = _row_schema(product)
    content: dict[str, Any] = {
        "application/json": {"schema": {"type": "array", "items": row} if many else row}
    }
    if many:
        for fmt in (Format.CSV, Format.NDJSON, Format.ARROW, Format.PARQUET):
            content[MEDIA_TYPES[fmt].split(";")[0]] = {
                "schema": {"type": "string", "format": "binary"}
            }
    return {
        200: {"description": "Rows of the product." if many else "One row.", "content": content},
        400: {"description": "A parameter is malformed or unknown.", "content": _PROBLEM},
        404: {"description": "No such product or row.", "content": _PROBLEM},
        406: {
            "description": "The Accept header asks for no supported format.",
            "content": _PROBLEM,
        },
        503: {"description": "The domain database is unreachable.", "content": _PROBLEM},
    }


def _describe(product: Product, origin: str) -> str:
    lines = [product.description, "", f"Source: {origin}; key: {', '.join(product.key)}."]
    if product.definition:
        lines += ["", f"Definition: {product.definition}"]
    lines += ["", "| column | type | classification | description |", "|---|---|---|---|"]
    lines += [
        f"| {c.name} | {c.type}{' (nullable)' if c.nullable else ''} | {c.classification} | {c.description} |"
        for c in product.columns
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


def product_router(domain: Domain, reader: ProductReader) -> APIRouter:
    """The routes of every declared product, with their OpenAPI descriptions."""
    router = APIRouter()
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
        f"{prefix}/v1/{{name}}", unknown_product, methods=["GET"], include_in_schema=False
    )
    return router


def _add_product(
    router: APIRouter, domain: Domain, product: Product, reader: ProductReader
) -> None:
    async def read(request: Request) -> Response:
        return await reader.read(request, product)

    add_read_routes(router, domain.name, product, read)
    path = product_path(domain.name, product)
    title = product.name.replace("-", " ").capitalize()
    if product.is_table and len(product.key) == 1:
        key = product.key[0]

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
                    {"name": key, "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "select",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ]
            },
            responses=_responses(product, many=False),
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
) -> None:
    """A product's versioned read route and its un-versioned alias, documented from its
    declaration (plus any service-specific origin, parameters and notes)."""
    title = product.name.replace("-", " ").capitalize()
    if origin is None:
        origin = f"{'table' if product.is_table else 'analytics view'} `{product.source}`"
    description = _describe(product, origin) + (f"\n\n{notes}" if notes else "")
    current = f"/{service}/{product.name}"
    for route, visible in ((product_path(service, product), True), (current, False)):
        router.add_api_route(
            route,
            read,
            methods=["GET"],
            name=f"read_{product.name}" if visible else f"read_{product.name}_current",
            summary=f"Read {title}",
            description=description,
            tags=[product.name],
            openapi_extra={"parameters": [*_openapi_parameters(product), *parameters]},
            responses=_responses(product, many=True),
            response_class=Response,
            include_in_schema=visible,
        )
