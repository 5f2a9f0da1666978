"""Writes: timestamps kept by the database (see shared.storage.write_schema).

Revision ID: 0003_sales_writes
Revises: 0002_sales_quality
Create Date: 2026-11-27

The triggers' functions and idempotency_keys are the framework's
(migrations/framework/versions/0002_writes.py, which this revision depends on; it
created them too until the framework had its own branch). The triggers are this domain's:
here customers.updated_at set on every change, customers.created_at kept.
"""

from collections.abc import Sequence

from shared.storage.write_schema import timestamp_triggers_downgrade, timestamp_triggers_upgrade

revision: str = "0003_sales_writes"
down_revision: str | Sequence[str] | None = "0002_sales_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0002_framework_writes"

UPDATED_AT: tuple[str, ...] = ("customers",)
CREATED_AT: tuple[str, ...] = ("customers",)


def upgrade() -> None:
    """Create the timestamp triggers."""
    timestamp_triggers_upgrade(updated_at=UPDATED_AT, created_at=CREATED_AT)


def downgrade() -> None:
    """Drop the timestamp triggers."""
    timestamp_triggers_downgrade(updated_at=UPDATED_AT, created_at=CREATED_AT)
