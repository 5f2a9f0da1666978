"""Data contracts: an Open Data Contract Standard (ODCS) v3 document per data product, generated
from its declaration (columns, key, checks, freshness) and its domain's (owner, service levels),
and served at /<domain>/v1/products/{product}/contract as YAML or JSON."""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import APIRouter, Query, Request, Response

from shared.declarations.checks import Check, Freshness
from shared.declarations.checks.base import duration, odcs_number, spoken
from shared.declarations.products import Classification, Column, ColumnType, Domain, Product
from shared.errors import NotAcceptable, UnknownProduct
from shared.openapi import problem
from shared.reading.formats import accepted_media
from shared.reading.routes import pii_scope, product_path
from shared.reading.values import sql_type
from shared.storage.views import MECHANISM

ODCS_API_VERSION = "v3.2.0"
YAML_MEDIA_TYPE = "application/yaml"
JSON_MEDIA_TYPE = "application/json"

# ODCS logical types (SchemaBaseProperty.logicalType) of our column types
LOGICAL_TYPES: dict[ColumnType, str] = {
    ColumnType.TEXT: "string",
    ColumnType.INTEGER: "integer",
    ColumnType.BIGINT: "integer",
    ColumnType.MONEY: "number",
    ColumnType.DECIMAL: "number",
    ColumnType.DATE: "date",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.BOOLEAN: "boolean",
}

# update_frequency words of a domain as an ODCS frequency SLA (value, unit)
_FREQUENCIES: dict[str, tuple[int, str]] = {
    "hourly": (1, "h"),
    "daily": (1, "d"),
    "weekly": (7, "d"),
}

_READ_FORMATS = "JSON (default), CSV, NDJSON, Arrow IPC stream or Parquet"


def contract_path(service: str, product: Product) -> str:
    """Where a domain serves the contract of one of its products."""
    return f"/{service}/v1/products/{product.name}/contract"


# --- quality rules ---------------------------------------------------------------------------

# The engine named by a rule only the domain can run: its SQL reads tables of the domain's
# database beyond the product (a consumer's tools, which read the product's endpoint, skip a
# custom rule of an engine they do not know; the domain's quality runs execute it).
DOMAIN_ENGINE = "datamesh"


def quality_rule(product: Product, check: Check) -> tuple[str | None, dict[str, Any]]:
    """A declared check as an ODCS quality rule, with the column it belongs to (None: the
    rule is on the whole schema object).

    The rule's query is the check's measurement, the very statement the domain's quality runs
    execute, with the threshold its value must meet: `type: sql`, runnable on PostgreSQL and
    on DuckDB over the product's published rows; or, when it reads other tables of the
    domain, `type: custom` of engine `datamesh` with the same query in its implementation."""
    measured = check.measurement(product)
    comparison = {**measured.threshold, "unit": measured.odcs_unit}
    rule: dict[str, Any]
    if measured.reads:
        rule = {
            "type": "custom",
            "engine": DOMAIN_ENGINE,
            "implementation": {
                "dialect": "postgresql",
                "query": measured.query,
                **measured.threshold,
                "reads": [product.source, *measured.reads],
                "runBy": "the domain's quality runs, on its database",
            },
            "unit": measured.odcs_unit,
        }
    else:
        rule = {"type": "sql", "query": measured.query, **comparison}
    odcs: dict[str, Any] = {
        "name": check.name,
        "description": check.description or check.default_description(product),
        **rule,
        "dimension": str(check.dimension),
        "severity": str(check.severity),
    }
    if check.warn_only:
        odcs["customProperties"] = [
            {
                "property": "warnOnly",
                "value": True,
                "description": "A breach is reported as a warning, not a failure.",
            }
        ]
    return check.rule_column, odcs


def rule_query(rule: dict[str, Any]) -> str:
    """The SQL of a contract's quality rule (of type sql, or custom of the domain's engine)."""
    if rule["type"] == "custom":
        query: str = rule["implementation"]["query"]
        return query
    sql: str = rule["query"]
    return sql


# --- the contract ----------------------------------------------------------------------------


