"""Quality history: quality_runs and quality_results (see shared.governance.quality).

Revision ID: 0001_framework_quality
Revises:
Create Date: 2024-10-18

The first revision of the framework's branch, applied to every domain database. Until the
branch existed, each domain's revision 0002 created these tables; that revision now depends on
this one, so a database already past it counts this one as applied and keeps its rows.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001_framework_quality"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("framework",)
depends_on: str | Sequence[str] | None = None

STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE quality_runs (
        run_id      serial PRIMARY KEY,
        started_at  timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        trigger     text NOT NULL CHECK (trigger IN ('manual', 'schedule', 'cli')),
        score       numeric(4,1) CHECK (score BETWEEN 0 AND 100),
        checks      integer NOT NULL CHECK (checks >= 0),
        passed      integer NOT NULL CHECK (passed >= 0),
        failed      integer NOT NULL CHECK (failed >= 0),
        warned      integer NOT NULL CHECK (warned >= 0),
        errored     integer NOT NULL CHECK (errored >= 0),
        CONSTRAINT quality_runs_counts_check CHECK (checks = passed + failed + warned + errored),
        CONSTRAINT quality_runs_finished_check CHECK (finished_at >= started_at)
    )
    """,
    """
    CREATE TABLE quality_results (
        result_id      bigserial PRIMARY KEY,
        run_id         integer NOT NULL REFERENCES quality_runs (run_id) ON DELETE CASCADE,
        product        text NOT NULL,
        check_name     text NOT NULL,
        kind           text NOT NULL,
        dimension      text NOT NULL,
        severity       text NOT NULL CHECK (severity IN ('critical', 'major', 'minor')),
        outcome        text NOT NULL CHECK (outcome IN ('pass', 'fail', 'warn', 'error')),
        measured_value numeric,
        threshold      text NOT NULL,
        message        text NOT NULL,
        sample_rows    jsonb NOT NULL DEFAULT '[]'
                       CHECK (jsonb_typeof(sample_rows) = 'array'
                              AND jsonb_array_length(sample_rows) <= 5)
    )
    """,
    "CREATE INDEX quality_results_run_id_idx ON quality_results (run_id)",
    "CREATE INDEX quality_results_product_run_id_idx ON quality_results (product, run_id)",
)


def upgrade() -> None:
    """Create the quality run and result tables."""
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    op.execute("DROP TABLE IF EXISTS quality_results")
    op.execute("DROP TABLE IF EXISTS quality_runs")
