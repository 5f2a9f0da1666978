"""Writes: the timestamp functions and idempotency_keys (see shared.storage.write_schema,
shared.writing.idempotency).

Revision ID: 0002_framework_writes
Revises: 0001_framework_quality
Create Date: 2026-11-27

- `datamesh_touch_updated_at()` sets `updated_at` to the transaction's time; a domain's
  trigger calls it whenever a row really changes.
- `datamesh_keep_created_at()` keeps `created_at` as it was on every UPDATE.
- `idempotency_keys` keeps the responses of idempotent writes.

Until the framework's branch existed, each domain's revision 0003 created these with its
triggers; that revision now depends on this one (its triggers call the functions).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_framework_writes"
down_revision: str | Sequence[str] | None = "0001_framework_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS: tuple[str, ...] = (
    """
    CREATE FUNCTION datamesh_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE FUNCTION datamesh_keep_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.created_at := OLD.created_at;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TABLE idempotency_keys (
        subject          text NOT NULL,
        key              text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
        method           text NOT NULL,
        path             text NOT NULL,
        body_hash        text NOT NULL,
        status           integer NOT NULL CHECK (status BETWEEN 200 AND 299),
        response_headers jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(response_headers) = 'object'),
        response_body    bytea NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT idempotency_keys_pkey PRIMARY KEY (subject, key)
    )
    """,
    "CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at)",
)


def upgrade() -> None:
    """Create the timestamp functions and the idempotency_keys table."""
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    op.execute("DROP TABLE IF EXISTS idempotency_keys")
    op.execute("DROP FUNCTION IF EXISTS datamesh_touch_updated_at()")
    op.execute("DROP FUNCTION IF EXISTS datamesh_keep_created_at()")
