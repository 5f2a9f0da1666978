"""Fast analytics views: each view materialized, refreshed when its sources change.

Revision ID: 0004_marketing_matviews
Revises: 0003_marketing_writes
Create Date: 2026-11-26

The mechanism is every domain's (shared.storage.view_schema; the schema live, view_changes,
view_refreshes and the functions are the framework's, in
migrations/framework/versions/0003_views.py and 0005_refresh_function.py: this revision depends
on the first and created them too until the framework had its own branch); here the Marketing
views, their keys and the columns sorted on a view that grows with the data
(campaign_performance: one row per campaign). lead_funnel has one row per lead status: sorting
it needs no index.
"""

from collections.abc import Sequence

from shared.storage.view_schema import MaterializedView, materialize_downgrade, materialize_upgrade

revision: str = "0004_marketing_matviews"
down_revision: str | Sequence[str] | None = "0003_marketing_writes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0003_framework_views"

VIEWS = (
    MaterializedView(
        "campaign_performance",
        key="campaign_id",
        sort_columns=(
            "campaign_name",
            "channel",
            "budget",
            "spent",
            "remaining_budget",
            "budget_utilization_pct",
            "total_leads",
            "converted_leads",
            "conversion_rate",
        ),
    ),
    MaterializedView("lead_funnel", key="status"),
)
SOURCES = ("campaigns", "leads")


def upgrade() -> None:
    """Materialize the views; mark every change of their sources."""
    materialize_upgrade(VIEWS, SOURCES)


def downgrade() -> None:
    """The views are computed on each read again."""
    materialize_downgrade(VIEWS, SOURCES)
