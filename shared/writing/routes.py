"""A domain's write API, built from its write declarations (shared.writing.inputs): POST, PATCH, PUT
and `:batch` routes for each writable table, all the same way in every domain.

Each request is one transaction: the request's body is checked against the declarations
first, then the write, the row it answers and (with an Idempotency-Key) its kept response are
committed together, or nothing is. A write answers the row exactly as a single-row read does,
with the same ETag.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request, Response

from shared.declarations.products import Domain
from shared.errors import InvalidValue, only_parameters
from shared.reading.routes import (
    ProductReader,
    pii_scope,
    product_path,
)
from shared.security.auth import require
from shared.storage.db import Database
from shared.writing.batch import (
    batch_records,
    checked_rows,
    write_batch,
)
from shared.writing.corrections import (
    add_correction,
    admin_scope,
    audit,
    still_referenced,
)
from shared.writing.described import (
    IDEMPOTENCY_PARAMETER,
    IF_MATCH,
    IF_NONE_MATCH,
    batch_body,
    describe_batch,
    describe_change,
    describe_create,
    describe_delete,
    describe_replace,
    json_body,
    path_parameter,
    write_responses,
)
from shared.writing.idempotency import (
    REPLAYED,
)
from shared.writing.inputs import (
    json_schema,
    validate_body,
)
from shared.writing.requests import (
    CSV_TYPE,
    JSON_TYPE,
    WRITE_EXTENSION,
    Preconditions,
    given_changes,
    media_type,
    refuse_pii_writes,
    require_json,
    url_values,
)
from shared.writing.store import (
    TransactionContext,
    delete_row,
)
from shared.writing.transaction import (
    RowView,
    Run,
    in_transaction,
    row_response,
)
from shared.writing.writer import (
    TableWriter,
)


def write_router(
    domain: Domain, database: Callable[[], Database], reader: ProductReader
) -> APIRouter:
    """The write routes of every writable table of the domain (`<domain>:write` scope), and
    the owner's corrections of every table (`<domain>:admin` scope)."""
    router = APIRouter(dependencies=[Depends(require(f"{domain.name}:write"))])
    for writes in domain.writes:
        TableRoutes(router, domain, TableWriter(domain, writes), database, reader).add_all()
    corrections = APIRouter(dependencies=[Depends(require(admin_scope(domain)))])
    for product in domain.products:
        if product.is_table and len(product.key) == 1:
            add_correction(corrections, domain, product, database, reader)
    both = APIRouter()
    both.include_router(router)
    both.include_router(corrections)
    return both


