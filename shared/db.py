"""A domain's database: one async SQLAlchemy engine on asyncpg, created in the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
