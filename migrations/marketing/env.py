"""Alembic environment of this domain's database (see shared.migrations)."""

from shared.migrations import run_environment

run_environment()
