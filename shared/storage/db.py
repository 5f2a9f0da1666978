"""A domain's database: one async SQLAlchemy engine on asyncpg, created in the app's lifespan;
and the least-privileged role a service connects as.

Faults (docs/operations.md): a database that is down, unreachable or not answering is a 503
with `Retry-After`, answered within the pool timeout (acquiring a connection, pinging it
included, never takes longer); a statement cut by `statement_timeout` is a 504
(`statement_timeout`) and its connection goes back to the pool healthy; a connection that
failed is closed, never pooled, and the next request reconnects, so the service recovers by
itself when the database returns."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

import anyio
import asyncpg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.declarations.products import Domain
from shared.errors import GatewayTimeout, ServiceUnavailable
from shared.settings import ServiceSettings, asyncpg_url
from shared.storage.data_versions import COMPACT_FUNCTION, track
from shared.storage.migrations import at_every_head, head_revisions
from shared.storage.view_schema import REFRESH_FUNCTION
from shared.telemetry import metrics

_log = logging.getLogger("datamesh")

# the server settings without which an acknowledged (committed) write could be lost in a crash
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
_DURABILITY_QUERY = "SELECT " + ", ".join(f"current_setting('{s}')" for s in DURABILITY_SETTINGS)


class StatementTimeout(GatewayTimeout):
    code = "statement_timeout"
    title = "Statement timeout"


class DurabilityOff(ServiceUnavailable):
    code = "durability_off"
    title = "Database not durable"


def durability_problems(values: dict[str, str]) -> list[str]:
    """What is wrong with a server's durability settings (SHOW values by name): fsync and
    full_page_writes must be on, synchronous_commit anything but off (local, remote_write,
    on and remote_apply all flush the commit to the local WAL before acknowledging it)."""
    problems = []
    for name in ("fsync", "full_page_writes"):
        if values.get(name) != "on":
            problems.append(f"{name} is {values.get(name)!r} (must be on)")
    if values.get("synchronous_commit") in (None, "off"):
        problems.append(
            f"synchronous_commit is {values.get('synchronous_commit')!r} (must not be off)"
        )
    return problems


def connection_lost(exc: BaseException, driver: asyncpg.Connection | None) -> bool:
    """Whether an error raised while using a connection means the database went away (or
    stopped answering) rather than the statement being wrong."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return False
    if isinstance(
        exc,
        OSError  # refused, reset, and TimeoutError (the client-side command timeout)
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError,  # shutting down, crashed, starting
    ):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and driver is not None and driver.is_closed()


