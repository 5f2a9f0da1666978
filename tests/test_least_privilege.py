"""Least privilege in the database: a service connects as a role that reads and writes its
domain's data and cannot change the schema; migrations run as the owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services import DOMAINS, sample
from services.cli import prepare_databases, start_databases
from shared.storage import migrations
from shared.storage.db import grant_service_role, role_of, service_role
from shared.storage.embedded import EmbeddedPostgres
from tests.conftest import AS_OF, create_database, owner_url
from tests.postgres import PostgresServer

INSUFFICIENT_PRIVILEGE = "42501"

SCHEMA_CHANGES = {
    "drop table": "DROP TABLE {table}",
    "alter table": "ALTER TABLE {table} ADD COLUMN intruder integer",
    "drop constraint": "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
    "create table": "CREATE TABLE intruder (id integer)",
    "create view": "CREATE VIEW intruder AS SELECT 1 AS one",
    "drop view": "DROP MATERIALIZED VIEW {view}",
    "refresh view": "REFRESH MATERIALIZED VIEW {view}",
    "mark no change": "DELETE FROM view_changes",
    "fake a refresh": "UPDATE view_refreshes SET data_as_of = now()",
    "read a live view": "SELECT * FROM live.{view}",
    "truncate": "TRUNCATE {table} CASCADE",
    "create function": "CREATE FUNCTION intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
}
TABLES = {"sales": ("customers", "customer_lifetime_value"), "marketing": ("leads", "lead_funnel")}


async def connect(url: str) -> asyncpg.Connection:
    """A plain connection, without the settings the service's pool adds."""
    return await asyncpg.connect(url)


@pytest.fixture
async def as_service(database_urls: dict[str, str]) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    connections = {name: await connect(database_urls[name]) for name in DOMAINS}
    yield connections
    for conn in connections.values():
        await conn.close()


def test_the_apps_database_urls_are_the_service_roles(database_urls: dict[str, str]) -> None:
    assert {name: role_of(url) for name, url in database_urls.items()} == {
        "sales": "sales_service",
        "marketing": "marketing_service",
    }


@pytest.mark.parametrize("name", DOMAINS)
@pytest.mark.parametrize("change", SCHEMA_CHANGES)
async def test_the_service_role_cannot_change_the_schema(
    as_service: dict[str, asyncpg.Connection], name: str, change: str
) -> None:
    table, view = TABLES[name]
    with pytest.raises(asyncpg.PostgresError) as refused:
        await as_service[name].execute(SCHEMA_CHANGES[change].format(table=table, view=view))
    assert refused.value.sqlstate == INSUFFICIENT_PRIVILEGE


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_service_role_refreshes_views_only_through_the_owners_function(
    as_service: dict[str, asyncpg.Connection], name: str
) -> None:
    conn = as_service[name]
    assert await conn.fetchval("SELECT datamesh_refresh_views(true)") >= 0
    assert await conn.fetchval("SELECT count(*) FROM view_changes") == 0


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_service_role_cannot_move_the_migration_version(
    as_service: dict[str, asyncpg.Connection], name: str
) -> None:
    conn = as_service[name]
    versions = f"alembic_version_{name}"
    # a row per branch head: the domain's own revisions and the framework's
    rows = await conn.fetch(f"SELECT version_num FROM {versions} ORDER BY 1")
    assert tuple(row["version_num"] for row in rows) == migrations.head_revisions(name)
    for statement in (f"UPDATE {versions} SET version_num = 'x'", f"DELETE FROM {versions}"):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.execute(statement)
        assert refused.value.sqlstate == INSUFFICIENT_PRIVILEGE


async def test_the_service_role_reads_and_writes_data(
    as_service: dict[str, asyncpg.Connection],
) -> None:
    conn = as_service["sales"]
    transaction = conn.transaction()
    await transaction.start()
    try:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 15
        assert await conn.fetchval("SELECT count(*) FROM customer_lifetime_value") == 15
        added = await conn.fetchval(
            "INSERT INTO customers (customer_name, email, phone, country, industry, company_size,"
            " created_at, updated_at) VALUES ('Fjord Analytics', 'ops@fjord.example', NULL,"
            " 'Norway', 'Energy', 'Small', now(), now()) RETURNING customer_id"
        )
        assert added == 16  # the key's sequence is usable too
        await conn.execute(
            "UPDATE customers SET industry = 'Utilities' WHERE customer_id = $1", added
        )
        assert (
            await conn.execute("DELETE FROM customers WHERE customer_id = $1", added) == "DELETE 1"
        )
    finally:
        await transaction.rollback()


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_service_role_has_a_statement_timeout_of_its_own(
    as_service: dict[str, asyncpg.Connection], database_urls: dict[str, str], name: str
) -> None:
    assert await as_service[name].fetchval("SHOW statement_timeout") == "30s"
    owner = await connect(owner_url(database_urls[name]))
    try:
        assert await owner.fetchval("SHOW statement_timeout") == "0"
    finally:
        await owner.close()


