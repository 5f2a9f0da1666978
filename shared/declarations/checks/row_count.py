"""row_count: the product's number of rows within bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shared.declarations.checks.base import CONSUMER_CLOCK, Check, Dimension, Measurement, source_of

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class RowCount(Check):
    """Rows: within the declared bounds (inclusive; either may be open)."""

    minimum: int | None = None
    maximum: int | None = None
    kind: ClassVar[str] = "row_count"
    dimension: ClassVar[Dimension] = Dimension.COVERAGE

    @property
    def name(self) -> str:
        return "row_count"

    def _threshold(self) -> tuple[str, dict[str, Any]]:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            if low == high:
                return f"exactly {low}", {"mustBe": low}
            return f"between {low} and {high}", {"mustBeBetween": [low, high]}
        if low is not None:
            return f"at least {low}", {"mustBeGreaterOrEqualTo": low}
        if high is not None:
            return f"at most {high}", {"mustBeLessOrEqualTo": high}
        return "any number of", {"mustBeGreaterOrEqualTo": 0}

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        bounds = [
            *([f">= {self.minimum}"] if self.minimum is not None else []),
            *([f"<= {self.maximum}"] if self.maximum is not None else []),
        ]
        return Measurement(
            query=f"SELECT count(*) FROM {source_of(product)}",
            threshold=self._threshold()[1],
            expected="rows " + " and ".join(bounds),
            unit="rows",
        )

    def default_description(self, product: Product) -> str:
        return f"The product has {self._threshold()[0]} rows."
