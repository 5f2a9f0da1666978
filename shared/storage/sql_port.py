"""The SQL output port: a domain's published products as read-only PostgreSQL views, for BI
tools, notebooks and federation engines (Trino) that speak SQL rather than HTTP (docs/sql.md).

In each domain database:

- the schema `products` holds one view per product, named as its source (`customers`,
  `customer_lifetime_value`), with the product's declared columns in their declared order and
  the values the HTTP API answers (it reads the same tables and materialized views of
  `public`); a PII column is NULL unless the session's user is a member of
  `<domain>_pii_reader` (the database's counterpart of the `<domain>:pii` scope). Computed
  columns (the pseudonymous `email_key`) are left out: computing one needs the mesh-wide
  pseudonymisation secret, which is never stored in a database;
- the group `<domain>_reader` (NOLOGIN) may connect, use the schema `products` and select its
  views, nothing else; `<domain>_pii_reader` is a member of it. PUBLIC's defaults that would
  give it more (USAGE on `public`, TEMPORARY on the database, creating large objects) are
  revoked;
- reader logins (`datamesh sql-access`, `grant_login`) are members of one of the groups, with a
  random password (sent to the server as a SCRAM verifier only), a connection limit, and on the
  role itself: `search_path = products`, a statement timeout, an idle-in-transaction timeout,
  read-only transactions by default and UTC.

`publish` (re)creates the views and grants from the declarations after every migration;
`withdraw` drops the views before one (they depend on the tables a migration may change).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.declarations.products import Domain, Product
from shared.sql import quote_ident
from shared.storage.db import connect

SCHEMA = "products"
# a login's name: a plain lowercase identifier (it goes into URLs and ALTER ROLE unquoted)
_LOGIN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# what PUBLIC may do by default in any database and that a reader must not: create large
# objects (PostgreSQL lets every role), which the read-only default alone does not stop
_LARGE_OBJECT_FUNCTIONS = ("lo_creat(integer)", "lo_create(oid)", "lo_from_bytea(oid, bytea)")


class SqlPortSettings(BaseSettings):
    """The limits of reader logins (prefix DATAMESH_SQL_), set on each login role."""

    model_config = SettingsConfigDict(env_prefix="DATAMESH_SQL_", env_file=".env", extra="ignore")

    statement_timeout_ms: int = Field(30_000, ge=1)
    idle_in_transaction_timeout_ms: int = Field(60_000, ge=1)
    connection_limit: int = Field(10, ge=1)


def reader_role(domain: str) -> str:
    """The group whose members read the domain's SQL port, PII masked."""
    return f"{domain}_reader"


def pii_reader_role(domain: str) -> str:
    """The group whose members read the domain's SQL port with PII in clear."""
    return f"{domain}_pii_reader"


def default_login(domain: str, *, pii: bool) -> str:
    """The login `datamesh sql-access` creates unless named: like the API's personas."""
    return f"{domain}_pii_analyst" if pii else f"{domain}_analyst"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def port_columns(product: Product) -> tuple[str, ...]:
    """The columns of a product's view: the declared ones in order, but the computed ones."""
    return tuple(c.name for c in product.stored_columns)


def view_statement(domain: Domain, product: Product) -> str:
    """The CREATE VIEW of a product in the port: its stored columns as the API reads them, a
    PII column NULL unless the reader is a member of the domain's pii group."""
    pii = _literal(pii_reader_role(domain.name))
    outputs = []
    for column in product.stored_columns:
        name = quote_ident(column.name)
        if column.is_pii:
            outputs.append(
                f"CASE WHEN pg_has_role(current_user, {pii}, 'MEMBER') THEN s.{name} END AS {name}"
            )
        else:
            outputs.append(f"s.{name}")
    source = quote_ident(product.source)
    return f"CREATE VIEW {SCHEMA}.{source} AS SELECT {', '.join(outputs)} FROM public.{source} AS s"


