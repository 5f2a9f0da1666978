"""Quality history: quality_runs and quality_results (see shared.quality).

Revision ID: 0002_marketing_quality
Revises: 0001_marketing
Create Date: 2024-10-18

Every domain keeps its quality runs in the same two tables; the statements live once, in
shared.quality, and each domain's migration calls them.
"""

from collections.abc import Sequence

from shared.quality import quality_tables_downgrade, quality_tables_upgrade

revision: str = "0002_marketing_quality"
down_revision: str | Sequence[str] | None = "0001_marketing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the quality run and result tables."""
    quality_tables_upgrade()


def downgrade() -> None:
    """Drop the quality run and result tables."""
    quality_tables_downgrade()
