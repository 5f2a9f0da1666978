"""A failed refresh of the views: now the framework's
(migrations/framework/versions/0004_view_refresh_errors.py).

Revision ID: 0006_sales_refresh_errors
Revises: 0005_sales_column_limits
Create Date: 2026-12-07

This revision created view_refresh_errors until the framework's own branch did (one revision
for every domain database). It does nothing now, and depends on that revision: a database
already past it holds the table, so Alembic counts the framework's revision as applied there
and the table keeps its row; a new database gets it from the framework.
"""

from collections.abc import Sequence

revision: str = "0006_sales_refresh_errors"
down_revision: str | Sequence[str] | None = "0005_sales_column_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0004_framework_refresh_errors"


def upgrade() -> None:
    """Nothing: the framework's branch creates view_refresh_errors."""


def downgrade() -> None:
    """Nothing."""