class TableRoutes:
    """The write routes of one declared table: POST (create), PATCH (change), PUT (create or
    replace by natural key), DELETE and `:batch`, as its declaration allows."""

    def __init__(
        self,
        router: APIRouter,
        domain: Domain,
        writer: TableWriter,
        database: Callable[[], Database],
        reader: ProductReader,
    ):
        self.router, self.domain, self.writer = router, domain, writer
        self.database, self.reader = database, reader
        self.product, self.writes = writer.product, writer.writes
        self.path = product_path(domain.name, writer.product)
        self.title = writer.product.name.replace("-", " ")
        self.pii = pii_scope(domain)

    def add_all(self) -> None:
        if self.writes.create:
            self.add_create()
        if self.writer.change_body is not None:
            self.add_change()
        if self.writer.replacement is not None and self.writer.natural is not None:
            self.add_replace()
        if self.writes.deletable:
            self.add_delete()
        if self.writes.batch:
            self.add_batch()

    # --- the pieces every route shares ---------------------------------------------------

    def _route(
        self,
        path: str,
        handler: Callable[[Request], Awaitable[Response]],
        method: str,
        verb: str,
        *,
        summary: str,
        description: str,
        parameters: list[dict[str, Any]],
        responses: dict[int | str, dict[str, Any]],
        body: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        extra: dict[str, Any] = {**WRITE_EXTENSION, "parameters": parameters}
        if body is not None:
            extra["requestBody"] = body
        self.router.add_api_route(
            path,
            handler,
            methods=[method],
            status_code=status_code,
            name=f"{verb}_{self.product.source}",
            summary=summary,
            description=description,
            tags=[self.product.name],
            response_class=Response,
            openapi_extra=extra,
            responses=responses,
        )

    async def _json_body(self, request: Request, *records: Any) -> bytes:
        """The body of a JSON write, once its parameters, content type and PII columns (in
        the body and in `records`, the URL's values) are allowed."""
        require_json(request)
        body = await request.body()
        refuse_pii_writes(request, self.domain, self.product, [body, *records])
        return body

    def _view(self, request: Request) -> RowView:
        return RowView(request, self.domain, self.product, self.reader)

    def _write(
        self, request: Request, body: bytes, run: Run, view: RowView | None = None
    ) -> Awaitable[Response]:
        return in_transaction(request, self.domain, self.database(), body, run, view)

    def _key_parameter(self) -> dict[str, Any]:
        return path_parameter(self.writer.key, json_schema(self.writer.key_rule()))

    # --- the routes ----------------------------------------------------------------------

    def add_create(self) -> None:
        writer, shape = self.writer, self.writer.creation

        async def create(request: Request) -> Response:
            only_parameters(request)
            body = await self._json_body(request)
            values = validate_body(writer.model(shape, strict=True), body, known=shape.names)
            view = self._view(request)

            async def run(context: TransactionContext) -> Response:
                key = await writer.create(context, values.model_dump())
                return await row_response(context.conn, view, writer, key, created=True)

            return await self._write(request, body, run, view)

        self._route(
            self.path,
            create,
            "POST",
            "create",
            status_code=201,
            summary=f"Create a row of {self.title}",
            description=describe_create(writer),
            parameters=[IDEMPOTENCY_PARAMETER],
            body=json_body(shape),
            responses=write_responses(
                writer, self.pii, success={201: "The new row."}, row=True, preconditions=False
            ),
        )

    def add_change(self) -> None:
        writer, shape = self.writer, self.writer.change_body
        assert shape is not None

        async def change(request: Request) -> Response:
            only_parameters(request)
            key = writer.path_key(request.path_params[writer.key])
            body = await self._json_body(request)
            model = validate_body(writer.model(shape, strict=True), body, known=shape.names)
            changes = given_changes(model, shape, "field to change")
            preconditions = Preconditions.of(request)
            view = self._view(request)

            async def run(context: TransactionContext) -> Response:
                async def precondition(current: Any) -> None:
                    if current is None and preconditions.if_match is None:
                        return
                    text = await view.render(context.conn, current) if current is not None else None
                    preconditions.check(text)

                if not await writer.change(context, key, changes, precondition):
                    raise writer.absent(key)
                return await row_response(context.conn, view, writer, key, created=False)

            return await self._write(request, body, run, view)

        self._route(
            f"{self.path}/{{{writer.key}}}",
            change,
            "PATCH",
            "change",
            summary=f"Change a row of {self.title}",
            description=describe_change(writer),
            parameters=[self._key_parameter(), IF_MATCH, IDEMPOTENCY_PARAMETER],
            body=json_body(shape),
            responses=write_responses(
                writer, self.pii, success={200: "The row as changed."}, row=True, preconditions=True
            ),
        )

    def add_replace(self) -> None:
        writer, writes = self.writer, self.writes
        replacement, natural = writer.replacement, writer.natural
        assert replacement is not None and natural is not None
        in_path = [n for n in writes.upsert_key if n not in writes.upsert_query]
        rules = {f.rule.column.name: json_schema(f.rule) for f in natural.fields}

        async def replace(request: Request) -> Response:
            only_parameters(request, writes.upsert_query)
            raw = {name: request.path_params[name] for name in in_path}
            raw |= {name: natural_key_value(request, name) for name in writes.upsert_query}
            keys = url_values(writer.model(natural, strict=False), raw)
            body = await self._json_body(request, raw)
            values = validate_body(
                writer.model(replacement, strict=True), body, known=replacement.names
            )
            preconditions = Preconditions.of(request)
            view = self._view(request)

            async def run(context: TransactionContext) -> Response:
                async def precondition(current: Any) -> None:
                    text = await view.render(context.conn, current) if current is not None else None
                    preconditions.check(text)

                row = {**values.model_dump(), **keys}
                key, created = await writer.replace(context, row, precondition)
                return await row_response(context.conn, view, writer, key, created=created)

            return await self._write(request, body, run, view)

        self._route(
            self.path + "".join(f"/{{{name}}}" for name in in_path),
            replace,
            "PUT",
            "replace",
            summary=f"Create or replace a row of {self.title} by its natural key",
            description=describe_replace(writer),
            parameters=[
                *(path_parameter(name, rules[name]) for name in in_path),
                *(path_parameter(name, rules[name], where="query") for name in writes.upsert_query),
                IF_MATCH,
                IF_NONE_MATCH,
                IDEMPOTENCY_PARAMETER,
            ],
            body=json_body(replacement),
            responses=write_responses(
                writer,
                self.pii,
                success={201: "The row, created.", 200: "The row, replaced."},
                row=True,
                preconditions=True,
            ),
        )

    def add_delete(self) -> None:
        domain, writer, product = self.domain, self.writer, self.product

        async def delete(request: Request) -> Response:
            only_parameters(request)
            key = writer.path_key(request.path_params[writer.key])
            preconditions = Preconditions.of(request)
            view = self._view(request)

            async def run(context: TransactionContext) -> Response:
                if preconditions.if_match is not None:
                    preconditions.check(await view.render(context.conn, key))
                try:
                    async with context.conn.transaction():
                        deleted = await delete_row(context.conn, domain, writer.writes, key)
                except asyncpg.ForeignKeyViolationError as exc:
                    raise still_referenced(domain, product, key, exc) from None
                if not deleted:
                    raise writer.absent(key)
                return Response(status_code=204)

            response = await self._write(request, b"", run)
            if REPLAYED not in response.headers:  # committed now (a replay wrote nothing)
                audit(request, "deletion", product, key, [])
            return response

        self._route(
            f"{self.path}/{{{writer.key}}}",
            delete,
            "DELETE",
            "delete",
            status_code=204,
            summary=f"Delete a row of {self.title}",
            description=describe_delete(writer),
            parameters=[self._key_parameter(), IF_MATCH, IDEMPOTENCY_PARAMETER],
            responses=write_responses(
                writer, self.pii, success={204: "Deleted."}, row=False, preconditions=True
            ),
        )

    def add_batch(self) -> None:
        writer = self.writer

        async def batch(request: Request) -> Response:
            only_parameters(request)
            body = await request.body()
            records = batch_records(request, body, writer)
            refuse_pii_writes(request, self.domain, self.product, [r for _, r in records])
            rows, errors = checked_rows(records, writer, strict=media_type(request) != CSV_TYPE)

            async def run(context: TransactionContext) -> Response:
                summary = await write_batch(context, writer, rows, errors)
                return Response(orjson.dumps(summary), media_type=JSON_TYPE)

            return await self._write(request, body, run)

        self._route(
            f"{self.path}:batch",
            batch,
            "POST",
            "batch",
            summary=f"Write many rows of {self.title} at once",
            description=describe_batch(writer),
            parameters=[IDEMPOTENCY_PARAMETER],
            body=batch_body(writer),
            responses=write_responses(
                writer,
                self.pii,
                success={200: "Every row written: counts and keys in row order."},
                row=False,
                preconditions=False,
            ),
        )


def natural_key_value(request: Request, name: str) -> str:
    """A part of a PUT's natural key given as a query parameter: required, once."""
    given = request.query_params.getlist(name)
    if len(given) != 1:
        raise InvalidValue(
            f"Query parameter '{name}' is required, once: it is part of the row's natural key.",
            parameter=name,
        )
    return given[0]
