"""Data versions and conditional reads: a product's version moves on every committed write to
its table (through the API or straight in SQL), and on each refresh of a view, never
otherwise (reads, rolled-back writes, compaction); a read answers with an ETag naming it, and
`304 Not Modified` exactly when the If-None-Match it carries is still current. On databases of
their own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from services import DOMAINS, domain
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.data_versions import COMPACT_ABOVE, trigger_name
from shared.storage.db import track_data_versions
from tests.conftest import app_client, owner_url, sample_databases, token, views_refreshed
from tests.postgres import PostgresServer

WRITER = {
    name: {"Authorization": f"Bearer {token(f'{name}:read', f'{name}:write')}"} for name in DOMAINS
}
PII = {"Authorization": f"Bearer {token('sales:read', 'sales:pii')}"}
PII_WRITER = {"Authorization": f"Bearer {token('sales:read', 'sales:write', 'sales:pii')}"}
TAG = re.compile(r'^"([0-9]+)-[0-9a-f]{20}"$')
NEW_CUSTOMER = {
    "customer_name": "Fjord Freight AS",
    "email": "ops@fjordfreight.no",
    "phone": "+47-22-555-0101",
    "country": "UK",
    "industry": "Logistics",
    "company_size": "Small",
}


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    return sample_databases(postgres_servers, "versions")


@pytest.fixture(scope="module")
async def sales(
    databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_domain_app(domain("sales"), database_url=databases["sales"], settings=settings)
    async with app_client(app, WRITER["sales"]) as client:
        yield client


def sql(url: str, statement: str, *params: Any) -> None:
    """A statement as the schema owner, committed (straight in the database: no API)."""
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        conn.execute(statement, params)


def version(response: httpx.Response) -> int:
    match = TAG.match(response.headers["etag"])
    assert match, response.headers["etag"]
    return int(match[1])


async def tag_of(client: httpx.AsyncClient, path: str, **params: str) -> str:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


async def test_a_read_answers_its_version_and_304_while_it_holds(
    sales: httpx.AsyncClient,
) -> None:
    first = await sales.get("/sales/v1/orders", params={"limit": "5"})
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert (first.headers["cache-control"], first.headers["vary"]) == (
        "private, no-cache",
        "Accept, Authorization, Prefer",
    )
    again = await sales.get(
        "/sales/v1/orders", params={"limit": "5"}, headers={"If-None-Match": tag}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert (again.headers["etag"], again.headers["cache-control"]) == (tag, "private, no-cache")
    # weak comparison, lists and *
    for header in (f"W/{tag}", f'"other", {tag}', "*"):
        conditional = await sales.get(
            "/sales/v1/orders", params={"limit": "5"}, headers={"If-None-Match": header}
        )
        assert conditional.status_code == 304, header
    other = await sales.get(
        "/sales/v1/orders", params={"limit": "5"}, headers={"If-None-Match": '"1-abc"'}
    )
    assert other.status_code == 200 and other.content == first.content


async def test_the_tag_differs_with_what_the_body_depends_on(sales: httpx.AsyncClient) -> None:
    """Same data version, another body: another tag (so a tag of one read never revalidates
    another)."""
    base = await tag_of(sales, "/sales/v1/customers")
    others = {
        await tag_of(sales, "/sales/v1/customers", limit="2"),
        await tag_of(sales, "/sales/v1/customers", select="customer_id,email"),
        await tag_of(sales, "/sales/v1/customers", format="csv"),
        await tag_of(sales, "/sales/v1/customers", format="arrow"),
        (await sales.get("/sales/v1/customers", headers=PII)).headers["etag"],
        (await sales.get("/sales/v1/customers", headers={"Prefer": "count=exact"})).headers["etag"],
    }
    assert len(others | {base}) == 7
    assert {TAG.match(t)[1] for t in others | {base}} == {TAG.match(base)[1]}  # type: ignore[index]
    # the masked read's tag does not revalidate the clear one
    masked = await sales.get("/sales/v1/customers", headers={"If-None-Match": base, **PII})
    assert masked.status_code == 200 and "ops@" not in masked.text


async def test_the_version_moves_on_each_committed_write_and_never_otherwise(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    url = databases["sales"]
    path = "/sales/v1/customers"
    start = version(await sales.get(path))
    for _ in range(3):  # reads, of any product
        await sales.get(path)
        await sales.get("/sales/v1/orders", params={"format": "arrow"})
    assert version(await sales.get(path)) == start
    # a write through the API: moves once the transaction commits
    created = await sales.post(path, json=NEW_CUSTOMER, headers=PII_WRITER)
    assert created.status_code == 201, created.text
    after_insert = version(await sales.get(path))
    assert after_insert > start
    # a write the API refuses (nothing written) does not move it
    refused = await sales.post(path, json={**NEW_CUSTOMER, "country": 7}, headers=PII_WRITER)
    assert refused.status_code == 422
    assert version(await sales.get(path)) == after_insert
    # straight in SQL: an update, then a rolled-back one
    sql(url, "UPDATE customers SET industry = 'Retail' WHERE customer_id = 1")
    after_update = version(await sales.get(path))
    assert after_update > after_insert
    with psycopg.connect(owner_url(url)) as conn:
        conn.execute("UPDATE customers SET industry = 'Mining' WHERE customer_id = 2")
        conn.rollback()
    assert version(await sales.get(path)) == after_update
    # another table's write moves only its own product
    orders = version(await sales.get("/sales/v1/orders"))
    sql(url, "DELETE FROM customers WHERE customer_id = (SELECT max(customer_id) FROM customers)")
    assert version(await sales.get("/sales/v1/orders")) == orders
    assert version(await sales.get(path)) > after_update


async def test_a_stale_tag_gets_the_new_rows(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    path = "/sales/v1/products"
    before = await sales.get(path, params={"product_id": "eq.1"})
    tag = before.headers["etag"]
    sql(databases["sales"], "UPDATE products SET price = 1234.50 WHERE product_id = 1")
    after = await sales.get(path, params={"product_id": "eq.1"}, headers={"If-None-Match": tag})
    assert after.status_code == 200
    assert after.json()[0]["price"] == 1234.5
    assert after.headers["etag"] != tag
    assert (
        await sales.get(
            path, params={"product_id": "eq.1"}, headers={"If-None-Match": after.headers["etag"]}
        )
    ).status_code == 304


async def test_a_view_moves_when_it_is_refreshed(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    path = "/sales/v1/sales-summary"
    await views_refreshed(sales, "sales")
    tag = await tag_of(sales, path)
    assert (await sales.get(path, headers={"If-None-Match": tag})).status_code == 304
    sql(databases["sales"], "UPDATE orders SET total_amount = total_amount + 1 WHERE order_id = 1")
    await views_refreshed(sales, "sales")
    changed = await sales.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert version(changed) > int(TAG.match(tag)[1])  # type: ignore[index]


async def test_compaction_keeps_every_version(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    """Past COMPACT_ABOVE change rows a read folds them into data_versions (in the
    background): the versions read before and after are the same."""
    url = databases["sales"]
    sql(
        url,
        f"DO $$ BEGIN FOR i IN 1..{COMPACT_ABOVE + 1} LOOP "
        "UPDATE products SET category = category WHERE product_id = 2; END LOOP; END $$",
    )
    before = {p: version(await sales.get(p)) for p in ("/sales/v1/products", "/sales/v1/orders")}
    with psycopg.connect(owner_url(url)) as conn:
        for _ in range(100):
            (rows,) = conn.execute("SELECT count(*) FROM data_changes").fetchone()  # type: ignore[misc]
            if rows == 0:
                break
            await sales.get("/sales/v1/products")
        found = conn.execute("SELECT table_name, compacted FROM data_versions").fetchall()
        compacted: dict[str, int] = dict(found)
    assert rows == 0
    assert compacted["products"] >= COMPACT_ABOVE + 1
    after = {p: version(await sales.get(p)) for p in before}
    assert after == before


async def test_every_published_table_is_tracked_and_the_service_cannot_forge_a_version(
    databases: dict[str, str],
) -> None:
    for name in DOMAINS:
        tables = {p.source for p in domain(name).products if p.is_table}
        with psycopg.connect(owner_url(databases[name])) as conn:
            triggers = {
                row[0]
                for row in conn.execute(
                    "SELECT tgname FROM pg_trigger WHERE tgname LIKE '%_marks_data_change'"
                ).fetchall()
            }
        assert triggers == {trigger_name(t) for t in tables}
    with psycopg.connect(databases["sales"]) as conn:  # the service's own role
        for statement in (
            "INSERT INTO data_changes (table_name) VALUES ('orders')",
            "UPDATE data_versions SET compacted = 0",
            "DELETE FROM data_changes",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


@pytest.fixture
def untracked(postgres_servers: dict[str, PostgresServer]) -> str:
    """A sales database whose orders lost their trigger."""
    url = sample_databases(postgres_servers, "untracked")["sales"]
    sql(url, f"DROP TRIGGER {trigger_name('orders')} ON orders")
    return url


async def test_a_table_without_its_trigger_is_read_whole_every_time(
    untracked: str, settings: ServiceSettings
) -> None:
    """A database whose triggers were dropped (or never installed): no ETag, no 304, the
    same rows."""
    url = untracked
    app = create_domain_app(domain("sales"), database_url=url, settings=settings)
    async with app_client(app, WRITER["sales"]) as client:
        first = await client.get("/sales/v1/orders", params={"limit": "3"})
        again = await client.get(
            "/sales/v1/orders", params={"limit": "3"}, headers={"If-None-Match": "*"}
        )
        tracked = await client.get("/sales/v1/customers")
    assert "etag" not in first.headers and first.headers["cache-control"] == "no-store"
    assert again.status_code == 200 and again.content == first.content
    assert TAG.match(tracked.headers["etag"])


# --- POST reads: the parameters in a form body ----------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_a_posted_read_is_the_get_with_its_parameters_in_the_body(
    sales: httpx.AsyncClient,
) -> None:
    query = {"select": "order_id,customer_id,total_amount", "order": "order_id"}
    keys = "customer_id=in.(1,2,3)"
    got = await sales.get("/sales/v1/orders", params={**query, "customer_id": "in.(1,2,3)"})
    posted = await sales.post("/sales/v1/query/orders", params=query, content=keys, headers=FORM)
    assert posted.status_code == 200, posted.text
    assert posted.content == got.content
    assert {r["customer_id"] for r in posted.json()} <= {1, 2, 3}
    assert posted.headers["etag"] == got.headers["etag"]  # the same read, the same tag
    # every parameter may be in the body, the format too
    arrow = await sales.post(
        "/sales/v1/query/orders",
        content="format=arrow&select=order_id&customer_id=in.(1)",
        headers=FORM,
    )
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    # unchanged: RFC 9110 answers a POST's matching If-None-Match with 412, never 304
    unchanged = await sales.post(
        "/sales/v1/query/orders",
        params=query,
        content=keys,
        headers={**FORM, "If-None-Match": posted.headers["etag"]},
    )
    assert unchanged.status_code == 412
    assert unchanged.json()["code"] == "not_modified"
    assert unchanged.headers["etag"] == posted.headers["etag"]


async def test_a_posted_read_refuses_what_a_get_refuses_and_a_body_that_is_no_form(
    sales: httpx.AsyncClient,
) -> None:
    orders, customers = "/sales/v1/query/orders", "/sales/v1/query/customers"
    cases: list[tuple[str, str | bytes, dict[str, str], int]] = [
        (orders, "customer_id=in.(1)", {"Content-Type": "application/json"}, 415),
        (orders, "customer_id=in.(1)", {}, 415),
        (orders, b"customer_id=\xff", FORM, 400),
        (orders, "no_such_column=eq.1", FORM, 400),
        (orders, "customer_id=in.(x)", FORM, 400),
        (customers, "email=eq.a@b.c", FORM, 403),
        (orders, "x" * 1_100_000, FORM, 413),
    ]
    codes = [
        "unsupported_media_type",
        "unsupported_media_type",
        "invalid_value",
        "unknown_parameter",
        "invalid_value",
        "pii_column",
        "content_too_large",
    ]
    for (path, body, headers, status), code in zip(cases, codes, strict=True):
        response = await sales.post(path, content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), body[:40]
    assert (
        await sales.post("/sales/v1/query/customers", content="", headers=FORM)
    ).status_code == 200


async def test_a_migration_moves_every_version(
    sales: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    """Rows a migration changed while a table had no trigger (dropped and made again) must not
    revalidate: tracking the tables again after a migration moves every version."""
    before = {p: version(await sales.get(f"/sales/v1/{p}")) for p in ("orders", "products")}
    tracked = await track_data_versions(owner_url(databases["sales"]), domain("sales"))
    assert sorted(tracked) == sorted(p.source for p in domain("sales").products if p.is_table)
    after = {p: version(await sales.get(f"/sales/v1/{p}")) for p in before}
    assert all(after[p] == before[p] + 1 for p in before), (before, after)


async def test_a_wildcard_never_revalidates_an_invalid_read(sales: httpx.AsyncClient) -> None:
    """A tag is only given to a valid read; `*` names any, so the read's parameters are
    checked before it may answer 304."""
    star = {"If-None-Match": "*"}
    bad = await sales.get(
        "/sales/v1/orders", params={"offset": "99999999999999999999"}, headers=star
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_value"
    unknown = await sales.get("/sales/v1/orders", params={"nope": "eq.1"}, headers=star)
    assert unknown.status_code == 400
    good = await sales.get("/sales/v1/orders", params={"offset": "1"}, headers=star)
    assert good.status_code == 304
