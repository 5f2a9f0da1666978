"""Writes: timestamps kept by the database, and idempotency_keys (see shared.write_schema).

Revision ID: 0003_sales_writes
Revises: 0002_sales_quality
Create Date: 2026-11-27

Every domain keeps its timestamps and idempotent responses the same way; the statements live
once, in shared.write_schema, and each domain's migration names its tables: here
customers.updated_at set on every change, customers.created_at kept.
"""

from collections.abc import Sequence

from shared.write_schema import write_tables_downgrade, write_tables_upgrade

revision: str = "0003_sales_writes"
down_revision: str | Sequence[str] | None = "0002_sales_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPDATED_AT: tuple[str, ...] = ("customers",)
CREATED_AT: tuple[str, ...] = ("customers",)


def upgrade() -> None:
    """Create the timestamp triggers and the idempotency_keys table."""
    write_tables_upgrade(updated_at=UPDATED_AT, created_at=CREATED_AT)


def downgrade() -> None:
    """Drop the idempotency_keys table and the timestamp triggers."""
    write_tables_downgrade(updated_at=UPDATED_AT, created_at=CREATED_AT)
