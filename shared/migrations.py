"""Alembic, driven programmatically: one environment per domain database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, async_engine_from_config

from shared.settings import asyncpg_url, migration_database_url_for

_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(domain: str, url: str | None = None) -> Config:
    """The Alembic configuration of a domain's environment, pointed at its database."""
    config = Config(ini_section=domain)
    config.set_main_option("script_location", str(_ROOT / "migrations" / domain))
    config.attributes["domain"] = domain
    if url:
        config.attributes["url"] = url
    return config


def upgrade(domain: str, url: str) -> None:
    """Migrate a domain's database to the newest revision (synchronous; not inside a loop)."""
    command.upgrade(alembic_config(domain, url), "head")


def head_revision(domain: str) -> str | None:
    """The newest revision of a domain's migrations."""
    return ScriptDirectory.from_config(alembic_config(domain)).get_current_head()


async def current_revision(connection: AsyncConnection, domain: str) -> str | None:
    """The revision a domain's database is migrated to, or None if it is not migrated."""

    def _read(sync: Connection) -> str | None:
        options = {"version_table": f"alembic_version_{domain}"}
        return MigrationContext.configure(sync, opts=options).get_current_revision()

    return await connection.run_sync(_read)


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