def _comments(domain: Domain, product: Product) -> list[str]:
    """What a BI tool shows of the view and its columns: the declarations' descriptions."""
    view = f"{SCHEMA}.{quote_ident(product.source)}"
    statements = [
        f"COMMENT ON VIEW {view} IS "
        + _literal(f"{product.description} (the {domain.name} product '{product.name}')")
    ]
    for column in product.stored_columns:
        text = column.description
        if column.is_pii:
            text += f" PII: NULL unless a member of {pii_reader_role(domain.name)}."
        statements.append(
            f"COMMENT ON COLUMN {view}.{quote_ident(column.name)} IS {_literal(text)}"
        )
    return statements


async def _views(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind = 'v' ORDER BY 1",
        SCHEMA,
    )
    return [row["relname"] for row in rows]


async def _drop_views(conn: asyncpg.Connection) -> None:
    for name in await _views(conn):
        await conn.execute(f"DROP VIEW IF EXISTS {SCHEMA}.{quote_ident(name)} CASCADE")


async def withdraw(owner_url: str) -> None:
    """Drop the port's views (before a migration, which may change what they read); the
    schema, roles and logins stay. Run as the schema owner; nothing to do without a port."""
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            await _drop_views(conn)
    finally:
        await conn.close()


async def _ensure_groups(conn: asyncpg.Connection, domain: str) -> None:
    reader, pii = reader_role(domain), pii_reader_role(domain)
    for role in (reader, pii):
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"CREATE ROLE {quote_ident(role)} NOLOGIN")
    if not await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", pii, reader):
        await conn.execute(f"GRANT {quote_ident(reader)} TO {quote_ident(pii)}")


async def _revoke_public_defaults(conn: asyncpg.Connection, reader: str) -> list[str]:
    """Take from PUBLIC what it holds by default and a reader must not; what could not be
    taken (an owner that is not the database's owner, nor a superuser) is said."""
    database = await conn.fetchval("SELECT current_database()")
    statements = [
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        f"REVOKE TEMPORARY ON DATABASE {quote_ident(database)} FROM PUBLIC",
        *(
            f"REVOKE EXECUTE ON FUNCTION pg_catalog.{f} FROM PUBLIC"
            for f in _LARGE_OBJECT_FUNCTIONS
        ),
    ]
    for statement in statements:
        try:
            async with conn.transaction():  # a savepoint: a refusal leaves the rest to do
                await conn.execute(statement)
        except asyncpg.InsufficientPrivilegeError:
            pass
    checks = {
        "USAGE on the schema public": "SELECT has_schema_privilege($1, 'public', 'USAGE')",
        f"TEMPORARY on the database {database}": (
            "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')"
        ),
        **{
            f"EXECUTE on {f}": f"SELECT has_function_privilege($1, 'pg_catalog.{f}', 'EXECUTE')"
            for f in _LARGE_OBJECT_FUNCTIONS
        },
    }
    return [
        f"readers keep {what} (PUBLIC's default): the database's owner or a superuser can revoke "
        "it from PUBLIC (docs/sql.md)"
        for what, query in checks.items()
        if await conn.fetchval(query, reader)
    ]


@dataclass(frozen=True)
class LoginLimits:
    """What a reader login's role carries (SqlPortSettings by default)."""

    statement_timeout_ms: int
    idle_in_transaction_timeout_ms: int
    connection_limit: int

    @classmethod
    def configured(cls) -> LoginLimits:
        settings = SqlPortSettings()
        return cls(
            settings.statement_timeout_ms,
            settings.idle_in_transaction_timeout_ms,
            settings.connection_limit,
        )


async def _limit(conn: asyncpg.Connection, login: str, limits: LoginLimits) -> None:
    who = quote_ident(login)
    await conn.execute(
        f"""
        ALTER ROLE {who} CONNECTION LIMIT {int(limits.connection_limit)};
        ALTER ROLE {who} SET search_path = {SCHEMA};
        ALTER ROLE {who} SET statement_timeout = {int(limits.statement_timeout_ms)};
        ALTER ROLE {who} SET idle_in_transaction_session_timeout =
            {int(limits.idle_in_transaction_timeout_ms)};
        ALTER ROLE {who} SET default_transaction_read_only = on;
        ALTER ROLE {who} SET timezone = 'UTC';
        """
    )


