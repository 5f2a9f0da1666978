"""The framework's tables live in one migration branch applied to every domain database: a
database migrated before the branch existed upgrades in place with every row kept, a new one
gets exactly the same schema, and a framework object is created by one revision only."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command

from services import DOMAINS
from shared.settings import ServiceSettings
from shared.storage import migrations
from shared.storage.db import Database
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
FIRST_FRAMEWORK_REVISION = "migrations/framework/versions/0001_quality.py"

# each framework table and what its rows say, read before and after the upgrade
FRAMEWORK_ROWS = {
    "quality_runs": "SELECT * FROM quality_runs ORDER BY run_id",
    "quality_results": "SELECT * FROM quality_results ORDER BY result_id",
    "idempotency_keys": "SELECT * FROM idempotency_keys ORDER BY subject, key",
    "view_changes": "SELECT * FROM view_changes ORDER BY changed_at",
    "view_refreshes": "SELECT * FROM view_refreshes",
    "view_refresh_errors": "SELECT * FROM view_refresh_errors",
}

# the schema as the catalogs list it: relations, columns, constraints, indexes, views,
# functions (with their privileges), triggers and schemas of the schemas DataMesh uses
CATALOG = {
    "schemas": """
        SELECT nspname FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
    """,
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relacl::text FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'live')
    """,
    "columns": """
        SELECT table_schema, table_name, ordinal_position, column_name, data_type,
               character_maximum_length, numeric_precision, numeric_scale, column_default,
               is_nullable
        FROM information_schema.columns WHERE table_schema IN ('public', 'live')
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, convalidated,
               pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    """,
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname IN ('public', 'live')",
    "views": "SELECT schemaname, viewname, definition FROM pg_views "
    "WHERE schemaname IN ('public', 'live') "
    "UNION ALL SELECT schemaname, matviewname, definition FROM pg_matviews",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prosecdef,
               p.proacl::text, pg_get_functiondef(p.oid)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
    """,
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE NOT tgisinternal",
}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def commit_before_the_framework_branch() -> str:
    """The last commit whose domain trees still created the framework's tables themselves."""
    added = git("log", "--diff-filter=A", "--format=%H", "--", FIRST_FRAMEWORK_REVISION).split()
    return f"{added[-1]}^" if added else "HEAD"


@pytest.fixture(scope="module")
def before_the_branch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The framework, the domains and their migration trees as they were before the framework's
    branch: migrating with them builds a database exactly as it is in service today."""
    root = tmp_path_factory.mktemp("before-the-framework-branch")
    archive = subprocess.run(
        [
            "git",
            "archive",
            commit_before_the_framework_branch(),
            "shared",
            "services",
            "migrations",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    assert not (root / "migrations" / "framework").exists()
    return root


def migrate_before_the_branch(
    old: Path, name: str, url: str, target: str = "head", *, load: bool = False
) -> None:
    """Migrate with the old code and trees (in a process of their own: they import the old
    shared modules) to `target`, and load the sample data with them if asked."""
    script = (
        "import asyncio, datetime, sys\n"
        "from alembic import command\n"
        "from services import domain, sample\n"
        # the modules as that commit named them (before shared/ was grouped in sub-packages)
        "from shared.migrations import alembic_config\n"
        "from shared.sample_data import load_if_empty\n"
        "name, url, target, load = sys.argv[1:]\n"
        "command.upgrade(alembic_config(name, url), target)\n"
        "if load == 'load':\n"
        "    rows = sample(name)(datetime.date(2024, 10, 18))\n"
        "    asyncio.run(load_if_empty(domain(name), url, rows))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(old)}
    subprocess.run(
        [sys.executable, "-c", script, name, url, target, "load" if load else "-"],
        cwd=old,
        env=env,
        check=True,
    )


def fresh_database(server: PostgresServer, database: str) -> str:
    server.ensure_database(database)
    return server.url(database)


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            part: sorted(conn.execute(query).fetchall(), key=repr)
            for part, query in CATALOG.items()
        }


def framework_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(query).fetchall() for table, query in FRAMEWORK_ROWS.items()}


def version_rows(url: str, name: str) -> tuple[str, ...]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT version_num FROM alembic_version_{name} ORDER BY 1")
        return tuple(version for (version,) in rows.fetchall())


def readiness(name: str, url: str) -> dict[str, str | bool]:
    """What the domain service's readyz would answer on the database."""

    async def ask() -> dict[str, str | bool]:
        database = Database(name, url, ServiceSettings())
        try:
            return await database.readiness()
        finally:
            await database.dispose()

    return asyncio.run(ask())


