"""The owner's repairs: `PATCH /<domain>/v1/corrections/<table>/{key}` sets any stored column
(scope `<domain>:admin`), and deletions refused while other rows refer to the row; both audited
on the `datamesh.access.audit` log (subject, row and columns, never values)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from shared.declarations.products import Domain, Product
from shared.errors import NotFound, Problem, only_parameters
from shared.reading.routes import (
    ProductReader,
    entity_tag,
    pii_scope,
)
from shared.reading.values import parse_value
from shared.security.auth import principal_of
from shared.storage.db import Database
from shared.writing.described import (
    IDEMPOTENCY_PARAMETER,
    json_body,
    path_parameter,
    row_responses,
)
from shared.writing.idempotency import (
    REPLAYED,
)
from shared.writing.inputs import (
    correction_shape,
    field_rule,
    json_schema,
    validate_body,
)
from shared.writing.requests import (
    JSON_TYPE,
    WRITE_EXTENSION,
    given_changes,
    refuse_pii_writes,
    require_json,
)
from shared.writing.store import (
    TransactionContext,
    correct_row,
)
from shared.writing.transaction import (
    RowView,
    in_transaction,
)

CORRECTIONS_PREFIX = "/{domain}/v1/corrections"


def admin_scope(domain: Domain) -> str:
    """The scope of a domain's corrections (the `admin` scope holds it too)."""
    return f"{domain.name}:admin"


# corrections and deletions, one JSON line each, next to the access log's line of the request
audit_log = logging.getLogger("datamesh.access.audit")


def audit(
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


def still_referenced(domain: Domain, product: Product, key: Any, exc: Exception) -> Problem:
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


def add_correction(
    router: APIRouter,
    domain: Domain,
    product: Product,
    database: Callable[[], Database],
    reader: ProductReader,
) -> None:
    """The route of a table's corrections: `PATCH .../corrections/<table>/{key}`."""
    key_name = product.key[0]
    key_column = product.column(key_name)
    assert key_column is not None
    # under a prefix of its own: a table's own paths (`/{key}`, a PUT's `/{a}/{b}`) would
    # take `/{key}/correction` as theirs
    path = f"{CORRECTIONS_PREFIX.format(domain=domain.name)}/{product.name}/{{{key_name}}}"
    shape = correction_shape(product)
    router.add_api_route(
        path,
        _correction(domain, product, database, reader),
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
                path_parameter(key_name, json_schema(field_rule(product, key_column))),
                IDEMPOTENCY_PARAMETER,
            ],
            "requestBody": json_body(shape),
        },
        responses=row_responses(
            product,
            pii_scope(domain),
            success={200: "The row as corrected."},
            preconditions=False,
            missing=True,
        ),
    )


def _correction(
    domain: Domain, product: Product, database: Callable[[], Database], reader: ProductReader
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of a table's corrections."""
    key_name = product.key[0]
    key_column = product.column(key_name)
    assert key_column is not None
    shape = correction_shape(product)
    model = shape.model(strict=True)

    async def correct(request: Request) -> Response:
        only_parameters(request)
        require_json(request)
        key = parse_value(key_column, request.path_params[key_name], parameter=key_name)
        body = await request.body()
        refuse_pii_writes(request, domain, product, [body])
        values = validate_body(model, body, known=shape.names)
        changes = given_changes(values, shape, "column")
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

        response = await in_transaction(request, domain, database(), body, run, view)
        if REPLAYED not in response.headers:  # committed now (a replay wrote nothing)
            audit(request, "correction", product, key, list(changes))
        return response

    return correct