@pytest.mark.parametrize("name", DOMAINS)
async def test_the_service_role_ends_sessions_idle_in_a_transaction(
    as_service: dict[str, asyncpg.Connection], database_urls: dict[str, str], name: str
) -> None:
    # a backstop for a stream whose client stopped reading (docs/operations.md)
    assert await as_service[name].fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
    owner = await connect(owner_url(database_urls[name]))
    try:
        assert await owner.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
    finally:
        await owner.close()


@pytest.fixture(scope="module")
def privileges_database(postgres_servers: dict[str, PostgresServer]) -> str:
    """A sales database of this module's own, to add a table to."""
    return create_database(postgres_servers, "sales", "sales_privileges", sample("sales")(AS_OF))


async def test_tables_a_later_migration_adds_are_granted(privileges_database: str) -> None:
    url = privileges_database
    owner = await connect(owner_url(url))
    try:
        await owner.execute("CREATE TABLE later_addition (id serial PRIMARY KEY, note text)")
    finally:
        await owner.close()
    service = await connect(url)
    try:
        # covered at once by the default privileges, before the grants run again
        assert (
            await service.fetchval("INSERT INTO later_addition (note) VALUES ('a') RETURNING id")
            == 1
        )
        # the grants after each migration are idempotent
        for _ in range(2):
            await grant_service_role(owner_url(url), "sales_service", domain="sales")
        assert (
            await service.fetchval("INSERT INTO later_addition (note) VALUES ('b') RETURNING id")
            == 2
        )
        with pytest.raises(asyncpg.PostgresError) as refused:
            await service.execute("DROP TABLE later_addition")
        assert refused.value.sqlstate == INSUFFICIENT_PRIVILEGE
    finally:
        await service.close()


async def test_a_missing_role_without_a_password_is_named(privileges_database: str) -> None:
    with pytest.raises(RuntimeError, match="The database role 'nobody_here' does not exist"):
        await grant_service_role(owner_url(privileges_database), "nobody_here", domain="sales")


def test_migrations_use_the_migration_url_and_the_service_its_own(
    postgres_servers: dict[str, PostgresServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An external server: `<DOMAIN>_MIGRATION_DATABASE_URL` migrates and loads as the owner,
    and the role of `<DOMAIN>_DATABASE_URL` is created with that URL's password and granted."""
    server = postgres_servers["sales"]
    server.ensure_database("sales_external")
    service_url = server.url("sales_external", "sales_notebooks")
    monkeypatch.setenv("SALES_DATABASE_URL", service_url)
    monkeypatch.setenv("SALES_MIGRATION_DATABASE_URL", server.url("sales_external"))
    databases = start_databases(tmp_path, ("sales",))
    assert [(d.url, d.server) for d in databases] == [(service_url, None)]
    prepare_databases(databases, AS_OF)

    async def check() -> None:
        conn = await connect(service_url)
        try:
            assert await conn.fetchval("SELECT current_user") == "sales_notebooks"
            assert await conn.fetchval("SELECT count(*) FROM orders") == 20
            assert await conn.fetchval("SHOW statement_timeout") == "30s"
            with pytest.raises(asyncpg.PostgresError) as refused:
                await conn.execute("DROP TABLE orders CASCADE")
            assert refused.value.sqlstate == INSUFFICIENT_PRIVILEGE
        finally:
            await conn.close()

    asyncio.run(check())


def test_embedded_role_passwords_are_random_and_private(
    postgres_servers: dict[str, PostgresServer],
) -> None:
    server = postgres_servers["sales"]
    if not isinstance(server, EmbeddedPostgres):
        pytest.skip("an embedded server's files")
    path = server.root / f"sales.{service_role('sales')}.password"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text()) == 43
    assert path.read_text() != server.password_file.read_text()
    assert server.url("sales_db", "sales_service") == (
        f"postgresql://sales_service:{path.read_text()}@127.0.0.1:{server.port}/sales_db"
    )
