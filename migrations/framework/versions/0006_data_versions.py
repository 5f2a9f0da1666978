"""Data versions: a number per table that moves on every committed write (see
shared.storage.data_versions).

Revision ID: 0006_framework_data_versions
Revises: 0005_framework_refresh_function
Create Date: 2026-12-08

- `data_changes` gets a row per statement that writes a tracked table (append-only, like
  `view_changes`: concurrent writers never wait on each other for it), from
  `datamesh_mark_data_change()`, which the statement-level triggers `<table>_marks_data_change`
  call. The triggers are installed on every table a domain publishes after each migration
  (`datamesh migrate`: shared.storage.data_versions.track), from its declarations.
- `data_versions` holds, per table, the changes compacted out of `data_changes` by
  `datamesh_compact_data_changes()`, so that a table's version, `compacted + count(changes)`,
  never goes back and stays cheap to read.

Both functions run as the schema owner (SECURITY DEFINER): the services' role cannot write
either table itself.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_framework_data_versions"
down_revision: str | Sequence[str] | None = "0005_framework_refresh_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS: tuple[str, ...] = (
    "CREATE TABLE data_changes (table_name name NOT NULL, "
    "changed_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE INDEX data_changes_table ON data_changes (table_name)",
    "CREATE TABLE data_versions (table_name name PRIMARY KEY, compacted bigint NOT NULL)",
    """
    CREATE FUNCTION datamesh_mark_data_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    BEGIN
        INSERT INTO data_changes (table_name) VALUES (TG_TABLE_NAME);
        RETURN NULL;
    END
    $$
    """,
    # in one statement: a reader's snapshot sees the rows before or the sum after, never both
    """
    CREATE FUNCTION datamesh_compact_data_changes() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    DECLARE
        moved bigint;
    BEGIN
        WITH gone AS (DELETE FROM data_changes RETURNING table_name),
        counted AS (SELECT table_name, count(*) AS n FROM gone GROUP BY table_name)
        INSERT INTO data_versions AS v (table_name, compacted)
        SELECT table_name, n FROM counted
        ON CONFLICT (table_name) DO UPDATE SET compacted = v.compacted + excluded.compacted;
        GET DIAGNOSTICS moved = ROW_COUNT;
        RETURN moved;
    END
    $$
    """,
    "REVOKE ALL ON FUNCTION datamesh_mark_data_change() FROM PUBLIC",
    "REVOKE ALL ON FUNCTION datamesh_compact_data_changes() FROM PUBLIC",
)


def upgrade() -> None:
    """Create data_changes, data_versions and their functions."""
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    """Drop them, and the triggers calling the marking function with it."""
    op.execute("DROP FUNCTION IF EXISTS datamesh_compact_data_changes()")
    op.execute("DROP FUNCTION IF EXISTS datamesh_mark_data_change() CASCADE")
    op.execute("DROP TABLE IF EXISTS data_versions")
    op.execute("DROP TABLE IF EXISTS data_changes")
