"""pattern: a column's values match a regular expression (e.g. an email's shape)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    column_of,
    count_rows,
    text_literal,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


def searched(regex: str) -> str:
    """A regular expression found anywhere in a value (PostgreSQL's `~` searches), written so
    that a whole-value match (DuckDB's `~`) finds the same values."""
    return f"(?s)^.*(?:{regex}).*$"


@dataclass(frozen=True, kw_only=True)
class Pattern(Check):
    """Non-null values not matching the POSIX regular expression (PostgreSQL `~`): 0."""

    column: str
    regex: str
    label: str = "pattern"
    kind: ClassVar[str] = "pattern"
    dimension: ClassVar[Dimension] = Dimension.CONFORMITY

    @property
    def name(self) -> str:
        return f"{self.label}:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        column = column_of(self.column)
        failing = (
            f"{column} IS NOT NULL AND NOT ({column}::text ~ {text_literal(searched(self.regex))})"
        )
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected=f"values matching {self.regex}",
            unit="values not matching",
            failing=failing,
        )

    def default_description(self, product: Product) -> str:
        return f"{self.column} matches the {self.label} pattern {self.regex}."

    def write_rule(self) -> dict[str, Any]:
        return {"pattern": self.regex}
