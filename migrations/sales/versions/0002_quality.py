"""Quality history: now the framework's (migrations/framework/versions/0001_quality.py).

Revision ID: 0002_sales_quality
Revises: 0001_sales
Create Date: 2024-10-18

This revision created quality_runs and quality_results until the framework's own branch did
(one revision for every domain database). It does nothing now, and depends on that revision:
a database already past it holds the tables, so Alembic counts the framework's revision as
applied there and the tables keep their rows; a new database gets them from the framework.
"""

from collections.abc import Sequence

revision: str = "0002_sales_quality"
down_revision: str | Sequence[str] | None = "0001_sales"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0001_framework_quality"


def upgrade() -> None:
    """Nothing: the framework's branch creates the tables."""


def downgrade() -> None:
    """Nothing."""
