"""The limits every column declares (shared.declarations.products: a text column's `max_length`, a date or
timestamp column's `earliest` and `latest`), held by the database as CHECK constraints too.

The write API refuses a value out of its column's limits (422 naming the column, the value and
the limit) before the database sees it; the constraints hold the same limits for every other
writer (a loader, a SQL session of the owner). They are derived from the declarations, named
`<table>_<column>_length_check` and `<table>_<column>_range_check`, and created by each
domain's migration 0005 (`declared_limits_upgrade`). A later change of a declared limit needs a
migration that replaces the constraint: tests/test_column_limits.py compares the database's
constraints with the declarations.

Rows already out of their limits when the migration runs do not stop it: each constraint is
added NOT VALID (every new or changed row must keep it) and validated only when no row breaks
it; otherwise it stays NOT VALID, the migration logs how many rows break it, and the owner
corrects them through the API (docs/writes.md, Deleting and correcting rows), then validates the constraint
(`ALTER TABLE ... VALIDATE CONSTRAINT ...`, or run `validate_declared_limits`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from alembic import op
from sqlalchemy import text

from shared.declarations.products import Column, ColumnType, Domain, Product
from shared.sql import quote_ident

_log = logging.getLogger("alembic.runtime.migration")


@dataclass(frozen=True)
class ColumnLimit:
    """The CHECK constraint of one column's declared limit."""

    table: str
    column: str
    name: str
    expression: str  # true (or NULL) for every value within the limit


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def column_limit(product: Product, column: Column) -> ColumnLimit | None:
    """The constraint of a stored column's declared limit, or None (numbers, booleans)."""
    col = quote_ident(column.name)
    if (limit := column.length_limit) is not None:
        return ColumnLimit(
            product.source,
            column.name,
            f"{product.source}_{column.name}_length_check",
            f"char_length({col}) <= {limit}",
        )
    if (span := column.date_range) is not None:
        first, last = span
        if column.type is ColumnType.DATE:
            expression = (
                f"{col} BETWEEN DATE {_literal(first.isoformat())} "
                f"AND DATE {_literal(last.isoformat())}"
            )
        else:
            end = last + dt.timedelta(days=1)
            expression = (
                f"{col} >= TIMESTAMPTZ {_literal(first.isoformat() + ' 00:00:00+00')} "
                f"AND {col} < TIMESTAMPTZ {_literal(end.isoformat() + ' 00:00:00+00')}"
            )
        return ColumnLimit(
            product.source, column.name, f"{product.source}_{column.name}_range_check", expression
        )
    return None


def declared_limits(domain: Domain) -> Iterator[ColumnLimit]:
    """The constraints of every stored column of the domain's tables, in declaration order."""
    for product in domain.products:
        if not product.is_table:
            continue
        for column in product.stored_columns:
            if (limit := column_limit(product, column)) is not None:
                yield limit


def declared_limits_upgrade(domain: Domain) -> None:
    """Add the constraint of every declared limit (inside a domain's Alembic migration):
    validated where every row keeps it, else left NOT VALID with a warning."""
    connection = op.get_bind()
    for limit in declared_limits(domain):
        table = quote_ident(limit.table)
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(limit.name)} "
            f"CHECK ({limit.expression}) NOT VALID"
        )
        breaking = connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE NOT ({limit.expression})")
        ).scalar_one()
        if breaking:
            _log.warning(
                "%s rows of %s break %s (%s): the constraint holds for new and changed rows "
                "and stays NOT VALID until they are corrected",
                breaking,
                limit.table,
                limit.name,
                limit.expression,
            )
        else:
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote_ident(limit.name)}")


def declared_limits_downgrade(domain: Domain) -> None:
    """Drop what declared_limits_upgrade added."""
    for limit in declared_limits(domain):
        op.execute(
            f"ALTER TABLE {quote_ident(limit.table)} "
            f"DROP CONSTRAINT IF EXISTS {quote_ident(limit.name)}"
        )
