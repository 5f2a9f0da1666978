"""outliers: values far from the column's median, by the robust z-score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    column_of,
    count_rows,
    odcs_number,
    plain,
    source_of,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class Outliers(Check):
    """Values whose robust z-score (0.6745 x |x - median| / MAD) exceeds `threshold`, median
    and MAD by percentile_cont(0.5), a MAD of 0 finding none: 0; a warning by default, not a
    failure."""

    column: str
    threshold: float = 3.5
    warn_only: bool = True
    kind: ClassVar[str] = "outliers"
    dimension: ClassVar[Dimension] = Dimension.ACCURACY

    @property
    def name(self) -> str:
        return f"outliers:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        column = column_of(self.column)
        value = f"{column}::double precision"
        source = source_of(product)
        prelude = (
            f"centre AS (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}) AS median "
            f"FROM {source} WHERE {column} IS NOT NULL)",
            f"spread AS (SELECT percentile_cont(0.5) WITHIN GROUP "
            f"(ORDER BY abs({value} - centre.median)) AS mad "
            f"FROM {source}, centre WHERE {column} IS NOT NULL)",
        )
        failing = (
            f"spread.mad > 0 AND 0.6745 * abs({value} - centre.median) / spread.mad > "
            f"{plain(self.threshold)}"
        )
        detail = (
            f"WITH {', '.join(prelude)} SELECT format('median %s, MAD %s', "
            "round(centre.median::numeric, 2), round(spread.mad::numeric, 2)) FROM centre, spread"
        )
        joins = ", centre, spread"
        return Measurement(
            query=count_rows(product, failing, prelude, joins),
            threshold={"mustBe": 0},
            expected=f"robust z-score <= {plain(self.threshold)}",
            unit="outliers",
            failing=failing,
            prelude=prelude,
            joins=joins,
            detail=detail,
        )

    def default_description(self, product: Product) -> str:
        return (
            f"No {self.column} has a robust z-score (0.6745 x |x - median| / MAD) above "
            f"{odcs_number(self.threshold)}."
        )
