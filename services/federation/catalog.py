"""The mesh catalog: every domain's products with their live metadata, and the mesh's metrics
with their lineage; a domain that is down is listed as unavailable, not dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from services.federation.fetch import DomainRegistry
from services.federation.metrics import METRICS, Metric
from shared.errors import Problem
from shared.reading.routes import catalogue_entry
from shared.security.auth import Principal


def metric_entry(metric: Metric) -> dict[str, Any]:
    """A metric in the catalogue: what it is, its columns and the products it reads."""
    entry = catalogue_entry("mesh", metric.product)
    entry["kind"] = "metric"
    entry["period"] = metric.period
    entry["inputs"] = sorted({i.lineage for i in metric.inputs})
    entry["scopes"] = list(metric.scopes)
    return entry


async def _domain_entry(
    registry: DomainRegistry, name: str, caller: str | None = None
) -> dict[str, Any]:
    base = registry.settings.domains[name]
    try:
        metadata = await registry.get_json(name, "metadata", f"/{name}/v1/metadata", caller)
    except Problem as problem:
        return {"name": name, "url": base, "status": "unavailable", "error": problem.detail}
    products = [
        {
            "name": product_name,
            "domain": name,
            "kind": entry["kind"],
            "url": base + entry["path"],
            "description": entry["description"],
            "owner": metadata["owner"],
            "classification": metadata["data_classification"],
            "row_count": entry["row_count"],
            "last_updated": entry["last_updated"],
            "quality_score": entry["quality_score"],
            "contract": f"{base}/{name}/v1/products/{product_name}/contract",
            "columns": entry["columns"],
        }
        # a view's freshness (materialized: docs/views.md) as its domain reports it
        | ({"freshness": entry["freshness"]} if "freshness" in entry else {})
        for product_name, entry in metadata["tables"].items()
    ]
    return {
        "name": name,
        "url": base,
        "status": "available",
        "owner": metadata["owner"],
        "description": metadata["description"],
        "update_frequency": metadata["update_frequency"],
        "data_classification": metadata["data_classification"],
        "measured_at": metadata["measured_at"],
        "products": products,
    }


def _matches(entry: dict[str, Any], needle: str) -> bool:
    texts = [entry["name"], entry.get("description") or "", entry.get("definition") or ""]
    for column in entry.get("columns", []):
        texts += [column["name"], column.get("description") or ""]
    return any(needle in text.lower() for text in texts)


async def catalog(
    registry: DomainRegistry, q: str | None, caller: str | None = None
) -> dict[str, Any]:
    """Every domain (with its products) and every metric; `q` keeps only the products and
    metrics whose name, description or columns mention it."""
    domains = list(
        await asyncio.gather(
            *(_domain_entry(registry, n, caller) for n in registry.settings.domains)
        )
    )
    metrics = [metric_entry(m) for m in METRICS]
    if q:
        needle = q.lower()
        for entry in domains:
            if entry["status"] == "available":
                entry["products"] = [p for p in entry["products"] if _matches(p, needle)]
        metrics = [m for m in metrics if _matches(m, needle)]
    return {"domains": domains, "metrics": metrics}


async def quality_overview(registry: DomainRegistry, caller: Principal) -> dict[str, Any]:
    """The latest quality run of every domain (unavailable or never run, said so). Failing-row
    samples are rows of their domain: kept only for a caller holding its read scope."""

    async def one(name: str) -> dict[str, Any]:
        try:
            run = await registry.get_json(name, "quality", f"/{name}/v1/quality", caller.subject)
        except Problem as problem:
            upstream = problem.extra.get("upstream_status")
            status = "no_run" if upstream == 404 else "unavailable"
            return {"domain": name, "status": status, "error": problem.detail}
        scope = f"{name}:read"
        if not caller.allows(scope):
            for result in run.get("results", []):
                if isinstance(result, dict):
                    result["sample_rows"] = []
            run["sample_rows_withheld"] = (
                f"failing-row samples are {name}'s rows: they need the scope '{scope}'"
            )
        return {"domain": name, "status": "available", **run}

    return {"domains": list(await asyncio.gather(*(one(n) for n in registry.settings.domains)))}
