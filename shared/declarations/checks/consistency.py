"""consistency: a rule between columns (or tables), as the SQL condition that breaks it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    count_rows,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class Consistency(Check):
    """A cross-column rule: `violations` is a SQL boolean expression over the product's source
    (alias `t`) that is TRUE for every row breaking the rule: such rows, 0. It may use
    subqueries; the other tables they read are named in `reads` (then only the domain's
    database runs the rule)."""

    rule: str
    violations: str
    columns: tuple[str, ...] = ()  # the columns the rule reads, shown in sample failing rows
    reads: tuple[str, ...] = ()
    kind: ClassVar[str] = "consistency"
    dimension: ClassVar[Dimension] = Dimension.CONSISTENCY

    @property
    def name(self) -> str:
        return f"consistency:{self.rule}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return self.columns

    @property
    def rule_column(self) -> str | None:
        return None  # a rule of the row, not of one column

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        failing = f"({self.violations}) IS TRUE"
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected=f"0 rows breaking {self.rule}",
            unit="rows breaking the rule",
            failing=failing,
            reads=self.reads,
        )

    def default_description(self, product: Product) -> str:
        return f"No row breaks the rule {self.rule}."
