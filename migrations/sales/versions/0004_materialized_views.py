"""Fast analytics views: each view materialized, refreshed when its sources change.

Revision ID: 0004_sales_matviews
Revises: 0003_sales_writes
Create Date: 2026-11-26

The mechanism is every domain's (shared.storage.view_schema; the schema live, view_changes,
view_refreshes and the functions are the framework's, in
migrations/framework/versions/0003_views.py and 0005_refresh_function.py: this revision depends
on the first and created them too until the framework had its own branch); here the Sales
views, their keys and the columns sorted on a view that grows with the data
(customer_lifetime_value: one row per customer). sales_summary (one row per month) and
product_performance (one per catalogue product) stay small at any scale: sorting them needs no
index.
"""

from collections.abc import Sequence

from shared.storage.view_schema import MaterializedView, materialize_downgrade, materialize_upgrade

revision: str = "0004_sales_matviews"
down_revision: str | Sequence[str] | None = "0003_sales_writes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0003_framework_views"

VIEWS = (
    MaterializedView("sales_summary", key="month"),
    MaterializedView(
        "customer_lifetime_value",
        key="customer_id",
        sort_columns=(
            "customer_name",
            "country",
            "industry",
            "total_orders",
            "lifetime_value",
            "avg_order_value",
            "last_order_date",
        ),
    ),
    MaterializedView("product_performance", key="product_id"),
)
SOURCES = ("customers", "products", "orders", "order_items")


def upgrade() -> None:
    """Materialize the views; mark every change of their sources."""
    materialize_upgrade(VIEWS, SOURCES)


def downgrade() -> None:
    """The views are computed on each read again."""
    materialize_downgrade(VIEWS, SOURCES)
