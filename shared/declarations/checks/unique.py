"""unique: no two rows share a value of a column, or of several together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    Dimension,
    Measurement,
    column_of,
    source_of,
)

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class Unique(Check):
    """Duplicated values: groups of rows sharing the same (compound) value, rows with a NULL
    in it not compared: 0."""

    columns: tuple[str, ...]
    kind: ClassVar[str] = "unique"
    dimension: ClassVar[Dimension] = Dimension.UNIQUENESS

    @property
    def name(self) -> str:
        return f"unique:{','.join(self.columns)}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return self.columns

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        listed = ", ".join(column_of(c) for c in self.columns)
        present = " AND ".join(f"{column_of(c)} IS NOT NULL" for c in self.columns)
        groups = (
            f"SELECT {listed} FROM {source_of(product)} WHERE {present} "
            f"GROUP BY {listed} HAVING count(*) > 1"
        )
        return Measurement(
            query=f"SELECT count(*) FROM ({groups}) AS duplicated",
            threshold={"mustBe": 0},
            expected="0 duplicated values",
            unit="duplicated values (groups of rows sharing them)",
            failing=f"({listed}) IN (SELECT * FROM duplicated)",
            prelude=(f"duplicated AS ({groups})",),
        )

    def default_description(self, product: Product) -> str:
        if len(self.columns) == 1:
            return f"No two rows share a value of {self.columns[0]}."
        return f"No two rows share a combination of ({', '.join(self.columns)})."