async def _logins(conn: asyncpg.Connection, domain: str) -> list[str]:
    """The login roles that are members of the domain's reader groups (directly)."""
    rows = await conn.fetch(
        "SELECT DISTINCT m.rolname FROM pg_auth_members AS a "
        "JOIN pg_roles AS g ON g.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member "
        "WHERE g.rolname = ANY($1::text[]) AND m.rolcanlogin ORDER BY 1",
        [reader_role(domain), pii_reader_role(domain)],
    )
    return [row["rolname"] for row in rows]


async def publish(owner_url: str, domain: Domain, limits: LoginLimits | None = None) -> list[str]:
    """(Re)create the domain's SQL port from its declarations, as the schema owner, after a
    migration: the groups, the schema, a view per product (the previous ones dropped, so a
    product no longer declared disappears), the grants, and the limits on every existing
    reader login (a changed setting reaches them). Returns warnings: what PUBLIC keeps that
    the owner could not revoke, or why the port could not be published (an owner that may not
    create roles)."""
    limits = limits or LoginLimits.configured()
    reader = quote_ident(reader_role(domain.name))
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            try:
                async with conn.transaction():  # a savepoint: refused, nothing is left to undo
                    await _ensure_groups(conn, domain.name)
            except asyncpg.InsufficientPrivilegeError as refused:
                return [
                    f"the SQL port is not published: the owner may not create the roles "
                    f"{reader_role(domain.name)} and {pii_reader_role(domain.name)} ({refused}); "
                    "create them (NOLOGIN, the second a member of the first) or grant CREATEROLE "
                    "(docs/sql.md)"
                ]
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            await _drop_views(conn)
            for product in domain.products:
                await conn.execute(view_statement(domain, product))
                for statement in _comments(domain, product):
                    await conn.execute(statement)
            database = quote_ident(await conn.fetchval("SELECT current_database()"))
            await conn.execute(
                f"""
                REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
                REVOKE ALL ON ALL TABLES IN SCHEMA {SCHEMA} FROM PUBLIC;
                GRANT CONNECT ON DATABASE {database} TO {reader};
                GRANT USAGE ON SCHEMA {SCHEMA} TO {reader};
                GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {reader};
                """
            )
            warnings = await _revoke_public_defaults(conn, reader_role(domain.name))
            for login in await _logins(conn, domain.name):
                try:
                    async with conn.transaction():
                        await _limit(conn, login, limits)
                except asyncpg.InsufficientPrivilegeError:
                    warnings.append(f"the limits of the login {login} could not be set again")
            return warnings
    finally:
        await conn.close()


class LoginRefused(ValueError):
    """A login name `grant_login` or `revoke_login` will not act on (said why)."""


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for the password (RFC 5802, 7677): what
    `ALTER ROLE ... PASSWORD` is given, so that the password itself never reaches the server
    (nor its logs). For ASCII passwords, which SASLprep leaves as they are."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _check_login(conn: asyncpg.Connection, domain: str, login: str) -> bool:
    """Whether the login exists (and is one of the domain's reader logins), else refused."""
    groups = (reader_role(domain), pii_reader_role(domain))
    if not _LOGIN.fullmatch(login) or login in groups:
        raise LoginRefused(
            f"'{login}' is not a login name: lowercase letters, digits and underscores, at most "
            f"63, and neither {groups[0]} nor {groups[1]}"
        )
    if not await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", SCHEMA) or not (
        await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", groups)
        == 2
    ):
        raise LoginRefused(
            f"the {domain} database has no SQL port yet: run `datamesh migrate` (or `datamesh up`),"
            " which publishes it"
        )
    role = await conn.fetchrow(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
        "AS powerful FROM pg_roles WHERE rolname = $1",
        login,
    )
    if role is None:
        return False
    # a reader login of this port is a member of its groups and of nothing else (one login per
    # domain): rotating the password of a role that may do more would hand that out
    memberships = await conn.fetch(
        "SELECT g.rolname FROM pg_auth_members AS a JOIN pg_roles AS g ON g.oid = a.roleid "
        "JOIN pg_roles AS m ON m.oid = a.member WHERE m.rolname = $1",
        login,
    )
    others = {row["rolname"] for row in memberships} - set(groups)
    if role["powerful"] or others or login not in await _logins(conn, domain):
        raise LoginRefused(
            f"the role '{login}' exists and is not a reader login of the {domain} SQL port: "
            "choose another --name"
        )
    return True


