"""Alembic, driven programmatically: one environment per domain database.

Each domain's environment reads two version locations: its own revisions
(`migrations/<domain>/versions/`) and the framework's branch (`migrations/framework/versions/`,
branch label `framework`), the tables every domain database holds the same (quality runs,
idempotency keys, the views' bookkeeping). A database is migrated to every head: its version
table `alembic_version_<domain>` holds a row per branch head it is at, unless a domain revision
depends on that head (Alembic then counts it as applied below the domain's row).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, async_engine_from_config

from shared.settings import asyncpg_url, migration_database_url_for

_ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK = "framework"  # the branch label, and the folder of migrations/ its revisions are in


def alembic_config(domain: str, url: str | None = None) -> Config:
    """The Alembic configuration of a domain's environment, pointed at its database: its own
    revisions and the framework's branch."""
    config = Config(ini_section=domain)
    config.set_main_option("script_location", str(_ROOT / "migrations" / domain))
    locations = (
        _ROOT / "migrations" / domain / "versions",
        _ROOT / "migrations" / FRAMEWORK / "versions",
    )
    config.set_main_option("version_locations", "\n".join(map(str, locations)))
    config.set_main_option("path_separator", "newline")
    config.attributes["domain"] = domain
    if url:
        config.attributes["url"] = url
    return config


def upgrade(domain: str, url: str) -> None:
    """Migrate a domain's database to every head (synchronous; not inside a loop)."""
    command.upgrade(alembic_config(domain, url), "heads")


@lru_cache
def _script(domain: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(domain))


def head_revisions(domain: str) -> tuple[str, ...]:
    """The newest revision of each branch of a domain's migrations (its own, the framework's)."""
    return tuple(sorted(_script(domain).get_heads()))


async def current_revisions(connection: AsyncConnection, domain: str) -> tuple[str, ...]:
    """The revisions a domain's database is migrated to (its version table's rows; empty if it
    is not migrated)."""

    def _read(sync: Connection) -> tuple[str, ...]:
        options = {"version_table": f"alembic_version_{domain}"}
        return MigrationContext.configure(sync, opts=options).get_current_heads()

    return tuple(sorted(await connection.run_sync(_read)))


def at_every_head(domain: str, current: Iterable[str]) -> bool:
    """Whether a database at the `current` revisions is at every head of the domain's
    migrations: each head is one of them or below one, by its down revisions or its
    dependencies (which Alembic counts as applied)."""
    script = _script(domain)
    applied: set[str] = set()
    todo = list(current)
    while todo:
        revision = todo.pop()
        if revision in applied:
            continue
        try:
            found = script.get_revision(revision)
        except CommandError:
            return False  # a revision these migrations do not know: not ready for them
        if found is None:
            return False
        applied.add(revision)
        todo += [*_revisions(found.down_revision), *_revisions(found.dependencies)]
    return set(script.get_heads()) <= applied


def _revisions(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def run_environment() -> None:
    """The body of every domain's env.py: migrate online, through asyncpg."""
    config = context.config
    domain = config.attributes.get("domain") or config.config_ini_section
    url = config.attributes.get("url") or migration_database_url_for(domain)
    if not url:
        raise RuntimeError(
            f"no database for '{domain}': set {domain.upper()}_MIGRATION_DATABASE_URL (the owner) or "
            f"{domain.upper()}_DATABASE_URL"
        )
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, version_table=f"alembic_version_{domain}")
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(asyncpg_url(url), domain))


async def _run_online(url: str, domain: str) -> None:
    engine = async_engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, domain)
    await engine.dispose()


def _migrate(connection: Connection, domain: str) -> None:
    context.configure(connection=connection, version_table=f"alembic_version_{domain}")
    with context.begin_transaction():
        context.run_migrations()