def _property(
    domain: Domain, product: Product, column: Column, quality: list[dict[str, Any]]
) -> dict[str, Any]:
    prop: dict[str, Any] = {"name": column.name}
    if column.computed is None:
        prop["physicalName"] = column.name
    else:  # computed at read time from a stored column: no physical column of its own
        source = column.computed.source
        prop["transformSourceObjects"] = [f"{product.source}.{source}"]
        prop["transformLogic"] = (
            f"encode(hmac_sha256(pseudonymisation_secret, lower(btrim({source}))), 'hex')"
        )
        prop["transformDescription"] = (
            f"HMAC-SHA256 (hex) of {source} trimmed and lower-cased, keyed by the mesh-wide "
            "pseudonymisation secret: equal across domains, not reversible without the secret."
        )
    prop |= {
        "logicalType": LOGICAL_TYPES[column.type],
        "physicalType": sql_type(column),
        "description": column.description,
        "required": not column.nullable,
        "unique": column.unique or product.key == (column.name,),
        "primaryKey": column.name in product.key,
    }
    if column.name in product.key:
        prop["primaryKeyPosition"] = product.key.index(column.name) + 1
    prop["classification"] = str(column.classification)
    if column.classification is Classification.PII:
        prop["tags"] = ["pii"]
        prop["customProperties"] = [
            {
                "property": "readInClearScope",
                "value": pii_scope(domain),
                "description": "Callers without this scope read the value masked.",
            }
        ]
    if quality:
        prop["quality"] = quality
    return prop


def _description(domain: Domain, product: Product, url: str) -> dict[str, str]:
    usage = (
        f"Read over HTTP at {url} with PostgREST's grammar (col=op.value filters, select, "
        f"order, limit, offset, keyset cursor in the Link header), as {_READ_FORMATS} by "
        "Accept or ?format=."
    )
    if product.is_table and len(product.key) == 1:
        usage += f" One row by its key at {url}/{{{product.key[0]}}}."
    pii = [c.name for c in product.columns if c.classification is Classification.PII]
    limitations = (
        f"PII columns ({', '.join(pii)}) are masked for callers without the "
        f"{pii_scope(domain)} scope."
        if pii
        else "No PII columns."
    )
    if not product.is_table:
        limitations += (
            " An analytics view: materialized from the domain's tables and refreshed when they "
            f"change (a committed write is in it within {spoken(domain.service_levels.view_freshness)})."
        )
    return {"purpose": product.description, "usage": usage, "limitations": limitations}


def _schema_object(domain: Domain, product: Product) -> dict[str, Any]:
    by_column: dict[str | None, list[dict[str, Any]]] = {}
    for check in product.checks:
        column, rule = quality_rule(product, check)
        by_column.setdefault(column, []).append(rule)
    description = product.description
    if product.definition:
        description += f"\n\nDefinition: {product.definition}"
    # named as in SQL, like its properties and the queries of its rules: the object the rules
    # and the SLA elements refer to is the table or view (the product's name is the contract's)
    obj: dict[str, Any] = {
        "name": product.source,
        "physicalName": product.source,
        "businessName": product.name.replace("-", " ").capitalize(),
        "physicalType": "table" if product.is_table else "view",
        "logicalType": "object",
        "description": description,
        "dataGranularityDescription": f"One row per {', '.join(product.key)}.",
        "properties": [
            _property(domain, product, c, by_column.get(c.name, [])) for c in product.columns
        ],
    }
    if by_column.get(None):
        obj["quality"] = by_column[None]
    return obj


