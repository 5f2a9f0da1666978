"""The schema behind fast analytics views (statements written once here, called by a domain's
migration with its views): each analytics view is materialized, and refreshed when its sources
change.

- The view as first defined (computed on each read) moves to the schema `live`; in `public` a
  materialized view of the same name holds its rows, with a unique index on its key (which
  `REFRESH ... CONCURRENTLY` needs: readers are never blocked) and the indexes its sorts need.
- A statement-level trigger on every source table calls `datamesh_mark_view_change()`, which
  appends a row to `view_changes` (append-only: concurrent writers never wait on each other
  for it).

The schema `live`, `view_changes`, `view_refreshes`, `view_refresh_errors` and the functions
are the framework's, created once for every domain database by its migration branch
(migrations/framework/versions/): a domain's revision that materializes views depends on
`0003_framework_views`. `datamesh_refresh_views(concurrent_refresh)` refreshes every
materialized view of `public` (migrations/framework/versions/0005_refresh_function.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alembic import op

from shared.sql import quote_ident

LIVE_SCHEMA = "live"
REFRESH_FUNCTION = "datamesh_refresh_views"


@dataclass(frozen=True)
class MaterializedView:
    """An analytics view to materialize: its name, its key and the columns it is sorted by."""

    name: str
    key: str
    sort_columns: tuple[str, ...] = ()


def materialize_upgrade(views: Sequence[MaterializedView], sources: Sequence[str]) -> None:
    """Materialize the views and mark changes of the source tables (inside a domain's Alembic
    migration)."""
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
    for table in sources:
        op.execute(
            f"CREATE TRIGGER {quote_ident(table + '_marks_view_change')} "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quote_ident(table)} "
            "FOR EACH STATEMENT EXECUTE FUNCTION datamesh_mark_view_change()"
        )


def materialize_downgrade(views: Sequence[MaterializedView], sources: Sequence[str]) -> None:
    """Undo materialize_upgrade: the views are computed on each read again."""
    for table in sources:
        op.execute(
            f"DROP TRIGGER IF EXISTS {quote_ident(table + '_marks_view_change')} "
            f"ON {quote_ident(table)}"
        )
    for view in views:
        name = quote_ident(view.name)
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {name}")
        op.execute(f"ALTER VIEW {LIVE_SCHEMA}.{name} SET SCHEMA public")


# the last failure of a refresh, written by the services: a refresh that fails keeps failing
# until the data is corrected, and says so in the metadata
REFRESH_ERRORS_TABLE = "view_refresh_errors"
