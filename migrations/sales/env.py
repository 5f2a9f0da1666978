"""Alembic environment of this domain's database (see shared.storage.migrations)."""

from shared.storage.migrations import run_environment

run_environment()
