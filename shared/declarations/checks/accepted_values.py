"""accepted_values: a column holds only the declared values."""

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


@dataclass(frozen=True, kw_only=True)
class AcceptedValues(Check):
    """Non-null values outside the declared list: 0."""

    column: str
    values: tuple[str, ...]
    kind: ClassVar[str] = "accepted_values"
    dimension: ClassVar[Dimension] = Dimension.CONFORMITY

    @property
    def name(self) -> str:
        return f"accepted_values:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        column = column_of(self.column)
        listed = ", ".join(text_literal(v) for v in self.values)
        failing = f"{column} IS NOT NULL AND NOT ({column}::text IN ({listed}))"
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected="values in " + ", ".join(self.values),
            unit="values not accepted",
            failing=failing,
        )

    def default_description(self, product: Product) -> str:
        return f"{self.column} is one of: {', '.join(self.values)}."

    def write_rule(self) -> dict[str, Any]:
        return {"choices": tuple(self.values)}
