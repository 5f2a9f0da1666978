"""Fast analytics views: the schema `live`, the change marks and the refresh bookkeeping (see
shared.storage.view_schema).

Revision ID: 0003_framework_views
Revises: 0002_framework_writes
Create Date: 2026-11-26

- `live` holds each analytics view as first defined (computed on each read); a domain's
  revision moves its views there and materializes them in `public`.
- `view_changes` gets a row per statement that changes a view's source (append-only: writers
  never wait on each other for it), from `datamesh_mark_view_change()`, which a domain's
  statement-level triggers call. It runs as the schema owner (SECURITY DEFINER): the services'
  role cannot write the table itself.
- `view_refreshes` (one row) says when the views were last refreshed and as of when.

Until the framework's branch existed, each domain's revision 0004 created these with its
materialized views; that revision now depends on this one (its triggers call the function).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_framework_views"
down_revision: str | Sequence[str] | None = "0002_framework_writes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS: tuple[str, ...] = (
    "CREATE SCHEMA live",
    "CREATE TABLE view_changes (changed_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE view_refreshes (data_as_of timestamptz, refreshed_at timestamptz, "
    "duration_ms integer, changes_seen bigint)",
    "INSERT INTO view_refreshes VALUES (NULL, NULL, NULL, NULL)",
)
# as the domains' revisions 0004 wrote it (a function's text is kept as written, spaces too)
MARK_VIEW_CHANGE = """
        CREATE FUNCTION datamesh_mark_view_change() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        BEGIN
            INSERT INTO view_changes DEFAULT VALUES;
            RETURN NULL;
        END
        $$
        """


def upgrade() -> None:
    """Create the schema live, view_changes, view_refreshes and the marking function."""
    for statement in STATEMENTS:
        op.execute(statement)
    op.execute(MARK_VIEW_CHANGE)
    op.execute("REVOKE ALL ON FUNCTION datamesh_mark_view_change() FROM PUBLIC")


def downgrade() -> None:
    """Drop them."""
    op.execute("DROP FUNCTION IF EXISTS datamesh_mark_view_change()")
    op.execute("DROP TABLE IF EXISTS view_refreshes")
    op.execute("DROP TABLE IF EXISTS view_changes")
    op.execute("DROP SCHEMA IF EXISTS live")
