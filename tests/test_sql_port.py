"""The SQL output port (docs/sql.md), read with psycopg as reader logins:

- `datamesh migrate`'s hook publishes a schema `products` in every domain database: a view per
  product, named as its source, with the declared columns in order (the computed email_key
  left out) and exactly the rows the HTTP API answers, PII in clear for a member of
  `<domain>_pii_reader` (as the API answers an admin token) and NULL for a plain reader (as it
  answers a read-only token);
- a reader login uses the schema `products` and nothing else: no other schema, no table
  outside it, no write, no DDL, no temporary table, no large object;
- its role carries a statement timeout (a long query is cancelled), a connection limit, the
  search path `products`, read-only transactions and UTC;
- `datamesh sql-access` creates a login or rotates its password (the old one is refused),
  prints a URL that psycopg and pandas read with, and `--revoke` drops it; for the embedded
  servers of `datamesh up` it finds the port the running server listens on;
- `datamesh generate` writes a Trino catalog per domain referencing its credentials, and the
  federated query of docs/sql.md names catalogs, views and columns that exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import pytest
import sqlalchemy
from psycopg import errors
from typer.testing import CliRunner, Result

from services import DOMAINS, domain, package, registered, sample
from services.cli import DomainDatabase, cli, reader_url
from services.generated import generated
from shared.declarations.products import Product
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage import sql_port
from shared.storage.db import connect
from shared.storage.embedded import EmbeddedPostgres
from shared.storage.sample_data import load_if_empty
from shared.storage.sql_port import LoginLimits, LoginRefused, port_columns
from tests.conftest import ADMIN, AS_OF, app_client, owner_url, sample_databases, token
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
LIMITS = LoginLimits(
    statement_timeout_ms=30_000, idle_in_transaction_timeout_ms=60_000, connection_limit=10
)
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Every domain's sample database of its own, its port published by the hook `datamesh
    migrate` runs (DomainDatabase.migrate); the service role's URL of each."""
    urls = sample_databases(postgres_servers, "sqlport")
    for name, url in urls.items():
        DomainDatabase(name, url, None, owner_url(url)).migrate()
    return urls


def login(databases: dict[str, str], name: str, user: str, **options: Any) -> str:
    """A reader login of the domain's port, created or rotated; its connection URL."""
    owner = owner_url(databases[name])
    options.setdefault("limits", LIMITS)
    password = asyncio.run(sql_port.grant_login(owner, name, user, **options))
    return reader_url(owner, user, password)


class Readers(NamedTuple):
    masked: str  # a member of <domain>_reader
    clear: str  # a member of <domain>_pii_reader


@pytest.fixture(scope="module")
def readers(databases: dict[str, str]) -> dict[str, Readers]:
    return {
        name: Readers(
            login(databases, name, f"{name}_test_reader"),
            login(databases, name, f"{name}_test_pii_reader", pii=True),
        )
        for name in DOMAINS
    }