def use_the_framework_tables(url: str) -> None:
    """A quality run with a result, a kept idempotent response, a refresh, a pending change and
    a noted refresh failure: the rows an upgrade must keep."""
    with psycopg.connect(url, autocommit=True) as conn:
        run_id = conn.execute(
            "INSERT INTO quality_runs (started_at, finished_at, trigger, score, checks, passed, "
            "failed, warned, errored) VALUES ('2026-12-01 10:00Z', '2026-12-01 10:01Z', 'cli', "
            "50.0, 2, 1, 1, 0, 0) RETURNING run_id"
        ).fetchone()
        assert run_id is not None
        conn.execute(
            "INSERT INTO quality_results (run_id, product, check_name, kind, dimension, severity, "
            "outcome, measured_value, threshold, message) VALUES (%s, 'a-product', 'a-check', "
            "'not_null', 'completeness', 'major', 'fail', 3, '0', 'three nulls')",
            run_id,
        )
        conn.execute(
            "INSERT INTO idempotency_keys (subject, key, method, path, body_hash, status, "
            "response_body) VALUES ('alice', 'key-1', 'POST', '/v1/rows', 'hash', 201, "
            "'\\x7b7d'::bytea)"
        )
        assert conn.execute("SELECT datamesh_refresh_views(false)").fetchone() == (0,)
        conn.execute("INSERT INTO view_changes DEFAULT VALUES")
        conn.execute(
            "UPDATE view_refresh_errors SET last_error = 'a failure', failing_since = now(), "
            "last_failed_at = now()"
        )


