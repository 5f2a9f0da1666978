"""Writes cannot be used to probe PII: writing (or clearing) a PII column needs the domain's pii
scope, refused before the data is asked, so no answer tells a caller without it whether an
email exists; and a replayed write is masked for the token presenting it. On databases of their
own (these tests write)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from services import DOMAINS, domain
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import app_client, owner_url, sample_databases, token
from tests.postgres import PostgresServer


def bearer(*scopes: str, subject: str = "writer") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes, subject=subject)}"}


NO_PII = {name: bearer(f"{name}:read", f"{name}:write") for name in DOMAINS}
WITH_PII = {name: bearer(f"{name}:read", f"{name}:write", f"{name}:pii") for name in DOMAINS}


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    return sample_databases(postgres_servers, "write_pii")


@pytest.fixture(scope="module")
async def sales(
    databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain("sales"), database_url=databases["sales"], settings=settings)
    async with app_client(app, NO_PII["sales"]) as client:
        yield client


@pytest.fixture(scope="module")
async def marketing(
    databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(
        domain("marketing"), database_url=databases["marketing"], settings=settings
    )
    async with app_client(app, NO_PII["marketing"]) as client:
        yield client


def scalar(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(owner_url(url)) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0]


def assert_pii_refused(response: httpx.Response, column: str, scope: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert (body["code"], body["column"], body["scope"]) == ("pii_column", column, scope)
    assert body["detail"] == (
        f"Column '{column}' is classified PII: writing it needs the scope '{scope}', which the "
        "token does not carry."
    )
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="datamesh", error="insufficient_scope", scope="{scope}"'
    )


def customer(email: str, name: str = "Probe Ltd") -> dict[str, Any]:
    return {"customer_name": name, "email": email, "country": "USA", "company_size": "Small"}


def lead(email: str) -> dict[str, Any]:
    return {
        "first_name": "Pat",
        "last_name": "Probe",
        "email": email,
        "company": "Probe Ltd",
        "lead_source": "LinkedIn",
        "lead_score": 50,
        "campaign_id": 1,
    }


async def test_a_batch_of_guessed_emails_tells_a_caller_without_pii_nothing(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    existing = scalar(
        databases["sales"], "SELECT email FROM customers ORDER BY customer_id LIMIT 1"
    )
    before = scalar(databases["sales"], "SELECT count(*) FROM customers")
    guesses = [customer(f"guess{n}@probe.example", f"Guess {n}") for n in range(5)]
    guesses.insert(2, customer(existing, "Guess existing"))
    guesses.append({"customer_name": "Invalid", "country": "USA"})  # one invalid row
    response = await sales.post("/sales/v1/customers:batch", json=guesses)
    assert_pii_refused(response, "email", "sales:pii")
    assert "customers_email_key" not in response.text
    assert "rows_rejected" not in response.json()
    assert scalar(databases["sales"], "SELECT count(*) FROM customers") == before


async def test_creating_or_changing_pii_needs_the_pii_scope(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    created = await sales.post("/sales/v1/customers", json=customer("chosen@probe.example"))
    assert_pii_refused(created, "email", "sales:pii")
    for change in ({"phone": "+1-555-0100"}, {"phone": None}, {"email": "new@probe.example"}):
        column = next(iter(change))
        response = await sales.patch("/sales/v1/customers/2", json=change)
        assert_pii_refused(response, column, "sales:pii")
    csv = "customer_name,email,country,company_size\nCsv Ltd,csv@probe.example,USA,Small\n"
    batch = await sales.post(
        "/sales/v1/customers:batch", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert_pii_refused(batch, "email", "sales:pii")
    assert (
        scalar(
            databases["sales"],
            "SELECT count(*) FROM customers WHERE email LIKE %s",
            "%probe.example",
        )
        == 0
    )
    assert (
        scalar(databases["sales"], "SELECT phone FROM customers WHERE customer_id = 2") is not None
    )


async def test_leads_with_an_email_need_the_marketing_pii_scope(
    marketing: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    before = scalar(databases["marketing"], "SELECT count(*) FROM leads")
    assert_pii_refused(
        await marketing.post("/marketing/v1/leads", json=lead("lead@probe.example")),
        "first_name",
        "marketing:pii",
    )
    batch = await marketing.post(
        "/marketing/v1/leads:batch", json=[lead("a@probe.example"), lead("b@probe.example")]
    )
    assert_pii_refused(batch, "first_name", "marketing:pii")
    assert scalar(databases["marketing"], "SELECT count(*) FROM leads") == before
    allowed = await marketing.post(
        "/marketing/v1/leads", json=lead("lead@probe.example"), headers=WITH_PII["marketing"]
    )
    assert allowed.status_code == 201, allowed.text


async def test_a_write_without_pii_columns_needs_no_pii_scope(sales: httpx.AsyncClient) -> None:
    response = await sales.patch("/sales/v1/customers/3", json={"industry": "Logistics"})
    assert response.status_code == 200, response.text
    assert response.json()["industry"] == "Logistics"
    assert response.headers["masked-columns"] == "email, phone"


async def test_an_idempotent_replay_is_masked_for_a_token_without_pii(
    sales: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "replay-masked"}
    clear = WITH_PII["sales"] | key
    change = {"industry": "Aerospace"}  # no PII given, but the answer is the whole row
    first = await sales.patch("/sales/v1/customers/4", json=change, headers=clear)
    assert first.status_code == 200, first.text
    assert first.json()["email"] is not None
    assert "masked-columns" not in first.headers
    # the same subject presents the same key with a token that does not read PII in clear
    replay = await sales.patch("/sales/v1/customers/4", json=change, headers=NO_PII["sales"] | key)
    assert replay.status_code == 200, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.json()["email"], replay.json()["phone"]) == (None, None)
    assert replay.headers["masked-columns"] == "email, phone"
    own_read = await sales.get("/sales/v1/customers/4")
    assert (replay.content, replay.headers["etag"]) == (own_read.content, own_read.headers["etag"])
    again = await sales.patch("/sales/v1/customers/4", json=change, headers=clear)
    assert (again.content, again.headers["etag"]) == (first.content, first.headers["etag"])
    # a replay of a write that gave PII is refused to such a token like the write itself
    body = customer("replayed@probe.example", "Replayed Ltd")
    created = await sales.post(
        "/sales/v1/customers", json=body, headers=WITH_PII["sales"] | {"Idempotency-Key": "c"}
    )
    assert created.status_code == 201, created.text
    refused = await sales.post(
        "/sales/v1/customers", json=body, headers=NO_PII["sales"] | {"Idempotency-Key": "c"}
    )
    assert_pii_refused(refused, "email", "sales:pii")


async def test_an_owners_correction_of_pii_needs_the_pii_scope_too(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    admin_only = bearer("sales:read", "sales:admin")
    path = "/sales/v1/corrections/customers/5"
    refused = await sales.patch(path, json={"email": "fixed@probe.example"}, headers=admin_only)
    assert_pii_refused(refused, "email", "sales:pii")
    assert scalar(databases["sales"], "SELECT email FROM customers WHERE customer_id = 5") != (
        "fixed@probe.example"
    )
    with_pii = bearer("sales:read", "sales:admin", "sales:pii")
    fixed = await sales.patch(path, json={"email": "fixed@probe.example"}, headers=with_pii)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["email"] == "fixed@probe.example"