def fetch(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(statement, args or None).fetchall()


def port_rows(url: str, product: Product) -> list[list[tuple[str, Any]]]:
    """The product's rows in the port, in key order, each its (column, JSON value) pairs."""
    key = ", ".join(f'v."{k}"' for k in product.key)
    rows = fetch(url, f"SELECT row_to_json(v)::text FROM {product.source} AS v ORDER BY {key}")
    return [list(json.loads(text, parse_float=Decimal).items()) for (text,) in rows]


# --- the views: the products, exactly as the API answers them -----------------------------------


def test_publishing_warns_of_nothing_the_owner_could_not_do(databases: dict[str, str]) -> None:
    for name, url in databases.items():
        assert asyncio.run(sql_port.publish(owner_url(url), domain(name), LIMITS)) == []


@pytest.mark.parametrize("name", DOMAINS)
async def test_every_product_is_a_view_with_the_apis_rows(
    databases: dict[str, str], readers: dict[str, Readers], settings: ServiceSettings, name: str
) -> None:
    declared = domain(name)
    app = create_domain_app(declared, database_url=databases[name], settings=settings)
    read_only = {"Authorization": f"Bearer {token(f'{name}:read')}"}
    async with app_client(app) as client:
        for product in declared.products:
            columns = fetch(
                readers[name].masked,
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'products' AND table_name = %s ORDER BY ordinal_position",
                product.source,
            )
            assert tuple(c for (c,) in columns) == port_columns(product)
            computed = {c.name for c in product.columns if c.computed}
            for headers, url in ((ADMIN, readers[name].clear), (read_only, readers[name].masked)):
                answer = await client.get(
                    f"/{name}/v{product.version}/{product.name}",
                    params={"limit": settings.max_page_size},
                    headers=headers,
                )
                assert answer.status_code == 200, answer.text
                api = json.loads(answer.text, parse_float=Decimal)
                assert 0 < len(api) < settings.max_page_size, product.name
                expected = [[(k, v) for k, v in row.items() if k not in computed] for row in api]
                assert port_rows(url, product) == expected, (product.name, headers is ADMIN)


@pytest.mark.parametrize("name", DOMAINS)
def test_pii_is_null_without_the_pii_group_and_clear_with_it(
    readers: dict[str, Readers], name: str
) -> None:
    products = [p for p in domain(name).products if any(c.is_pii for c in p.columns)]
    assert products, f"{name} declares no PII column"
    for product in products:
        for column in (c for c in product.columns if c.is_pii):
            statement = f'SELECT count("{column.name}"), count(*) FROM {product.source}'
            [(masked, rows)] = fetch(readers[name].masked, statement)
            [(clear, _)] = fetch(readers[name].clear, statement)
            assert (masked, rows > 0) == (0, True), column.name
            assert clear > 0, column.name
        assert not {c.name for c in product.columns if c.computed} & set(port_columns(product))


def test_an_owner_short_of_privileges_is_told_what_it_could_not_do(
    postgres_servers: dict[str, PostgresServer], databases: dict[str, str]
) -> None:
    name = DOMAINS[0]
    owner = owner_url(databases[name])
    weak, password = "sqlport_test_weak_owner", secrets.token_urlsafe(24)
    with psycopg.connect(owner, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (weak,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(f"{verb} ROLE {weak} LOGIN NOCREATEROLE PASSWORD '{password}'")
    # a domain whose groups do not exist yet, and an owner that may not create roles
    unknown = dataclasses.replace(domain(name), name="sqlportnogroups")
    refused = asyncio.run(sql_port.publish(reader_url(owner, weak, password), unknown, LIMITS))
    assert len(refused) == 1
    assert refused[0].startswith(
        "the SQL port is not published: the owner may not create the roles "
        "sqlportnogroups_reader and sqlportnogroups_pii_reader"
    )
    # PUBLIC's defaults in a database that is neither the owner's nor a superuser's
    server = postgres_servers[name]
    server.ensure_database(f"{name}_sqlport_defaults")
    plain = server.url(f"{name}_sqlport_defaults")

    async def revoke(url: str) -> list[str]:
        conn = await connect(url)
        try:
            return await sql_port._revoke_public_defaults(conn, sql_port.reader_role(name))
        finally:
            await conn.close()

    kept = asyncio.run(revoke(reader_url(plain, weak, password)))
    assert [k.split(" (")[0] for k in kept] == [
        "readers keep USAGE on the schema public",
        f"readers keep TEMPORARY on the database {urlsplit(plain).path[1:]}",
        "readers keep EXECUTE on lo_creat(integer)",
        "readers keep EXECUTE on lo_create(oid)",
        "readers keep EXECUTE on lo_from_bytea(oid, bytea)",
    ]
    assert asyncio.run(revoke(plain)) == []  # a superuser takes them all


# --- what a reader may do: read the views, nothing else -----------------------------------------


@pytest.mark.parametrize("name", DOMAINS)
def test_a_reader_sees_only_the_products_schema(readers: dict[str, Readers], name: str) -> None:
    url = readers[name].masked
    usable = fetch(
        url,
        "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE') "
        "AND nspname <> ALL(%s) ORDER BY 1",
        list(SYSTEM_SCHEMAS),
    )
    assert usable == [("products",)]
    schemata = fetch(
        url,
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name <> ALL(%s)",
        list(SYSTEM_SCHEMAS),
    )
    assert schemata == [("products",)]
    tables = fetch(
        url,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema <> ALL(%s) ORDER BY 2",
        list(SYSTEM_SCHEMAS),
    )
    assert tables == sorted(
        (("products", p.source, "VIEW") for p in domain(name).products), key=lambda t: t[1]
    )
    readable = fetch(
        url,
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%' "
        "AND has_table_privilege(c.oid, 'SELECT') ORDER BY 2",
        list(SYSTEM_SCHEMAS),
    )
    assert readable == sorted((("products", p.source) for p in domain(name).products), key=str)
    [(path, timeout, read_only, zone)] = fetch(
        url,
        "SELECT current_setting('search_path'), current_setting('statement_timeout'), "
        "current_setting('default_transaction_read_only'), current_setting('TimeZone')",
    )
    assert (path, timeout, read_only, zone) == ("products", "30s", "on", "UTC")


def refused(url: str, statement: str, *, read_only: bool = True) -> type[Exception]:
    """The error class the statement fails with in a session of the URL (with the session's
    read-only default turned off unless `read_only`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not read_only:
            conn.execute("SET default_transaction_read_only = off")
        try:
            conn.execute(statement)
        except psycopg.Error as error:
            return type(error)
    raise AssertionError(f"not refused: {statement}")


@pytest.mark.parametrize("name", DOMAINS)
def test_writes_ddl_and_everything_outside_the_schema_are_refused(
    readers: dict[str, Readers], name: str
) -> None:
    declared = domain(name)
    product = declared.products[0]
    view, column = product.source, product.key[0]
    writes = [
        f"INSERT INTO {view} ({column}) VALUES (1000000)",
        f"UPDATE {view} SET {column} = {column}",
        f"DELETE FROM {view}",
        f"TRUNCATE public.{view}",
        f"INSERT INTO public.{view} ({column}) VALUES (1000000)",
        f"DELETE FROM public.{view}",
    ]
    ddl = [
        "CREATE TABLE products.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "CREATE TABLE mine (x int)",
        "CREATE TEMPORARY TABLE mine (x int)",
        f"CREATE VIEW products.mine AS SELECT * FROM {view}",
        "CREATE FUNCTION products.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        f"DROP VIEW products.{view}",
        f"ALTER VIEW products.{view} RENAME TO mine",
        "CREATE SCHEMA mine",
        "SELECT lo_create(0)",
        "SELECT lo_from_bytea(0, 'x')",
    ]
    outside = [
        f"SELECT * FROM public.{view}",
        f"SELECT * FROM live.{next(p.source for p in declared.products if not p.is_table)}",
        f"SELECT * FROM public.alembic_version_{name}",
        "SELECT * FROM public.quality_runs",
        "SELECT * FROM public.idempotency_keys",
        "SELECT public.datamesh_refresh_views(false)",
    ]
    url = readers[name].clear
    for statement in writes + ddl:
        # refused twice: by the login's read-only default, and by its privileges without it
        assert refused(url, statement) in (
            errors.ReadOnlySqlTransaction,
            errors.InsufficientPrivilege,
        ), statement
        assert refused(url, statement, read_only=False) is errors.InsufficientPrivilege, statement
    for statement in outside:
        assert refused(url, statement) is errors.InsufficientPrivilege, statement
    assert fetch(url, f"SELECT count(*) FROM {view}")[0][0] > 0  # the view itself reads


def test_a_long_query_is_cancelled_by_the_statement_timeout(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    short = dataclasses.replace(LIMITS, statement_timeout_ms=300)
    url = login(databases, name, f"{name}_test_impatient", limits=short)
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("300ms",)
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on


def test_a_login_has_a_connection_limit(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    url = login(
        databases,
        name,
        f"{name}_test_single",
        limits=dataclasses.replace(LIMITS, connection_limit=1),
    )
    with (
        psycopg.connect(url),
        pytest.raises(psycopg.OperationalError, match="too many connections"),
    ):
        psycopg.connect(url)


# --- logins: created, rotated, switched, dropped, refused ---------------------------------------


def connects(url: str) -> bool:
    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError as error:
        assert "password authentication failed" in str(error)
        return False


def test_rotation_changes_the_password_and_refuses_the_old_one(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    user = f"{name}_test_rotated"
    first = login(databases, name, user)
    assert connects(first)
    second = login(databases, name, user)
    assert urlsplit(second).password != urlsplit(first).password
    assert not connects(first)
    assert connects(second)


def test_a_login_reads_pii_only_while_it_is_in_the_pii_group(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    user = f"{name}_test_switched"
    product = next(p for p in domain(name).products if any(c.is_pii for c in p.columns))
    pii = next(c.name for c in product.columns if c.is_pii)
    statement = f'SELECT count("{pii}") FROM {product.source}'
    assert fetch(login(databases, name, user, pii=True), statement)[0][0] > 0
    assert fetch(login(databases, name, user), statement)[0][0] == 0


def test_revoking_drops_the_login_and_ends_its_sessions(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    user = f"{name}_test_revoked"
    url = login(databases, name, user)
    with psycopg.connect(url, autocommit=True) as session:
        owner = owner_url(databases[name])
        assert asyncio.run(sql_port.revoke_login(owner, name, user)) is True
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    assert fetch(owner, "SELECT count(*) FROM pg_roles WHERE rolname = %s", user) == [(0,)]
    assert asyncio.run(sql_port.revoke_login(owner, name, user)) is False


def test_logins_that_are_not_the_ports_are_refused(
    databases: dict[str, str], database_urls: dict[str, str]
) -> None:
    name = DOMAINS[0]
    owner = owner_url(databases[name])
    for user, reason in (
        (f"{name}_service", "is not a reader login"),
        (sql_port.reader_role(name), "is not a login name"),
        (sql_port.pii_reader_role(name), "is not a login name"),
        ("Robert'); DROP", "is not a login name"),
    ):
        with pytest.raises(LoginRefused, match=re.escape(reason)):
            asyncio.run(sql_port.grant_login(owner, name, user))
        with pytest.raises(LoginRefused, match=re.escape(reason)):
            asyncio.run(sql_port.revoke_login(owner, name, user))
    # a reader login someone made a member of another role too: it may do more, not rotated
    user = f"{name}_test_widened"
    login(databases, name, user)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"GRANT {name}_service TO {user}")
        with pytest.raises(LoginRefused, match="is not a reader login"):
            asyncio.run(sql_port.grant_login(owner, name, user))
        conn.execute(f"REVOKE {name}_service FROM {user}")
    assert asyncio.run(sql_port.revoke_login(owner, name, user)) is True
    # a database the port was never published in (the shared one, migrated without the CLI)
    unpublished = owner_url(database_urls[name])
    with pytest.raises(LoginRefused, match="no SQL port yet: run `datamesh migrate`"):
        asyncio.run(sql_port.grant_login(unpublished, name, f"{name}_test_nowhere"))


def test_the_port_follows_the_declarations_and_steps_aside_for_migrations(
    databases: dict[str, str], readers: dict[str, Readers]
) -> None:
    name = DOMAINS[0]
    owner = owner_url(databases[name])
    declared = domain(name)
    views = (
        "SELECT table_name FROM information_schema.views WHERE table_schema = 'products' ORDER BY 1"
    )
    everything = sorted((p.source,) for p in declared.products)
    assert fetch(owner, views) == everything
    fewer = dataclasses.replace(declared, products=declared.products[-1:], writes=())
    assert asyncio.run(sql_port.publish(owner, fewer, LIMITS)) == []
    assert fetch(owner, views) == sorted((p.source,) for p in fewer.products)
    # before a migration: no view left to depend on the tables, the logins kept
    asyncio.run(sql_port.withdraw(owner))
    assert fetch(owner, views) == []
    assert fetch(readers[name].masked, "SELECT current_user") == [(f"{name}_test_reader",)]
    DomainDatabase(name, databases[name], None, owner).migrate()
    assert fetch(owner, views) == everything
    assert (
        fetch(readers[name].masked, f"SELECT count(*) FROM {declared.products[0].source}")[0][0] > 0
    )


# --- datamesh sql-access ------------------------------------------------------------------------


def sql_access(databases: dict[str, str], name: str, *args: str) -> Result:
    env = {
        f"{name.upper()}_DATABASE_URL": databases[name],
        f"{name.upper()}_MIGRATION_DATABASE_URL": owner_url(databases[name]),
        "COLUMNS": "1000",
    }
    return CliRunner().invoke(cli, ["sql-access", "--domain", name, *args], env=env)


@pytest.mark.parametrize("name", DOMAINS)
def test_sql_access_prints_a_url_pandas_reads_the_port_with(
    databases: dict[str, str], name: str
) -> None:
    done = sql_access(databases, name, "--name", f"{name}_test_cli")
    assert done.exit_code == 0, done.output
    [url] = done.stdout.splitlines()
    service = urlsplit(databases[name])
    printed = urlsplit(url)
    assert (printed.scheme, printed.username, printed.path) == (
        "postgresql",
        f"{name}_test_cli",
        service.path,
    )
    assert (printed.hostname, printed.port) == (service.hostname, service.port)
    assert done.stderr == (
        f"{name}_test_cli reads the {name} SQL port (schema products), PII masked; statements "
        "over 30 s are cancelled, 10 connections at most. Its password is new: the previous one "
        "no longer works.\n"
    )
    for product in domain(name).products:
        # pandas notes that it tests DBAPI connections other than sqlite3's less
        with psycopg.connect(url) as conn, pytest.warns(UserWarning, match="SQLAlchemy"):
            frame = pd.read_sql(f"SELECT * FROM {product.source} LIMIT 10", conn)
        assert tuple(frame.columns) == port_columns(product)
        assert 0 < len(frame) <= 10
    # the same through SQLAlchemy, which pandas prefers
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        source = domain(name).products[-1].source
        frame = pd.read_sql(f"SELECT * FROM {source} LIMIT 10", engine)
        assert 0 < len(frame) <= 10
    finally:
        engine.dispose()


def test_sql_access_rotates_switches_to_pii_and_revokes(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    product = next(p for p in domain(name).products if any(c.is_pii for c in p.columns))
    pii = next(c.name for c in product.columns if c.is_pii)
    statement = f'SELECT count("{pii}") FROM {product.source}'
    first = sql_access(databases, name)
    assert first.exit_code == 0, first.output
    assert urlsplit(first.stdout.strip()).username == f"{name}_analyst"  # the default name
    assert fetch(first.stdout.strip(), statement)[0][0] == 0
    again = sql_access(databases, name)
    assert again.exit_code == 0, again.output
    assert not connects(first.stdout.strip())
    assert fetch(again.stdout.strip(), statement)[0][0] == 0
    clear = sql_access(databases, name, "--pii")
    assert clear.exit_code == 0, clear.output
    assert urlsplit(clear.stdout.strip()).username == f"{name}_pii_analyst"
    assert "PII in clear" in clear.stderr
    assert fetch(clear.stdout.strip(), statement)[0][0] > 0
    dropped = sql_access(databases, name, "--pii", "--revoke")
    assert (dropped.exit_code, dropped.stdout) == (0, f"dropped the login {name}_pii_analyst\n")
    assert not connects(clear.stdout.strip())
    gone = sql_access(databases, name, "--pii", "--revoke")
    assert (gone.exit_code, gone.stdout) == (0, f"no login {name}_pii_analyst to drop\n")


def test_sql_access_refuses_what_it_cannot_do(databases: dict[str, str]) -> None:
    name = DOMAINS[0]
    unknown = CliRunner().invoke(cli, ["sql-access", "--domain", "nowhere"])
    assert unknown.exit_code == 2
    assert "'nowhere' is not a domain" in unknown.stderr
    service = sql_access(databases, name, "--name", f"{name}_service")
    assert service.exit_code == 1
    assert service.stderr == (
        f"Error: the role '{name}_service' exists and is not a reader login of the {name} SQL "
        "port: choose another --name\n"
    )


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Path, EmbeddedPostgres]]:
    """A data directory with the first domain's embedded server, as `datamesh up` leaves it:
    running, migrated (its port published), the sample loaded."""
    name = DOMAINS[0]
    server = EmbeddedPostgres(tmp_path / "data" / "postgres", name)
    database = domain(name).database
    server.start((database,))
    try:
        DomainDatabase(
            name, server.url(database, f"{name}_service"), server, server.url(database)
        ).migrate()
        asyncio.run(load_if_empty(domain(name), server.url(database), sample(name)(AS_OF)))
        yield tmp_path / "data", server
    finally:
        server.stop()


def test_sql_access_reaches_the_embedded_server_datamesh_up_runs(
    embedded: tuple[Path, EmbeddedPostgres],
) -> None:
    data_dir, server = embedded
    name = DOMAINS[0]
    done = CliRunner().invoke(cli, ["sql-access", "--domain", name, "--data-dir", str(data_dir)])
    assert done.exit_code == 0, done.output
    url = done.stdout.strip()
    assert urlsplit(url).port == server.running_port() == server.port
    assert (urlsplit(url).hostname, urlsplit(url).path) == (
        "127.0.0.1",
        f"/{domain(name).database}",
    )
    source = domain(name).products[0].source
    assert fetch(url, f"SELECT count(*) FROM {source}")[0][0] > 0
    server.stop()
    stopped = CliRunner().invoke(cli, ["sql-access", "--domain", name, "--data-dir", str(data_dir)])
    assert stopped.exit_code == 1
    assert "is not running: start `datamesh up` first" in stopped.stderr


# --- Trino ----------------------------------------------------------------------------------------


def properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_generate_writes_a_trino_catalog_per_domain_without_a_credential() -> None:
    files = generated(registered(), {d.name: package(d.name) for d in registered()})
    for d in registered():
        env = d.name.upper()
        assert properties(files[f"deploy/trino/catalog/{d.name}.properties"]) == {
            "connector.name": "postgresql",
            "connection-url": f"jdbc:postgresql://${{ENV:{env}_SQL_ADDRESS}}/{d.database}",
            "connection-user": f"${{ENV:{env}_SQL_USER}}",
            "connection-password": f"${{ENV:{env}_SQL_PASSWORD}}",
        }


def test_the_federated_queries_in_the_docs_read_what_the_port_publishes() -> None:
    text = (ROOT / "docs" / "sql.md").read_text()
    queries = [q for q in re.findall(r"```sql\n(.*?)```", text, re.S) if ".products." in q]
    assert len(queries) == 2
    assert queries[0].startswith("-- the seed's federated query")
    for query in queries:
        named = re.findall(r"\b([a-z_]+)\.products\.([a-z_]+) AS ([a-z]+)\b", query)
        assert {catalog for catalog, _, _ in named} == set(DOMAINS)
        columns = {
            alias: port_columns(next(p for p in domain(catalog).products if p.source == view))
            for catalog, view, alias in named
        }
        used = re.findall(r"\b([a-z]+)\.([a-z_]+)\b", query)
        assert [f"{a}.{c}" for a, c in used if a in columns and c not in columns[a]] == []
        assert {a for a, _ in used if a in columns} == set(columns)
