"""The timestamps every domain's writes keep (statements written once here, called by a
domain's migration with its tables):

- `updated_at` is set to the transaction's time by a trigger whenever a row really changes
  (an UPDATE that changes nothing leaves it), whatever client wrote it.
- `created_at` takes its default on insert and never changes after: a trigger keeps the old
  value on every UPDATE.

The triggers' functions (`datamesh_touch_updated_at()`, `datamesh_keep_created_at()`) and the
`idempotency_keys` table are the framework's, created once for every domain database by its
migration branch (migrations/framework/versions/0002_writes.py): a domain's revision that
calls these depends on that revision.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from shared.sql import quote_ident


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


def timestamp_triggers_upgrade(*, updated_at: Sequence[str], created_at: Sequence[str]) -> None:
    """Create the timestamp triggers on the named tables (inside a domain's Alembic migration)."""
    for statement in _triggers(updated_at, created_at):
        op.execute(statement)


def timestamp_triggers_downgrade(*, updated_at: Sequence[str], created_at: Sequence[str]) -> None:
    """Drop what timestamp_triggers_upgrade created."""
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
