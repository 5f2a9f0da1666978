"""One refresh function for every domain: it refreshes each materialized view of `public`.

Revision ID: 0005_framework_refresh_function
Revises: 0004_framework_refresh_errors
Create Date: 2026-12-07

`datamesh_refresh_views(concurrent_refresh)` deletes the change rows it sees, refreshes every
materialized view of the schema `public` (each a domain's analytics view) from a later
snapshot, and records when in `view_refreshes`: a change committed after the delete keeps its
row and is picked up by the next refresh. It runs as the schema owner (SECURITY DEFINER): the
services' role may call it, and may not change the schema. Two refreshes never overlap (an
advisory lock; the second returns -1). Without marked changes a concurrent call returns 0 at
once.

Before, each domain's revision 0004 created the function naming its own views; this revision
replaces it where it exists (a domain's revisions no longer create it). No domain revision
depends on it, so a database migrated before the branch existed runs it (the branch's 0001 to
0004 count as applied there: the domain revisions that created their objects depend on them).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_framework_refresh_function"
down_revision: str | Sequence[str] | None = "0004_framework_refresh_errors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK = 7_301_202_402  # advisory lock: one refresh of a database at a time


def upgrade() -> None:
    """Create (or replace) datamesh_refresh_views; only the owner and those granted run it."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION datamesh_refresh_views(concurrent_refresh boolean DEFAULT true)
        RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        DECLARE
            seen bigint;
            as_of timestamptz;
            started timestamptz := clock_timestamp();
            view_name name;
        BEGIN
            IF NOT pg_try_advisory_xact_lock({LOCK}) THEN
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
            FOR view_name IN
                SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'
                ORDER BY matviewname
            LOOP
                IF concurrent_refresh THEN
                    EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY public.%I', view_name);
                ELSE
                    EXECUTE format('REFRESH MATERIALIZED VIEW public.%I', view_name);
                END IF;
            END LOOP;
            UPDATE view_refreshes SET data_as_of = as_of, refreshed_at = clock_timestamp(),
                duration_ms = (extract(epoch FROM clock_timestamp() - started) * 1000)::integer,
                changes_seen = seen;
            RETURN seen;
        END
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION datamesh_refresh_views(boolean) FROM PUBLIC")


def downgrade() -> None:
    """Drop it (a domain's views are then refreshed by nothing until it is created again)."""
    op.execute("DROP FUNCTION IF EXISTS datamesh_refresh_views(boolean)")