class Database:
    """The connection pool of one domain database."""

    def __init__(self, domain: str, url: str, settings: ServiceSettings):
        self.domain = domain
        self.url = url
        self.settings = settings
        # whether the server's durability settings were checked since the last failure
        self._durable = False
        self._in_use = metrics.DB_POOL_IN_USE.labels(domain)
        for counter in (
            metrics.DB_POOL_WAITS,
            metrics.DB_POOL_TIMEOUTS,
            metrics.DB_STATEMENT_TIMEOUTS,
        ):
            counter.labels(domain)  # exported from the start, at 0
        metrics.DB_POOL_SIZE.labels(domain).inc(settings.pool_size)
        timeout = settings.pool_timeout_seconds
        statement_timeout = settings.statement_timeout_ms / 1000
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url),
            pool_size=settings.pool_size,
            max_overflow=0,
            pool_timeout=timeout,
            # pinged by _acquire instead, with a deadline: a server that stopped answering
            # (frozen, partitioned) must not hang a checkout
            pool_pre_ping=False,
            connect_args={
                "timeout": timeout,
                # a backstop for a server that stops answering in the middle of a statement:
                # statement_timeout is enforced by the server, which then cannot
                "command_timeout": statement_timeout + timeout if statement_timeout else None,
                "server_settings": {
                    "timezone": "UTC",
                    "application_name": f"datamesh-{domain}",
                    "statement_timeout": str(settings.statement_timeout_ms),
                    # a backstop: a session whose transaction sits idle (a stream's cursor
                    # whose client stopped reading) is ended by the server
                    "idle_in_transaction_session_timeout": str(
                        settings.idle_in_transaction_timeout_ms
                    ),
                },
            },
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection: a database that cannot be reached (or is lost while
        in use) is a 503, a statement that outlives the statement timeout a 504."""
        conn, driver = await self._acquire()
        broken = False
        try:
            yield driver
        except asyncpg.QueryCanceledError:
            # rolled back by the transaction it ran in, if any: the connection stays healthy
            metrics.DB_STATEMENT_TIMEOUTS.labels(self.domain).inc()
            raise StatementTimeout(
                f"The {self.domain} database cancelled the statement: it ran longer than the "
                f"statement timeout ({self.settings.statement_timeout_ms} ms). Narrow the read "
                "(filters, select, limit) or page it.",
                timeout_ms=self.settings.statement_timeout_ms,
            ) from None
        except Exception as exc:
            if not connection_lost(exc, driver):
                raise
            broken = True
            raise self._unavailable(exc) from None
        finally:
            # a stream cancelled mid-read (its client went away) could not end its cursor's
            # transaction: that connection is closed, like a failed one, rather than pooled
            await self._release(conn, driver, broken=broken or driver.is_in_transaction())

    async def _acquire(self) -> tuple[AsyncConnection, asyncpg.Connection]:
        """A pooled connection that answered a ping, within the pool timeout; else a 503. A
        pooled connection the server closed (it restarted) is replaced, so the service
        recovers by itself."""
        budget = self.settings.pool_timeout_seconds
        deadline = time.monotonic() + budget
        failure: BaseException | None = None
        for _ in range(self.settings.pool_size + 1):
            if self.engine.pool.checkedout() >= self.settings.pool_size:  # type: ignore[attr-defined]
                metrics.DB_POOL_WAITS.labels(self.domain).inc()
            try:
                conn = await self.engine.connect()
            except Exception as exc:  # refused, timed out, pool exhausted, bad password, ...
                if isinstance(exc, sqlalchemy.exc.TimeoutError):
                    metrics.DB_POOL_TIMEOUTS.labels(self.domain).inc()
                raise self._unavailable(exc) from None
            self._in_use.inc()
            try:
                driver = await _driver(conn)
            except Exception as exc:
                self._in_use.dec()
                raise self._unavailable(exc) from None
            try:
                # the ping waits up to the time left, and at least a second
                wait = max(deadline - time.monotonic(), min(budget, 1.0))
                if not self._durable:
                    values = await driver.fetchrow(_DURABILITY_QUERY, timeout=wait)
                    assert values is not None
                    self._check_durability(dict(zip(DURABILITY_SETTINGS, values, strict=True)))
                else:
                    await driver.fetchval("SELECT 1", timeout=wait)
                return conn, driver
            except DurabilityOff:
                await self._release(conn, driver, broken=False)
                raise
            except Exception as exc:
                await self._release(conn, driver, broken=True)
                if not connection_lost(exc, driver):
                    raise self._unavailable(exc) from None
                failure = exc
                if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                    break
            except BaseException:  # cancelled mid-ping: the connection's state is unknown
                await self._release(conn, driver, broken=True)
                raise
        raise self._unavailable(failure or TimeoutError())

    async def _release(
        self, conn: AsyncConnection, driver: asyncpg.Connection, *, broken: bool
    ) -> None:
        """Give a connection back to the pool, or close it for good if it is broken."""
        self._in_use.dec()
        with anyio.CancelScope(shield=True):
            if broken or driver.is_closed():
                driver.terminate()  # at once: a graceful close would wait on the server
                await conn.invalidate()
            await conn.close()

    def _check_durability(self, values: dict[str, str]) -> None:
        problems = durability_problems(values)
        if problems:
            raise DurabilityOff(
                f"The {self.domain} database could lose acknowledged writes in a crash: "
                f"{'; '.join(problems)}. The service refuses to serve from it until they are fixed.",
                settings=values,
            )
        self._durable = True

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        self._durable = False  # checked again when it answers (it may come back reconfigured)
        retry = math.ceil(self.settings.pool_timeout_seconds) + 1
        what = "did not answer in time" if isinstance(exc, TimeoutError) else "is unreachable"
        return ServiceUnavailable(
            f"The {self.domain} database {what} ({type(exc).__name__}); retry later.",
            headers={"Retry-After": str(retry)},
        )

    async def verify_durability(self) -> None:
        """At startup: refuse to serve (RuntimeError) from a server whose settings could lose
        an acknowledged write. A server that does not answer yet is checked when it does (its
        first connection), and until then the service is not ready."""
        try:
            conn, driver = await self._acquire()
        except DurabilityOff as problem:
            raise RuntimeError(problem.detail) from None
        except ServiceUnavailable as problem:
            _log.warning("%s Its durability settings are checked when it answers.", problem.detail)
            return
        await self._release(conn, driver, broken=False)

    async def readiness(self) -> dict[str, str | bool]:
        """Whether the database answers (durable), accepts a new connection and answers a
        statement on it within the readiness timeout (a pooled connection can still answer
        while the server takes no new one: a stopped postmaster), and is migrated to every
        head (the domain's own revisions and the framework's)."""
        heads = head_revisions(self.domain)
        try:
            conn, driver = await self._acquire()
        except DurabilityOff as problem:
            return {"ready": False, "database": f"not durable: {problem.detail}"}
        except ServiceUnavailable as problem:
            return {"ready": False, "database": f"unreachable: {problem.detail}"}
        await self._release(conn, driver, broken=False)
        timeout = self.settings.readiness_timeout_seconds
        try:
            with anyio.fail_after(timeout):
                current = await self._revisions_on_a_new_connection(timeout)
        except TimeoutError:
            return {
                "ready": False,
                "database": f"not answering: no new connection and statement within {timeout:g} s",
            }
        except Exception as exc:
            return {"ready": False, "database": f"unreachable: {type(exc).__name__}"}
        return {
            "ready": at_every_head(self.domain, current),
            "database": "reachable",
            "revision": ", ".join(current) or "none",
            "head": ", ".join(heads) or "none",
        }

    async def _revisions_on_a_new_connection(self, connect_within: float) -> tuple[str, ...]:
        plain = asyncpg_url(self.url).replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain, timeout=connect_within)
        try:
            table = f"alembic_version_{self.domain}"
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                return ()
            rows = await conn.fetch(f"SELECT version_num FROM {_ident(table)} ORDER BY 1")
            return tuple(row["version_num"] for row in rows)
        finally:
            conn.terminate()  # at once: a graceful close would wait on a server that stalls

    async def dispose(self) -> None:
        """Close every pooled connection."""
        metrics.DB_POOL_SIZE.labels(self.domain).dec(self.settings.pool_size)
        await self.engine.dispose()


def connections_per_process(settings: ServiceSettings) -> int:
    """The most connections one process serving a domain opens to its database at once: its
    pool, its connection in the leader election (shared.storage.leader), the one readyz opens,
    and the lake export's (the leader's)."""
    return settings.pool_size + 3


async def connection_capacity(conn: asyncpg.Connection) -> int:
    """The connections the server accepts from roles that are not superusers: max_connections
    less those it reserves."""
    capacity: int = await conn.fetchval(
        "SELECT current_setting('max_connections')::int "
        "- current_setting('superuser_reserved_connections')::int "
        "- coalesce(current_setting('reserved_connections', true), '0')::int"
    )
    return capacity


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


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


async def track_data_versions(owner_url: str, domain: Domain) -> list[str]:
    """Install the data-version triggers on the domain's tables (shared.storage.data_versions),
    as the schema owner after every migration (idempotent); the tables tracked."""
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            return await track(conn, domain)
    finally:
        await conn.close()


async def grant_service_role(
    owner_url: str,
    role: str,
    *,
    domain: str,
    password: str | None = None,
    set_password: bool = False,
    statement_timeout_ms: int = 30_000,
    idle_in_transaction_timeout_ms: int = 60_000,
) -> None:
    """Let `role` read and write the domain's data and nothing else: no DDL, no TRUNCATE, no
    writes to the migration version table; a per-statement timeout and an idle-in-transaction
    timeout on the role itself.

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
            # the materialized views: refreshed through the owner's function, nothing else
            refresh = f"public.{REFRESH_FUNCTION}(boolean)"
            if await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", refresh):
                await conn.execute(f"GRANT EXECUTE ON FUNCTION {refresh} TO {who}")
                await conn.execute(
                    f"REVOKE INSERT, UPDATE, DELETE ON view_changes, view_refreshes FROM {who}"
                )
            # the data versions: written by the owner's trigger and compaction, read by all
            compact = f"public.{COMPACT_FUNCTION}()"
            if await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", compact):
                await conn.execute(f"GRANT EXECUTE ON FUNCTION {compact} TO {who}")
                await conn.execute(
                    f"REVOKE INSERT, UPDATE, DELETE ON data_changes, data_versions FROM {who}"
                )
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"ALTER ROLE {who} SET statement_timeout = {int(statement_timeout_ms)}"
                    )
                    await conn.execute(
                        f"ALTER ROLE {who} SET idle_in_transaction_session_timeout = "
                        f"{int(idle_in_transaction_timeout_ms)}"
                    )
            except asyncpg.InsufficientPrivilegeError:
                # an owner that may not alter roles: the pool still sets the timeout per
                # connection (Database); a DBA can set it on the role
                pass
    finally:
        await conn.close()
