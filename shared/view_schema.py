"""The schema behind fast analytics views (migration 0004 of each domain, statements written once
here): each analytics view is materialized, and refreshed when its sources change.

- The view as first defined (computed on each read) moves to the schema `live`; in `public` a
  materialized view of the same name holds its rows, with a unique index on its key (which
  `REFRESH ... CONCURRENTLY` needs: readers are never blocked) and the indexes its sorts need.
- A statement-level trigger on every source table appends a row to `view_changes` (append-only:
  concurrent writers never wait on each other for it).
- `datamesh_refresh_views(concurrent_refresh)` deletes the change rows it sees, refreshes every
  materialized view of the domain from a later snapshot, and records when in `view_refreshes`:
  a change committed after the delete keeps its row and is picked up by the next refresh.
  It runs as the schema owner (SECURITY DEFINER): the services' role may call it, and may not
  change the schema. Two refreshes never overlap (an advisory lock; the second returns -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alembic import op

from shared.query import quote_ident

LIVE_SCHEMA = "live"
REFRESH_FUNCTION = "datamesh_refresh_views"
_LOCK = 7_301_202_402  # advisory lock: one refresh of a database at a time


@dataclass(frozen=True)
class MaterializedView:
    """An analytics view to materialize: its name, its key and the columns it is sorted by."""

    name: str
    key: str
    sort_columns: tuple[str, ...] = ()


def _refresh_function(views: Sequence[MaterializedView]) -> str:
    refreshes = "\n".join(
        f"""
        IF concurrent_refresh THEN
            REFRESH MATERIALIZED VIEW CONCURRENTLY {quote_ident(v.name)};
        ELSE
            REFRESH MATERIALIZED VIEW {quote_ident(v.name)};
        END IF;"""
        for v in views
    )
    return f"""
    CREATE FUNCTION {REFRESH_FUNCTION}(concurrent_refresh boolean DEFAULT true) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    DECLARE
        seen bigint;
        as_of timestamptz;
        started timestamptz := clock_timestamp();
    BEGIN
        IF NOT pg_try_advisory_xact_lock({_LOCK}) THEN
            RETURN -1;
        END IF;
        DELETE FROM view_changes;
        GET DIAGNOSTICS seen = ROW_COUNT;
        IF seen = 0 AND concurrent_refresh THEN
            RETURN 0;
        END IF;
        -- every write committed before this instant is in the refreshes below (each takes
        -- its snapshot later)
        as_of := clock_timestamp();
{refreshes}
        UPDATE view_refreshes SET data_as_of = as_of, refreshed_at = clock_timestamp(),
            duration_ms = (extract(epoch FROM clock_timestamp() - started) * 1000)::integer,
            changes_seen = seen;
        RETURN seen;
    END
    $$
    """


def materialize_upgrade(views: Sequence[MaterializedView], sources: Sequence[str]) -> None:
    """Materialize the views, mark changes of the source tables, create the refresh function
    (inside a domain's Alembic migration)."""
    op.execute(f"CREATE SCHEMA {LIVE_SCHEMA}")
    op.execute(
        "CREATE TABLE view_changes (changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    op.execute(
        "CREATE TABLE view_refreshes (data_as_of timestamptz, refreshed_at timestamptz, "
        "duration_ms integer, changes_seen bigint)"
    )
    op.execute("INSERT INTO view_refreshes VALUES (NULL, NULL, NULL, NULL)")
    for view in views:
        name = quote_ident(view.name)
        op.execute(f"ALTER VIEW {name} SET SCHEMA {LIVE_SCHEMA}")
        op.execute(
            f"CREATE MATERIALIZED VIEW {name} AS SELECT * FROM {LIVE_SCHEMA}.{name} WITH DATA"
        )
        op.execute(
            f"CREATE UNIQUE INDEX {quote_ident(view.name + '_key')} "
            f"ON {name} ({quote_ident(view.key)})"
        )
        for column in view.sort_columns:
            op.execute(
                f"CREATE INDEX {quote_ident(f'{view.name}_{column}_idx')} "
                f"ON {name} ({quote_ident(column)})"
            )
    op.execute(
        """
        CREATE FUNCTION datamesh_mark_view_change() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        BEGIN
            INSERT INTO view_changes DEFAULT VALUES;
            RETURN NULL;
        END
        $$
        """
    )
    for table in sources:
        op.execute(
            f"CREATE TRIGGER {quote_ident(table + '_marks_view_change')} "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quote_ident(table)} "
            "FOR EACH STATEMENT EXECUTE FUNCTION datamesh_mark_view_change()"
        )
    op.execute(_refresh_function(views))
    for function in ("datamesh_mark_view_change()", f"{REFRESH_FUNCTION}(boolean)"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")


def materialize_downgrade(views: Sequence[MaterializedView], sources: Sequence[str]) -> None:
    """Undo materialize_upgrade: the views are computed on each read again."""
    op.execute(f"DROP FUNCTION IF EXISTS {REFRESH_FUNCTION}(boolean)")
    for table in sources:
        op.execute(
            f"DROP TRIGGER IF EXISTS {quote_ident(table + '_marks_view_change')} "
            f"ON {quote_ident(table)}"
        )
    op.execute("DROP FUNCTION IF EXISTS datamesh_mark_view_change()")
    for view in views:
        name = quote_ident(view.name)
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {name}")
        op.execute(f"ALTER VIEW {LIVE_SCHEMA}.{name} SET SCHEMA public")
    op.execute("DROP TABLE IF EXISTS view_refreshes")
    op.execute("DROP TABLE IF EXISTS view_changes")
    op.execute(f"DROP SCHEMA IF EXISTS {LIVE_SCHEMA}")


# the last failure of a refresh, written by the services (migration 0006 of each domain): a
# refresh that fails keeps failing until the data is corrected, and says so in the metadata
REFRESH_ERRORS_TABLE = "view_refresh_errors"


def refresh_errors_upgrade() -> None:
    """Create the table the services note a failed refresh in (one row)."""
    op.execute(
        f"CREATE TABLE {REFRESH_ERRORS_TABLE} (last_error text, failing_since timestamptz, "
        "last_failed_at timestamptz)"
    )
    op.execute(f"INSERT INTO {REFRESH_ERRORS_TABLE} VALUES (NULL, NULL, NULL)")


def refresh_errors_downgrade() -> None:
    """Drop it."""
    op.execute(f"DROP TABLE IF EXISTS {REFRESH_ERRORS_TABLE}")
