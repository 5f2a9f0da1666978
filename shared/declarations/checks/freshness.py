"""freshness: the newest value of a date or timestamp column is young enough."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    DeclarationError,
    Dimension,
    Measurement,
    column_of,
    declared_column,
    odcs_number,
    plain,
    source_of,
    spoken,
)
from shared.declarations.products import ColumnType

if TYPE_CHECKING:
    from shared.declarations.products import Product


@dataclass(frozen=True, kw_only=True)
class Freshness(Check):
    """The newest value of a timestamp or date column is younger than `max_age`: its age in
    hours against the clock (a date counts from its midnight UTC); no rows, no value: a fail."""

    column: str
    max_age: dt.timedelta
    kind: ClassVar[str] = "freshness"
    dimension: ClassVar[Dimension] = Dimension.TIMELINESS

    @property
    def name(self) -> str:
        return f"freshness:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        declared = declared_column(product, self.column)
        column = column_of(self.column)
        if declared.type is ColumnType.DATE:  # a day counts from its midnight, UTC
            newest = f"max({column})::timestamp AT TIME ZONE 'UTC'"
        elif declared.type is ColumnType.TIMESTAMP:  # the cast reads a JSON text too
            newest = f"max({column})::timestamptz"
        else:
            raise DeclarationError(
                f"freshness of '{self.column}', a {declared.type} column: only date and "
                "timestamp columns have an age"
            )
        hours = self.max_age.total_seconds() / 3600
        return Measurement(
            query=f"SELECT extract(epoch FROM {clock} - ({newest})) / 3600 "
            f"FROM {source_of(product)}",
            threshold={"mustBeLessOrEqualTo": odcs_number(hours)},
            expected=f"age <= {plain(hours)} h",
            unit="hours old",
            odcs_unit="hours",
            places=2,
            detail=f"SELECT 'newest ' || ({newest}) FROM {source_of(product)}",
        )

    def default_description(self, product: Product) -> str:
        return f"The newest {self.column} is at most {spoken(self.max_age)} old."
