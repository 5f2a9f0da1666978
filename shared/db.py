"""A domain's database: one async SQLAlchemy engine on asyncpg, created in the app's lifespan;
and the least-privileged role a service connects as."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

import anyio
import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.errors import ServiceUnavailable
from shared.migrations import current_revision, head_revision
from shared.settings import MeshSettings, asyncpg_url


class Database:
    """The connection pool of one domain database."""

    def __init__(self, domain: str, url: str, settings: MeshSettings):
        self.domain = domain
        self.settings = settings
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url),
            pool_size=settings.pool_size,
            max_overflow=0,
            pool_timeout=settings.pool_timeout_seconds,
            pool_pre_ping=True,
            connect_args={
                "timeout": settings.pool_timeout_seconds,
                "server_settings": {
                    "timezone": "UTC",
                    "application_name": f"datamesh-{domain}",
                    "statement_timeout": str(settings.statement_timeout_ms),
                },
            },
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection; a database that cannot be reached is a 503."""
        try:
            async with self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                try:
                    yield driver
                finally:
                    if driver.is_in_transaction():
                        # a stream cancelled mid-read (its client went away) could not end its
                        # cursor's transaction: close that connection rather than pool it
                        with anyio.CancelScope(shield=True):
                            await conn.invalidate()
        except (
            PoolTimeout,
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
        ) as exc:
            raise self._unavailable(exc) from None
        except SQLAlchemyError as exc:
            if isinstance(exc.__cause__, OSError | asyncpg.PostgresConnectionError):
                raise self._unavailable(exc) from None
            raise

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        retry = int(self.settings.pool_timeout_seconds) + 1
        return ServiceUnavailable(
            f"The {self.domain} database is unreachable ({type(exc).__name__}); retry later.",
            headers={"Retry-After": str(retry)},
        )

    async def readiness(self) -> dict[str, str | bool]:
        """Whether the database answers and is migrated to the newest revision."""
        head = head_revision(self.domain)
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                current = await current_revision(conn, self.domain)
        except (SQLAlchemyError, OSError) as exc:
            return {"ready": False, "database": f"unreachable: {type(exc).__name__}"}
        return {
            "ready": current == head,
            "database": "reachable",
            "revision": current or "none",
            "head": head or "none",
        }

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


async def connect(url: str) -> asyncpg.Connection:
    """One connection outside any pool (the CLI, scripts), in UTC like the pooled ones."""
    plain = asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)
    return await asyncpg.connect(plain, server_settings={"timezone": "UTC"})


def service_role(domain: str) -> str:
    """The login role a domain's service connects as on servers DataMesh manages."""
    return f"{domain}_service"


def role_of(url: str) -> str | None:
    """The user name in a postgresql:// URL."""
    user = urlsplit(url).username
    return unquote(user) if user else None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def grant_service_role(
    owner_url: str,
    role: str,
    *,
    domain: str,
    password: str | None = None,
    set_password: bool = False,
    statement_timeout_ms: int = 30_000,
) -> None:
    """Let `role` read and write the domain's data and nothing else: no DDL, no TRUNCATE, no
    writes to the migration version table; a per-statement timeout on the role itself.

    Run as the schema owner after every migration (idempotent): tables a later migration adds
    are covered again, and by default privileges in between. A missing role is created with
    `password` (if the owner may create roles); `set_password` also resets an existing one's
    (servers DataMesh manages, whose password files are the truth)."""
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists and password is None:
                raise RuntimeError(
                    f"The database role '{role}' does not exist: create it (LOGIN, no other "
                    "attribute) or give its password in the service's database URL."
                )
            if not exists or (password is not None and set_password):
                verb = "ALTER" if exists else "CREATE"
                statement = await conn.fetchval(
                    "SELECT format('%s ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text, "
                    "$3::text)",
                    verb,
                    role,
                    password,
                )
                await conn.execute(statement)
            who = _ident(role)
            database = _ident(await conn.fetchval("SELECT current_database()"))
            versions = _ident(f"alembic_version_{domain}")
            await conn.execute(
                f"""
                REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {who};
                GRANT USAGE ON SCHEMA public TO {who};
                GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {who};
                GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public
                    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {who};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public
                    GRANT USAGE, SELECT ON SEQUENCES TO {who};
                """
            )
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{versions}"):
                await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON {versions} FROM {who}")
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"ALTER ROLE {who} SET statement_timeout = {int(statement_timeout_ms)}"
                    )
            except asyncpg.InsufficientPrivilegeError:
                # an owner that may not alter roles: the pool still sets the timeout per
                # connection (Database); a DBA can set it on the role
                pass
    finally:
        await conn.close()
