"""Which PostgreSQL the tests run against (DATAMESH_TEST_POSTGRES):

- `embedded` (default): one embedded server per domain, exactly as `datamesh up` runs them;
- a `postgresql://` URL of a superuser on any real server: the tests create their own
  databases there, each named `datamesh_test_<name>`, dropped and recreated at the start;
- `testcontainers`: one PostgreSQL container per domain (needs Docker; image from
  DATAMESH_TEST_POSTGRES_IMAGE, default postgres:17), to test the exact server a team deploys.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from services import DOMAINS
from shared.storage.embedded import EmbeddedPostgres


class PostgresServer(Protocol):
    """A running server on which a test can create databases."""

    def ensure_database(self, database: str) -> None: ...

    def url(self, database: str, role: str | None = None) -> str: ...

    def role_password(self, role: str) -> str: ...


class ExternalPostgres:
    """A server given by a superuser URL; test databases get a prefix and start empty."""

    def __init__(self, url: str):
        self.base = url.rsplit("/", 1)[0]
        self._passwords: dict[str, str] = {}

    def url(self, database: str, role: str | None = None) -> str:
        if role is None:
            return f"{self.base}/datamesh_test_{database}"
        where = urlsplit(self.base)
        credentials = f"{quote(role, safe='')}:{quote(self.role_password(role), safe='')}"
        return f"{where.scheme}://{credentials}@{where.hostname}:{where.port or 5432}/datamesh_test_{database}"

    def role_password(self, role: str) -> str:
        """A login role's password, random for this test run (the role is (re)set with it)."""
        return self._passwords.setdefault(role, secrets.token_urlsafe(32))

    def ensure_database(self, database: str) -> None:
        name = sql.Identifier(f"datamesh_test_{database}")
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


@contextmanager
def postgres_per_domain(root: Path) -> Iterator[dict[str, PostgresServer]]:
    """One server per domain, of the kind DATAMESH_TEST_POSTGRES asks for."""
    kind = os.environ.get("DATAMESH_TEST_POSTGRES", "embedded")
    if kind.startswith(("postgresql://", "postgres://")):
        yield {name: ExternalPostgres(kind) for name in DOMAINS}
    elif kind == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        image = os.environ.get("DATAMESH_TEST_POSTGRES_IMAGE", "postgres:17")
        with ExitStack() as stack:
            containers = {
                name: stack.enter_context(PostgresContainer(image, driver=None)) for name in DOMAINS
            }
            yield {name: ExternalPostgres(c.get_connection_url()) for name, c in containers.items()}
    elif kind == "embedded":
        servers = {name: EmbeddedPostgres(root, name) for name in DOMAINS}
        try:
            for server in servers.values():
                server.start()
            yield dict(servers)
        finally:
            for server in servers.values():
                server.stop()
    else:
        raise ValueError(
            f"DATAMESH_TEST_POSTGRES has value '{kind}'; expected embedded, testcontainers or a "
            "postgresql:// URL"
        )
