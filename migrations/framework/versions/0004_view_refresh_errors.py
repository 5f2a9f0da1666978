"""A failed refresh of the analytics views, noted for the metadata (see shared.storage.views).

Revision ID: 0004_framework_refresh_errors
Revises: 0003_framework_views
Create Date: 2026-12-07

The service notes the last failure of a refresh (the database's message) and since when
refreshes fail in view_refresh_errors (one row); the metadata's freshness of each view shows it.
Until the framework's branch existed, each domain's revision 0006 created it; that revision now
depends on this one.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_framework_refresh_errors"
down_revision: str | Sequence[str] | None = "0003_framework_views"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create view_refresh_errors."""
    op.execute(
        "CREATE TABLE view_refresh_errors (last_error text, failing_since timestamptz, "
        "last_failed_at timestamptz)"
    )
    op.execute("INSERT INTO view_refresh_errors VALUES (NULL, NULL, NULL)")


def downgrade() -> None:
    """Drop view_refresh_errors."""
    op.execute("DROP TABLE IF EXISTS view_refresh_errors")
