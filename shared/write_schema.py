"""The schema every domain's writes need (migration 0003 of each domain, statements written
once here): timestamps kept by the database, and the kept responses of idempotent writes.

- `updated_at` is set to the transaction's time by a trigger whenever a row really changes
  (an UPDATE that changes nothing leaves it), whatever client wrote it.
- `created_at` takes its default on insert and never changes after: a trigger keeps the old
  value on every UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from shared.idempotency import IDEMPOTENCY_TABLES
from shared.query import quote_ident

FUNCTIONS: tuple[str, ...] = (
    """
    CREATE FUNCTION datamesh_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE FUNCTION datamesh_keep_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.created_at := OLD.created_at;
        RETURN NEW;
    END
    $$
    """,
)


def _triggers(updated_at: Sequence[str], created_at: Sequence[str]) -> list[str]:
    statements = []
    for table in updated_at:
        statements.append(
            f"CREATE TRIGGER {quote_ident(table + '_touch_updated_at')} "
            f"BEFORE UPDATE ON {quote_ident(table)} FOR EACH ROW "
            "WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION datamesh_touch_updated_at()"
        )
    for table in created_at:
        statements.append(
            f"CREATE TRIGGER {quote_ident(table + '_keep_created_at')} "
            f"BEFORE UPDATE ON {quote_ident(table)} FOR EACH ROW "
            "EXECUTE FUNCTION datamesh_keep_created_at()"
        )
    return statements


def write_tables_upgrade(*, updated_at: Sequence[str], created_at: Sequence[str]) -> None:
    """Create the timestamp triggers on the named tables and the idempotency_keys table
    (inside a domain's Alembic migration)."""
    for statement in (*FUNCTIONS, *_triggers(updated_at, created_at), *IDEMPOTENCY_TABLES):
        op.execute(statement)


def write_tables_downgrade(*, updated_at: Sequence[str], created_at: Sequence[str]) -> None:
    """Drop what write_tables_upgrade created."""
    op.execute("DROP TABLE IF EXISTS idempotency_keys")
    for table in updated_at:
        op.execute(
            f"DROP TRIGGER IF EXISTS {quote_ident(table + '_touch_updated_at')} "
            f"ON {quote_ident(table)}"
        )
    for table in created_at:
        op.execute(
            f"DROP TRIGGER IF EXISTS {quote_ident(table + '_keep_created_at')} "
            f"ON {quote_ident(table)}"
        )
    op.execute("DROP FUNCTION IF EXISTS datamesh_touch_updated_at()")
    op.execute("DROP FUNCTION IF EXISTS datamesh_keep_created_at()")
