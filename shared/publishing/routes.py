"""GET /<domain>/v1/products/{product}/snapshots: a product's snapshots in the lake, with their
manifests, newest first (docs/lake.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.declarations.products import Domain
from shared.errors import ServiceUnavailable, UnknownProduct, only_parameters
from shared.openapi import problem
from shared.publishing.lake import Lake, Snapshot, latest_snapshot_id, list_snapshots
from shared.settings import ServiceSettings


def snapshots_path(service: str, product: str) -> str:
    """Where a domain lists a product's snapshots."""
    return f"/{service}/v1/products/{product}/snapshots"


_MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The snapshot's `_manifest.json` (docs/lake.md).",
    "properties": {
        "manifest_version": {"type": "integer"},
        "domain": {"type": "string"},
        "product": {"type": "string"},
        "product_version": {"type": "integer"},
        "contract_version": {"type": "string"},
        "snapshot_id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "row_count": {"type": "integer"},
        "schema": {"type": "object"},
        "partitions": {"type": "array", "items": {"type": "object"}},
        "high_water_mark": {"type": "object"},
    },
}
_SNAPSHOTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["domain", "product", "version", "lake", "location", "latest", "snapshots"],
    "properties": {
        "domain": {"type": "string"},
        "product": {"type": "string"},
        "version": {"type": "integer"},
        "lake": {
            "type": ["string", "null"],
            "description": "The lake's URL (without credentials); null when none is configured.",
        },
        "location": {
            "type": ["string", "null"],
            "description": "The product's folder in the lake: its snapshots and `_latest`.",
        },
        "latest": {
            "type": ["string", "null"],
            "description": "The snapshot id `_latest` names: what a reader reads.",
        },
        "snapshots": {
            "type": "array",
            "description": "Complete snapshots, newest first.",
            "items": {
                "type": "object",
                "required": ["snapshot_id", "latest", "location", "manifest"],
                "properties": {
                    "snapshot_id": {"type": "string"},
                    "latest": {"type": "boolean"},
                    "location": {"type": "string"},
                    "manifest": _MANIFEST_SCHEMA,
                },
            },
        },
        "note": {
            "type": ["string", "null"],
            "description": "Why the list is empty: no lake configured, or nothing exported yet.",
        },
    },
}


def snapshots_router(domain: Domain, settings: ServiceSettings) -> APIRouter:
    """The snapshots route of every product of the domain, over the lake of DATAMESH_LAKE_URL."""
    router = APIRouter()
    known = ", ".join(p.name for p in domain.products)
    opened: list[Lake] = []  # the lake, opened on first use

    def lake() -> Lake:
        if not opened:
            assert settings.lake_url is not None
            opened.append(Lake.at(settings.lake_url, s3_endpoint=settings.lake_s3_endpoint))
        return opened[0]

    async def read_snapshots(request: Request, product: str) -> JSONResponse:
        only_parameters(request)
        declared = domain.product(product)
        if declared is None:
            raise UnknownProduct(
                f"Unknown data product '{product}' in domain '{domain.name}'; known: {known}.",
                product=product,
            )
        answer: dict[str, Any] = {
            "domain": domain.name,
            "product": declared.name,
            "version": declared.version,
            "lake": None,
            "location": None,
            "latest": None,
            "snapshots": [],
            "note": None,
        }
        if not settings.lake_url:
            answer["note"] = (
                f"No lake is configured for the {domain.name} domain (DATAMESH_LAKE_URL): its "
                "products are not exported (docs/lake.md)."
            )
            return JSONResponse(answer)

        def look() -> tuple[Lake, str | None, list[Snapshot]]:
            where = lake()  # opening an AWS lake asks the bucket's region: not in the loop
            latest = latest_snapshot_id(where, domain.name, declared)
            return where, latest, list_snapshots(where, domain.name, declared)

        try:
            where, latest, snapshots = await asyncio.to_thread(look)
        except (OSError, ValueError) as exc:
            raise ServiceUnavailable(
                f"The lake of the {domain.name} domain cannot be read ({type(exc).__name__}); "
                "retry later.",
                headers={"Retry-After": "5"},
            ) from None
        answer["lake"] = where.url
        answer["location"] = where.show(where.product_path(domain.name, declared))
        answer["latest"] = latest
        answer["snapshots"] = [
            {
                "snapshot_id": s.snapshot_id,
                "latest": s.snapshot_id == latest,
                "location": where.show(s.folder),
                "manifest": s.manifest,
            }
            for s in snapshots
            if s.complete
        ]
        if not answer["snapshots"]:
            answer["note"] = (
                f"Nothing of {declared.name} has been exported to the lake yet (`datamesh lake "
                f"export --domain {domain.name}`, or DATAMESH_LAKE_EXPORT_SECONDS)."
            )
        return JSONResponse(answer)

    router.add_api_route(
        snapshots_path(domain.name, "{product}"),
        read_snapshots,
        methods=["GET"],
        name="read_snapshots",
        summary="Snapshots of a product in the lake",
        description=(
            f"The snapshots of a data product of the {domain.name} domain in the lake (its "
            "output port for engines that read files: DuckDB, Spark, Trino, pandas), newest "
            "first, each with its manifest (row count, schema, partitions, high-water mark); "
            "`latest` is the one the product's `_latest` pointer names. Snapshots hold the "
            "rows as a caller without the pii scope reads them: PII columns null, "
            "pseudonymous keys present. An empty list, with a `note`, when no lake is "
            f"configured or nothing was exported yet. See docs/lake.md.\n\nProducts: {known}."
        ),
        tags=["lake"],
        responses={
            200: {
                "description": "The product's snapshots.",
                "content": {"application/json": {"schema": _SNAPSHOTS_SCHEMA}},
            },
            400: problem("A query parameter was given (none is accepted)."),
            404: problem("No such product."),
            503: problem("The lake cannot be read (`Retry-After` says when to retry)."),
        },
        response_class=JSONResponse,
    )
    return router
