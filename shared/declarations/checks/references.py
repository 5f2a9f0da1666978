"""references: every non-null value of columns exists in another table of the domain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    DeclarationError,
    Dimension,
    Measurement,
    column_of,
    count_rows,
)
from shared.sql import quote_ident

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class References(Check):
    """Every non-null value of `columns` exists in `target_table`.`target_columns`: orphans,
    0. It reads the target table: only the domain's database runs it."""

    columns: tuple[str, ...]
    target_table: str
    target_columns: tuple[str, ...]
    kind: ClassVar[str] = "references"
    dimension: ClassVar[Dimension] = Dimension.CONSISTENCY

    @property
    def name(self) -> str:
        return f"references:{','.join(self.columns)}->{self.target_table}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return self.columns

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        if len(self.columns) != len(self.target_columns) or not self.columns:
            raise DeclarationError(
                f"references {self.columns} -> {self.target_columns}: the column lists differ "
                "in length"
            )
        present = " AND ".join(f"{column_of(c)} IS NOT NULL" for c in self.columns)
        match = " AND ".join(
            f"r.{quote_ident(target)} = {column_of(column)}"
            for column, target in zip(self.columns, self.target_columns, strict=True)
        )
        failing = (
            f"{present} AND NOT EXISTS "
            f"(SELECT 1 FROM {quote_ident(self.target_table)} AS r WHERE {match})"
        )
        return Measurement(
            query=count_rows(product, failing),
            threshold={"mustBe": 0},
            expected=f"0 orphans ({', '.join(self.columns)} in "
            f"{self.target_table}({', '.join(self.target_columns)}))",
            unit="orphan rows",
            failing=failing,
            reads=(self.target_table,),
        )

    def default_description(self, product: Product) -> str:
        targets = ", ".join(f"{self.target_table}.{c}" for c in self.target_columns)
        return f"Every non-null {', '.join(self.columns)} exists as {targets}."

    def write_rule(self) -> dict[str, Any]:
        return {"references": (self.target_table, self.target_columns[0])}
