"""One transaction per write request: the idempotency key locked and its kept response
replayed, or the write run and its response kept with it; and the row answered exactly as a
single-row read answers it (`RowView`: same text, masking and ETag)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import Request, Response

from shared.declarations.products import Domain, Product
from shared.reading.query import Filter, parse_read
from shared.reading.routes import (
    MASKED_COLUMNS,
    ProductReader,
    entity_tag,
    masked_header,
    pii_access,
    pii_scope,
    product_path,
)
from shared.reading.rows import page_as_json
from shared.security.auth import principal_of
from shared.storage.db import Database
from shared.writing.idempotency import (
    Fingerprint,
    idempotency_key,
    keep_response,
    kept_response,
    lock_key,
)
from shared.writing.requests import (
    JSON_TYPE,
)
from shared.writing.store import (
    TransactionContext,
    database_problem,
    transaction_time,
)
from shared.writing.writer import (
    TableWriter,
)

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


Run = Callable[[TransactionContext], Awaitable[Response]]


async def in_transaction(
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


async def row_response(
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
