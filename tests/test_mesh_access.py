"""Who may read what through the mesh: a metric that answers a domain's rows needs that
domain's read scope (derived products inherit their inputs' access), quality samples follow
their domain's scope, and the mesh reads each domain on behalf of its end user, so that one
user cannot spend the quota every user of the mesh shares."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest

from services import PERSONAS, domain, sample
from services.federation.metrics import METRICS
from shared.security.auth import Caller, Principal, caller_of
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import AS_OF, create_database, mesh_client, owner_url, token
from tests.postgres import PostgresServer
from tests.servers import served


def persona(name: str, subject: str = "someone") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*PERSONAS[name], subject=subject)}"}


ROW_METRICS = {
    "lead-to-customer-journey": ("mesh:read", "marketing:read", "sales:read"),
    "campaign-roi": ("mesh:read", "marketing:read"),
    "product-campaign-correlation": ("mesh:read", "marketing:read", "sales:read"),
}


def test_the_metrics_that_answer_a_domains_rows_are_declared_so() -> None:
    assert {m.name: m.scopes for m in METRICS if m.row_domains} == ROW_METRICS
    assert [m.name for m in METRICS if not m.row_domains] == [
        "customer-acquisition-cost",
        "channel-effectiveness",
        "lead-source-effectiveness",
    ]


@pytest.mark.parametrize("who", ["sales_analyst", "marketing_analyst", "analyst"])
async def test_a_metric_of_a_domains_rows_needs_that_domains_read_scope(
    mesh: httpx.AsyncClient, who: str
) -> None:
    held = set(PERSONAS[who])
    for metric in METRICS:
        response = await mesh.get(f"/mesh/v1/{metric.name}", headers=persona(who))
        missing = [scope for scope in metric.scopes if scope not in held]
        if not missing:
            assert response.status_code == 200, (metric.name, response.text)
            continue
        assert response.status_code == 403, (metric.name, response.text)
        body = response.json()
        assert (body["code"], body["scope"], body["needs"]) == (
            "insufficient_scope",
            missing[0],
            list(metric.scopes),
        )
        assert body["detail"].startswith(
            f"This request needs the scope '{missing[0]}', which the token does not carry: "
            f"the metric '{metric.name}' answers rows of the "
        )


async def test_the_catalog_lists_the_scopes_each_metric_needs(mesh: httpx.AsyncClient) -> None:
    listed = (await mesh.get("/mesh/v1/metrics")).json()
    assert {m["name"]: tuple(m["scopes"]) for m in listed} == {m.name: m.scopes for m in METRICS}


async def test_a_period_outside_business_dates_is_a_400_naming_it(mesh: httpx.AsyncClient) -> None:
    for metric, parameter, value in (
        ("customer-acquisition-cost", "until", "9999-12-31"),
        ("lead-to-customer-journey", "until", "9999-12-31"),
        ("lead-to-customer-journey", "since", "0001-01-01"),
        ("campaign-roi", "since", "1899-12-31"),
    ):
        response = await mesh.get(f"/mesh/v1/{metric}", params={parameter: value})
        assert response.status_code == 400, (metric, response.text)
        body = response.json()
        assert (body["code"], body["parameter"], body["value"]) == (
            "invalid_value",
            parameter,
            value,
        )
        assert body["detail"] == (
            f"Parameter '{parameter}' has value '{value}', outside the dates a period may name "
            "(1900-01-01 to 2199-12-31)."
        )
    edge = await mesh.get(
        "/mesh/v1/customer-acquisition-cost", params={"since": "1900-01-01", "until": "2199-12-31"}
    )
    assert edge.status_code == 200, edge.text


# --- quality samples and quotas, on domains of their own ----------------------------------------


@pytest.fixture(scope="module")
def own_marketing(postgres_servers: dict[str, PostgresServer]) -> str:
    """A marketing database holding a lead a quality check catches (an unknown lead source,
    written by its owner around the API)."""
    url = create_database(
        postgres_servers, "marketing", "marketing_mesh_access", sample("marketing")(AS_OF)
    )
    with psycopg.connect(owner_url(url)) as conn:
        for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'leads'::regclass "
            "AND pg_get_constraintdef(oid) LIKE '%lead_source%'"
        ).fetchall():
            conn.execute(f'ALTER TABLE leads DROP CONSTRAINT "{name}"')
        conn.execute("UPDATE leads SET lead_source = 'Carrier pigeon' WHERE lead_id = 7")
    return url


@pytest.fixture(scope="module")
def limited_domains(database_urls: dict[str, str], own_marketing: str) -> Iterator[dict[str, str]]:
    """Both domains over HTTP with a rate limit of 8 requests a minute per caller."""
    limited = ServiceSettings(rate_limit_per_minute=8, view_refresh_seconds=0)
    urls = {"sales": database_urls["sales"], "marketing": own_marketing}
    apps = {
        name: create_domain_app(domain(name), database_url=url, settings=limited)
        for name, url in urls.items()
    }
    with served(apps["sales"]) as sales_url, served(apps["marketing"]) as marketing_url:
        yield {"sales": sales_url, "marketing": marketing_url}


async def test_quality_samples_follow_their_domains_read_scope(
    limited_domains: dict[str, str],
) -> None:
    admin = {"Authorization": f"Bearer {token('admin', subject='quality-runner')}"}
    async with httpx.AsyncClient(base_url=limited_domains["marketing"]) as client:
        run = await client.post("/marketing/v1/quality/runs", headers=admin)
        assert run.status_code == 201, run.text
    async with mesh_client(limited_domains) as mesh:

        def marketing_run(who: str) -> dict[str, object]:
            return next(d for d in overview[who]["domains"] if d["domain"] == "marketing")

        overview = {}
        for who in ("marketing_analyst", "sales_analyst"):
            response = await mesh.get("/mesh/v1/quality", headers=persona(who, who))
            assert response.status_code == 200, response.text
            overview[who] = response.json()
    own = marketing_run("marketing_analyst")
    (caught,) = [r for r in own["results"] if r["sample_rows"]]  # type: ignore[attr-defined]
    assert (caught["product"], caught["kind"], caught["sample_rows"]) == (
        "leads",
        "accepted_values",
        [{"lead_id": 7, "lead_source": "Carrier pigeon"}],
    )
    assert "sample_rows_withheld" not in own
    other = marketing_run("sales_analyst")
    assert all(r["sample_rows"] == [] for r in other["results"])  # type: ignore[attr-defined]
    assert other["sample_rows_withheld"] == (
        "failing-row samples are marketing's rows: they need the scope 'marketing:read'"
    )
    # the outcomes themselves are aggregates: the same for both
    assert [r["outcome"] for r in other["results"]] == [r["outcome"] for r in own["results"]]  # type: ignore[attr-defined]


async def test_one_user_cannot_spend_the_mesh_quota_at_a_domain(
    limited_domains: dict[str, str],
) -> None:
    greedy, patient = persona("analyst", "greedy"), persona("analyst", "patient")
    async with mesh_client(limited_domains) as mesh:
        statuses = []
        for _ in range(8):
            response = await mesh.get("/mesh/v1/campaign-roi", headers=greedy)
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        refused = response.json()
        assert (refused["code"], refused["upstream_status"]) == ("rate_limited", 429)
        assert refused["domain"] in ("sales", "marketing")
        assert refused["detail"].startswith(
            f"The {refused['domain']} domain refused more reads of "
        )
        assert int(response.headers["retry-after"]) > 0
        # everyone else still reads: the domains count the mesh's reads per end user
        for _ in range(2):
            other = await mesh.get("/mesh/v1/campaign-roi", headers=patient)
            assert other.status_code == 200, other.text


def test_only_a_mesh_subject_may_name_the_user_it_reads_for() -> None:
    mesh, alice = Principal("mesh", frozenset()), Principal("alice", frozenset())
    subjects = frozenset({"mesh"})
    named = {"datamesh-on-behalf-of": "bob"}
    assert caller_of(mesh, named, "127.0.0.1", subjects) == Caller(
        "subject:mesh:for:bob", "the token subject 'mesh' on behalf of 'bob'", "bob"
    )
    # anyone else naming a user counts as themselves; so does a mesh naming no valid user
    assert caller_of(alice, named, "127.0.0.1", subjects).key == "subject:alice"
    for header in ({}, {"datamesh-on-behalf-of": " bob"}, {"datamesh-on-behalf-of": "x" * 201}):
        assert caller_of(mesh, header, "127.0.0.1", subjects).key == "subject:mesh"
    assert caller_of(None, named, "10.1.2.3", subjects).key == "address:10.1.2.3"
