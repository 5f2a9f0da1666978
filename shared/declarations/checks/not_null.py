"""not_null: a column is never NULL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    Severity,
    column_of,
    count_rows,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class NotNull(Check):
    """Rows where the column is NULL: 0."""

    column: str
    kind: ClassVar[str] = "not_null"
    dimension: ClassVar[Dimension] = Dimension.COMPLETENESS

    @property
    def name(self) -> str:
        return f"not_null:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        failing = f"{column_of(self.column)} IS NULL"
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected="0 null values",
            unit="null values",
            failing=failing,
        )

    def default_description(self, product: Product) -> str:
        return f"{self.column} is never null."


def not_null(*columns: str, severity: Severity = Severity.MAJOR) -> tuple[NotNull, ...]:
    """A NotNull check for each of the columns."""
    return tuple(NotNull(column=c, severity=severity) for c in columns)