@pytest.fixture(scope="module")
def new_databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Each domain's database migrated from nothing with the framework's branch."""
    urls = {}
    for name in DOMAINS:
        urls[name] = fresh_database(postgres_servers[name], f"{name}_migrated_new")
        migrations.upgrade(name, urls[name])
    return urls


@pytest.mark.parametrize("name", DOMAINS)
def test_a_database_at_the_head_before_the_framework_branch_upgrades_keeping_every_row(
    postgres_servers: dict[str, PostgresServer], before_the_branch: Path, name: str
) -> None:
    url = fresh_database(postgres_servers[name], f"{name}_migrated_before")
    migrate_before_the_branch(before_the_branch, name, url, load=True)
    use_the_framework_tables(url)
    rows = framework_rows(url)
    assert [len(rows[table]) for table in FRAMEWORK_ROWS] == [1, 1, 1, 1, 1, 1]
    assert rows["view_refreshes"][0][0] is not None  # refreshed once
    assert rows["view_refresh_errors"][0][0] == "a failure"
    (old_head,) = version_rows(url, name)
    assert not migrations.at_every_head(name, (old_head,))
    heads = ", ".join(migrations.head_revisions(name))
    assert readiness(name, url) == {
        "ready": False,
        "database": "reachable",
        "revision": old_head,
        "head": heads,
    }

    migrations.upgrade(name, url)

    assert framework_rows(url) == rows
    assert version_rows(url, name) == migrations.head_revisions(name)
    assert old_head in migrations.head_revisions(name)  # the domain's own head did not move
    assert migrations.at_every_head(name, version_rows(url, name))
    assert readiness(name, url) == {
        "ready": True,
        "database": "reachable",
        "revision": heads,
        "head": heads,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        # the framework's refresh function took the pending change, and refreshes every view
        assert conn.execute("SELECT datamesh_refresh_views()").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM view_changes").fetchone() == (0,)


@pytest.mark.parametrize("name", DOMAINS)
def test_a_new_database_has_the_schema_of_an_upgraded_one(
    postgres_servers: dict[str, PostgresServer],
    before_the_branch: Path,
    new_databases: dict[str, str],
    name: str,
) -> None:
    upgraded = fresh_database(postgres_servers[name], f"{name}_upgraded_empty")
    migrate_before_the_branch(before_the_branch, name, upgraded)
    migrations.upgrade(name, upgraded)
    new = new_databases[name]
    assert (
        version_rows(new, name) == version_rows(upgraded, name) == migrations.head_revisions(name)
    )
    expected, found = catalog(upgraded), catalog(new)
    assert [len(found[part]) > 0 for part in CATALOG] == [True] * len(CATALOG)
    for part in CATALOG:
        assert found[part] == expected[part], part


# every head main's domain trees had before the framework's branch (0005 and 0006 came together)
OLDER_HEADS = ("0001_sales", "0002_sales_quality", "0003_sales_writes", "0004_sales_matviews")


@pytest.mark.parametrize("old_head", OLDER_HEADS)
def test_a_database_at_an_older_head_upgrades_to_the_same_schema(
    postgres_servers: dict[str, PostgresServer],
    before_the_branch: Path,
    new_databases: dict[str, str],
    old_head: str,
) -> None:
    url = fresh_database(postgres_servers["sales"], f"sales_at_{old_head}")
    migrate_before_the_branch(before_the_branch, "sales", url, old_head)
    migrations.upgrade("sales", url)
    assert version_rows(url, "sales") == migrations.head_revisions("sales")
    expected, found = catalog(new_databases["sales"]), catalog(url)
    for part in CATALOG:
        assert found[part] == expected[part], part


def test_every_domain_database_has_a_head_of_its_own_and_the_frameworks() -> None:
    framework = set()
    for name in DOMAINS:
        heads = migrations.head_revisions(name)
        assert len(heads) == 2, heads
        (own,) = [head for head in heads if f"_{name}_" in head]
        framework |= set(heads) - {own}
    assert framework == {"0006_framework_data_versions"}  # one branch, in every database


def test_a_domain_revision_below_a_head_is_not_every_head() -> None:
    (name, *_) = DOMAINS
    heads = migrations.head_revisions(name)
    assert migrations.at_every_head(name, heads)
    assert not migrations.at_every_head(name, ())
    for head in heads:
        assert not migrations.at_every_head(name, (head,))
    assert not migrations.at_every_head(name, (*heads, "0099_unknown"))


def objects(url: str) -> set[str]:
    """The names of the database's tables, functions and schemas."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' "
            "UNION SELECT proname FROM pg_proc UNION SELECT nspname FROM pg_namespace"
        ).fetchall()
    return {name for (name,) in rows}


@pytest.fixture(scope="module")
def framework_objects(postgres_servers: dict[str, PostgresServer]) -> set[str]:
    """The tables, functions and schemas the framework's branch alone creates, on an empty
    database (with its version table)."""
    (name, *_) = DOMAINS
    url = fresh_database(postgres_servers[name], "framework_alone")
    before = objects(url)
    command.upgrade(migrations.alembic_config(name, url), f"{migrations.FRAMEWORK}@head")
    return objects(url) - before - {f"alembic_version_{name}"}


def test_each_framework_object_is_created_by_one_revision_of_the_framework_branch(
    framework_objects: set[str],
) -> None:
    assert framework_objects >= {
        "quality_runs",
        "quality_results",
        "idempotency_keys",
        "view_changes",
        "view_refreshes",
        "view_refresh_errors",
        "datamesh_refresh_views",
        "datamesh_mark_view_change",
        "datamesh_touch_updated_at",
        "datamesh_keep_created_at",
        "live",
    }
    sources = {
        path.relative_to(ROOT).as_posix(): path.read_text()
        for folder in ("migrations", "shared")
        for path in sorted((ROOT / folder).rglob("*.py"))
    }
    for name in sorted(framework_objects):
        creates = re.compile(
            rf"CREATE\s+(OR\s+REPLACE\s+)?(TABLE|FUNCTION|SCHEMA)\s+(IF\s+NOT\s+EXISTS\s+)?"
            rf"{re.escape(name)}\b"
        )
        found = [path for path, text in sources.items() if creates.search(text)]
        assert len(found) == 1, (name, found)
        assert found[0].startswith("migrations/framework/versions/"), (name, found)
