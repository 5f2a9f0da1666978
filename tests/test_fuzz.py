"""API fuzzing: Schemathesis runs every operation of each service's OpenAPI document (sales,
marketing, the mesh) with all its default checks: no server error, and no status code, content
type, header or body that breaks the operation's own documented responses.

Its settings are schemathesis.toml at the repository root: a fixed seed, derandomized
generation, a bounded number of examples per operation. DATAMESH_FUZZ_EXAMPLES and
DATAMESH_FUZZ_SEED change the last two for a deeper run (README.md, Development). Every request
carries a valid admin token (the bearer scheme's credentials, so the auth checks can leave it
out on purpose).

The operations come from each app's own OpenAPI document (`app.openapi()`, which it also serves
at /<service>/openapi.json: the fixtures check they are the same), read when this module is
collected, so a route added later is fuzzed without a change here. Each operation is one test;
its requests go over HTTP to the app served on a loopback port: the domains on databases of
their own, so fuzzed writes leave the other tests' data alone, the mesh over the shared sample
domains (it only reads). Schemathesis's fixture-based loader, which would load the document
from an app a fixture starts, does not work with pytest 9.2 (it sets `node._nodeid`, which
pytest no longer has), hence documents read at collection."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi import FastAPI

from services import domain, sample
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import AS_OF, create_database, token
from tests.postgres import PostgresServer
from tests.servers import served

CONFIG_FILE = Path(__file__).resolve().parent.parent / "schemathesis.toml"

# A batch's NDJSON and CSV bodies are text to the OpenAPI document: they are sent as such. A body
# of a media type Schemathesis cannot send is left out with a UserWarning, an error here, so a
# write that takes another one is not silently left unfuzzed.
schemathesis.serializer.alias(["application/x-ndjson", "text/csv"], "text/plain")


def fuzz_config() -> schemathesis.Config:
    """schemathesis.toml, with an admin token as the bearer scheme's credentials, and the
    examples per operation and the seed of DATAMESH_FUZZ_EXAMPLES and DATAMESH_FUZZ_SEED."""
    config = tomllib.loads(CONFIG_FILE.read_text())
    # valid for the whole session: the documents are read when the tests are collected
    admin = token("admin", ttl=dt.timedelta(hours=12), subject="fuzzer")
    config["auth"] = {"openapi": {"HTTPBearer": {"bearer": admin}}}
    if examples := os.environ.get("DATAMESH_FUZZ_EXAMPLES"):
        config.setdefault("generation", {})["max-examples"] = int(examples)
    if seed := os.environ.get("DATAMESH_FUZZ_SEED"):
        config["seed"] = int(seed)
    return schemathesis.Config.from_dict(config, base_dir=str(CONFIG_FILE.parent))


def _mesh_app(domains: dict[str, str]) -> FastAPI:
    return create_app(FederationSettings.model_validate({"domains": domains}))


def _schema(app: FastAPI) -> schemathesis.BaseSchema:
    """The operations of the app's OpenAPI document (building an app needs no database)."""
    return schemathesis.openapi.from_dict(app.openapi(), config=fuzz_config())


SALES = _schema(create_domain_app(domain("sales")))
MARKETING = _schema(create_domain_app(domain("marketing")))
MESH = _schema(_mesh_app({"sales": "http://sales.invalid", "marketing": "http://mk.invalid"}))
SCHEMAS = {"sales": SALES, "marketing": MARKETING, "mesh": MESH}


def _serve(app: FastAPI, service: str) -> Iterator[str]:
    """Serve the app; its base URL, once its served document is the one being fuzzed."""
    with served(app) as url:
        document = httpx.get(f"{url}/{service}/openapi.json").json()
        assert document == SCHEMAS[service].raw_schema, f"{service} serves another document"
        yield url


def _serve_domain(
    name: str, servers: dict[str, PostgresServer], settings: ServiceSettings
) -> Iterator[str]:
    database = create_database(servers, name, f"{name}_fuzz", sample(name)(AS_OF))
    yield from _serve(
        create_domain_app(domain(name), database_url=database, settings=settings), name
    )