async def grant_login(
    owner_url: str,
    domain: str,
    login: str,
    *,
    pii: bool = False,
    limits: LoginLimits | None = None,
) -> str:
    """Create a reader login of the domain's port, or rotate an existing one's password (and
    set its group: the pii group with `pii`, else the reader group only); returns the new
    random password. Sessions already open keep running (`revoke_login` ends them)."""
    limits = limits or LoginLimits.configured()
    password = secrets.token_urlsafe(24)
    verifier = scram_verifier(password)
    reader, pii_group = quote_ident(reader_role(domain)), quote_ident(pii_reader_role(domain))
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            exists = await _check_login(conn, domain, login)
            verb = "ALTER" if exists else "CREATE"
            statement = await conn.fetchval(
                "SELECT format('%s ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text, $3::text)",
                verb,
                login,
                verifier,
            )
            await conn.execute(statement)
            who = quote_ident(login)
            await conn.execute(f"GRANT {reader} TO {who}")
            if pii:
                await conn.execute(f"GRANT {pii_group} TO {who}")
            elif await conn.fetchval(
                "SELECT 1 FROM pg_auth_members AS a JOIN pg_roles AS g ON g.oid = a.roleid "
                "JOIN pg_roles AS m ON m.oid = a.member WHERE g.rolname = $1 AND m.rolname = $2",
                pii_reader_role(domain),
                login,
            ):
                await conn.execute(f"REVOKE {pii_group} FROM {who}")
            await _limit(conn, login, limits)
    finally:
        await conn.close()
    return password


async def revoke_login(owner_url: str, domain: str, login: str) -> bool:
    """Drop a reader login of the domain's port, ending its open sessions; False if there was
    none of that name."""
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            if not await _check_login(conn, domain, login):
                return False
            oid = await conn.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", login)
            await conn.execute(f"DROP ROLE {quote_ident(login)}")
        # by the role's oid: a dropped role's sessions have no user name any more
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # then they run out
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = $1", oid
            )
        return True
    finally:
        await conn.close()


def trino_catalog(domain: Domain) -> str:
    """A Trino catalog (PostgreSQL connector) reading the domain's SQL port: the server's
    address and the reader login's name and password from the environment of Trino's process
    (`<DOMAIN>_SQL_ADDRESS`, `<DOMAIN>_SQL_USER`, `<DOMAIN>_SQL_PASSWORD`), never a value."""
    env = domain.name.upper()
    return (
        f"# Generated by `datamesh generate` from the registered domains (docs/sql.md): the\n"
        f"# {domain.name} domain's SQL port as the Trino catalog `{domain.name}` (its tables are\n"
        f"# {domain.name}.{SCHEMA}.<product>). Trino reads the values from its environment:\n"
        f"#   {env}_SQL_ADDRESS   host:port of the {domain.name} database\n"
        f"#   {env}_SQL_USER, {env}_SQL_PASSWORD   a reader login "
        f"(`datamesh sql-access --domain {domain.name}`)\n"
        "connector.name=postgresql\n"
        f"connection-url=jdbc:postgresql://${{ENV:{env}_SQL_ADDRESS}}/{domain.database}\n"
        f"connection-user=${{ENV:{env}_SQL_USER}}\n"
        f"connection-password=${{ENV:{env}_SQL_PASSWORD}}\n"
    )