def _sla(domain: Domain, product: Product) -> list[dict[str, Any]]:
    levels = domain.service_levels
    latency, latency_unit = duration(levels.latency if product.is_table else levels.view_freshness)
    sla: list[dict[str, Any]] = [
        {
            "property": "availability",
            "value": odcs_number(levels.availability_pct),
            "unit": "percent",
            "description": "Share of time the product's endpoint answers.",
        },
        {
            "property": "latency",
            "value": latency,
            "unit": latency_unit,
            "description": "A write committed to the domain database is readable through "
            f"the endpoint within {spoken(levels.latency)}.",
        }
        if product.is_table
        else {
            "property": "latency",
            "value": latency,
            "unit": latency_unit,
            "description": "A write committed to the domain's tables is reflected in this "
            f"view within {spoken(levels.view_freshness)} ({MECHANISM}; the domain's "
            "metadata tells the instant its rows are as of).",
        },
    ]
    if product.freshness is not None:
        value, unit = duration(product.freshness)
        freshness: dict[str, Any] = {"property": "freshness", "value": value, "unit": unit}
        column = next((c.column for c in product.checks if isinstance(c, Freshness)), None)
        if column is not None:
            freshness["element"] = f"{product.source}.{column}"
        freshness["description"] = f"The newest row is at most {spoken(product.freshness)} old" + (
            f" (by {column})." if column else "."
        )
        sla.append(freshness)
    days = levels.retention.days
    years, rest = divmod(days, 365)
    retention = (years, "y") if years and not rest else (days, "d")
    sla.append(
        {
            "property": "retention",
            "value": retention[0],
            "unit": retention[1],
            "description": f"Rows are kept for {retention[0]} "
            f"{'years' if retention[1] == 'y' else 'days'}.",
        }
    )
    known = _FREQUENCIES.get(domain.update_frequency.lower())
    frequency: dict[str, Any] = {"property": "frequency"}
    if known:
        frequency |= {"value": known[0], "unit": known[1]}
    else:
        frequency["value"] = domain.update_frequency
    frequency["description"] = f"Update frequency: {domain.update_frequency}."
    sla.append(frequency)
    return sla


def contract_version(product: Product) -> str:
    """The version of a product's contract: its major version is the product's."""
    return f"{product.version}.0.0"


def contract(domain: Domain, product: Product, *, base_url: str) -> dict[str, Any]:
    """The ODCS v3 data contract of a product, its endpoint under base_url (scheme://host)."""
    base = base_url.rstrip("/")
    url = base + product_path(domain.name, product)
    kind = "table" if product.is_table else "view"
    has_pii = any(c.classification is Classification.PII for c in product.columns)
    document: dict[str, Any] = {
        "apiVersion": ODCS_API_VERSION,
        "kind": "DataContract",
        "id": f"urn:datamesh:{domain.name}:{product.name}",
        "name": product.name,
        "version": contract_version(product),
        "status": "active",
        "domain": domain.name,
        "dataProduct": product.name,
        "tags": [domain.name, kind, *(["pii"] if has_pii else [])],
        "description": _description(domain, product, url),
        "schema": [_schema_object(domain, product)],
        "team": {
            "name": f"{domain.title} team",
            "description": f"Owns the {domain.name} domain: {domain.description}.",
            "members": [{"username": domain.owner, "role": "owner"}],
        },
        "support": [
            {
                "channel": "owner-email",
                "tool": "email",
                "url": f"mailto:{domain.owner}",
                "scope": "issues",
                "description": "Questions and incidents about this data product.",
            }
        ],
        "roles": [
            {
                "role": pii_scope(domain),
                "access": "read",
                "description": "Reads the PII columns in clear; without it they are masked.",
            }
        ]
        if has_pii
        else None,
        "slaProperties": _sla(domain, product),
        "servers": [
            {
                "server": f"{domain.name}-api",
                "type": "api",
                "location": url,
                "description": f"The {domain.title} domain's HTTP endpoint of {product.name}.",
            }
        ],
        "authoritativeDefinitions": [
            {
                "type": "canonicalUrl",
                "url": base + contract_path(domain.name, product),
                "description": "This contract, as the domain serves it.",
            }
        ],
        "customProperties": [
            {
                "property": "dataClassification",
                "value": domain.data_classification,
                "description": "The domain's classification of its data as a whole.",
            }
        ],
    }
    return {key: value for key, value in document.items() if value is not None}


def render_yaml(document: dict[str, Any]) -> str:
    """A contract as YAML, keys in the order the contract lists them."""
    text: str = yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return text