@pytest.fixture(scope="module")
def sales_url(
    postgres_servers: dict[str, PostgresServer], settings: ServiceSettings
) -> Iterator[str]:
    """The sales service on a database of its own, with the sample rows."""
    yield from _serve_domain("sales", postgres_servers, settings)


@pytest.fixture(scope="module")
def marketing_url(
    postgres_servers: dict[str, PostgresServer], settings: ServiceSettings
) -> Iterator[str]:
    """The marketing service on a database of its own, with the sample rows."""
    yield from _serve_domain("marketing", postgres_servers, settings)


@pytest.fixture(scope="module")
def mesh_url(domain_urls: dict[str, str]) -> Iterator[str]:
    """The mesh over the shared sample domains."""
    yield from _serve(_mesh_app(domain_urls), "mesh")


# each test runs its operation's examples, coverage and fuzzing cases; a failing check raises
# (Schemathesis reports each distinct failure with a curl command that reproduces it)


@SALES.parametrize()
def test_sales(case: schemathesis.Case, sales_url: str) -> None:
    case.call_and_validate(base_url=sales_url)


@MARKETING.parametrize()
def test_marketing(case: schemathesis.Case, marketing_url: str) -> None:
    case.call_and_validate(base_url=marketing_url)


@MESH.parametrize()
def test_mesh(case: schemathesis.Case, mesh_url: str) -> None:
    case.call_and_validate(base_url=mesh_url)


# Workflows: Schemathesis chains the operations of a domain along the links it infers (a POST's
# Location, ids in a response) and checks every response of each chain the same way, including
# the checks that need a sequence (a resource just created is readable; one deleted is gone).
# The mesh has no writes to chain.


def _run_workflows(schema: schemathesis.BaseSchema, url: str) -> None:
    class Workflows(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, str]:
            return {"base_url": url}

    Workflows.run(settings=schema.config.get_hypothesis_settings(phase="stateful"))


def test_sales_workflows(sales_url: str) -> None:
    _run_workflows(SALES, sales_url)


def test_marketing_workflows(marketing_url: str) -> None:
    _run_workflows(MARKETING, marketing_url)


# What the fuzzer found, pinned by plain tests (fixed in shared/errors.py, shared/openapi.py,
# shared/reading/routes.py and shared/governance/quality_routes.py)


async def test_a_405_allows_every_method_of_the_path(sales: httpx.AsyncClient) -> None:
    # GET and POST are two routes; Starlette's Allow named only the first one's methods
    response = await sales.request("OPTIONS", "/sales/v1/quality/runs")
    assert response.status_code == 405
    assert {"GET", "POST"} <= set(response.headers["Allow"].split(", "))


async def test_every_operation_documents_the_service_wide_problems(
    sales: httpx.AsyncClient,
) -> None:
    document = (await sales.get("/sales/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "429" in responses, (method, path)
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], status
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})


async def test_documented_bounds_are_the_ones_the_service_applies(
    sales: httpx.AsyncClient,
) -> None:
    document = (await sales.get("/sales/openapi.json")).json()
    run = document["paths"]["/sales/v1/quality/runs/{run_id}"]["get"]["parameters"][0]
    assert run["schema"] == {"type": "integer", "minimum": 0, "maximum": 999_999_999}
    assert (await sales.get("/sales/v1/quality/runs/-1")).status_code == 400
    assert (await sales.get("/sales/v1/quality/runs/1000000000")).status_code == 400
    read = document["paths"]["/sales/v1/orders"]["get"]
    schemas = {p["name"]: p["schema"] for p in read["parameters"]}
    assert schemas["limit"]["type"] == schemas["offset"]["type"] == "integer"
    for format_name in ("csv", "CSV", "Parquet"):
        assert re.fullmatch(schemas["format"]["pattern"].strip("^$"), format_name)
        response = await sales.get("/sales/v1/orders", params={"format": format_name, "limit": 1})
        assert response.status_code == 200, format_name
    assert not re.fullmatch(schemas["format"]["pattern"].strip("^$"), "object")
    assert (await sales.get("/sales/v1/orders?format=object")).status_code == 406
    assert read["x-read-grammar"] == "postgrest"
