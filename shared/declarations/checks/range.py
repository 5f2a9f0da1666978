"""range: a column's values between a minimum and a maximum."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    column_of,
    count_rows,
    odcs_number,
    plain,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class Range(Check):
    """Values between `minimum` and `maximum` (inclusive; either may be open): non-null
    values outside them, 0."""

    column: str
    minimum: float | None = None
    maximum: float | None = None
    kind: ClassVar[str] = "range"
    dimension: ClassVar[Dimension] = Dimension.CONFORMITY

    @property
    def name(self) -> str:
        return f"range:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        column = column_of(self.column)
        low, high = self.minimum, self.maximum
        outside = [
            *([f"{column} < {plain(low)}"] if low is not None else []),
            *([f"{column} > {plain(high)}"] if high is not None else []),
        ]
        bounds = [
            *([f">= {plain(low)}"] if low is not None else []),
            *([f"<= {plain(high)}"] if high is not None else []),
        ]
        failing = f"({' OR '.join(outside)})" if outside else "FALSE"
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected="values " + " and ".join(bounds),
            unit="values out of range",
            failing=failing,
        )

    def default_description(self, product: Product) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            words = f"between {odcs_number(low)} and {odcs_number(high)}"
        elif low is not None:
            words = f"at least {odcs_number(low)}"
        elif high is not None:
            words = f"at most {odcs_number(high)}"
        else:
            words = "any value"
        return f"{self.column} is {words}."

    def write_rule(self) -> dict[str, Any]:
        bounds = {"minimum": self.minimum, "maximum": self.maximum}
        return {k: Decimal(str(v)) for k, v in bounds.items() if v is not None}
