"""A failed refresh of the analytics views, noted for the metadata (see shared.views).

Revision ID: 0006_sales_refresh_errors
Revises: 0005_sales_column_limits
Create Date: 2026-12-07

The service notes the last failure of a refresh (the database's message) and since when
refreshes fail in view_refresh_errors; the metadata's freshness of each view shows it.
"""

from collections.abc import Sequence

from shared.view_schema import refresh_errors_downgrade, refresh_errors_upgrade

revision: str = "0006_sales_refresh_errors"
down_revision: str | Sequence[str] | None = "0005_sales_column_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create view_refresh_errors."""
    refresh_errors_upgrade()


def downgrade() -> None:
    """Drop view_refresh_errors."""
    refresh_errors_downgrade()