def render_json(document: dict[str, Any]) -> str:
    """A contract as JSON."""
    return json.dumps(document, ensure_ascii=False, indent=2)


# --- HTTP --------------------------------------------------------------------------------------

_MEDIA: dict[str, str] = {
    JSON_MEDIA_TYPE: "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
    "application/*": "yaml",
    "text/*": "yaml",
    "*/*": "yaml",
}


def negotiate_contract(format_parameter: str | None, accept: str | None) -> str:
    """'yaml' or 'json': ?format= first, then Accept (by q-value, then order); YAML by default."""
    if format_parameter is not None:
        chosen = format_parameter.lower()
        if chosen not in ("yaml", "json"):
            raise NotAcceptable(
                f"Parameter 'format' has value '{format_parameter}'; a contract is served as "
                "yaml or json.",
                parameter="format",
            )
        return chosen
    if not accept:
        return "yaml"
    for media in accepted_media(accept):
        if media in _MEDIA:
            return _MEDIA[media]
    raise NotAcceptable(
        f"None of the media types in Accept '{accept}' is available for a contract; "
        f"supported: {YAML_MEDIA_TYPE}, {JSON_MEDIA_TYPE}.",
        accept=accept,
    )


# What every contract document holds at its top (ODCS v3), in YAML and JSON alike
_CONTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": f"An Open Data Contract Standard {ODCS_API_VERSION} data contract.",
    "required": ["apiVersion", "kind", "id", "name", "version", "status", "schema"],
    "properties": {
        "apiVersion": {"type": "string", "enum": [ODCS_API_VERSION]},
        "kind": {"type": "string", "enum": ["DataContract"]},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "status": {"type": "string"},
        "schema": {"type": "array", "items": {"type": "object"}},
    },
}


def contract_router(domain: Domain, public_url: str | None = None) -> APIRouter:
    """GET /<domain>/v1/products/{product}/contract for every product of the domain; its server
    is the configured public URL, else the address the request reached."""
    router = APIRouter()
    known = ", ".join(p.name for p in domain.products)

    async def read_contract(
        request: Request,
        product: str,
        fmt: str | None = Query(
            None, alias="format", description="yaml or json (instead of an Accept header)."
        ),
    ) -> Response:
        declared = domain.product(product)
        if declared is None:
            raise UnknownProduct(
                f"Unknown data product '{product}' in domain '{domain.name}'; known: {known}.",
                product=product,
            )
        chosen = negotiate_contract(fmt, request.headers.get("accept"))
        base_url = public_url or f"{request.url.scheme}://{request.url.netloc}"
        document = contract(domain, declared, base_url=base_url)
        if chosen == "json":
            return Response(render_json(document), media_type=JSON_MEDIA_TYPE)
        return Response(render_yaml(document), media_type=YAML_MEDIA_TYPE)

    router.add_api_route(
        f"/{domain.name}/v1/products/{{product}}/contract",
        read_contract,
        methods=["GET"],
        name="read_contract",
        summary="Data contract of a product (ODCS v3)",
        description=(
            f"The Open Data Contract Standard {ODCS_API_VERSION} contract of a data product of "
            f"the {domain.name} domain, generated from its declaration: schema with logical and "
            "physical types, required, unique, primary key and classification per column; the "
            "declared quality checks as ODCS quality rules; the SLA (availability, latency, "
            "freshness, retention, frequency); the owning team and the product's endpoint. "
            "YAML by default; JSON with `Accept: application/json` or `?format=json`.\n\n"
            f"Products: {known}."
        ),
        tags=["contracts"],
        responses={
            200: {
                "description": "The contract.",
                "content": {
                    # one document in two syntaxes: a YAML answer parses to the same object
                    YAML_MEDIA_TYPE: {"schema": _CONTRACT_SCHEMA},
                    JSON_MEDIA_TYPE: {"schema": _CONTRACT_SCHEMA},
                },
            },
            404: problem("No such product."),
            406: problem("Neither YAML nor JSON is acceptable."),
        },
        response_class=Response,
    )
    return router
