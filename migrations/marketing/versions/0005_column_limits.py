"""Declared column limits: text lengths and date ranges as CHECK constraints.

Revision ID: 0005_marketing_column_limits
Revises: 0004_marketing_matviews
Create Date: 2026-12-07

Every stored text column holds at most its declared number of characters, every date and
timestamp column only days within its declared range (shared.storage.column_schema derives the
constraints from the Marketing declarations). Rows already out of a limit do not stop the migration:
that constraint stays NOT VALID (new and changed rows keep it) and a warning counts the rows.
"""

from collections.abc import Sequence

from services import domain
from shared.storage.column_schema import declared_limits_downgrade, declared_limits_upgrade

revision: str = "0005_marketing_column_limits"
down_revision: str | Sequence[str] | None = "0004_marketing_matviews"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add a CHECK constraint for each declared limit."""
    declared_limits_upgrade(domain("marketing"))


def downgrade() -> None:
    """Drop them."""
    declared_limits_downgrade(domain("marketing"))
