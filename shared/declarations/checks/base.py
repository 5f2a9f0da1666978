"""What every check kind has: its declaration's common fields, and the one `Measurement` it
is measured by. A quality run executes the measurement's query; the product's contract
publishes that same query with its threshold."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from shared.sql import quote_ident

if TYPE_CHECKING:
    from shared.declarations.products import Column, Product

# The clock a consumer's query reads: the time it runs (PostgreSQL and DuckDB alike).
CONSUMER_CLOCK = "now()"


class Severity(StrEnum):
    """How much a failed check matters; the quality score weighs checks by it."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class Dimension(StrEnum):
    """The ODCS v3 data-quality dimension a check measures."""

    ACCURACY = "accuracy"
    COMPLETENESS = "completeness"
    CONFORMITY = "conformity"
    CONSISTENCY = "consistency"
    COVERAGE = "coverage"
    TIMELINESS = "timeliness"
    UNIQUENESS = "uniqueness"


class DeclarationError(Exception):
    """A check that cannot be measured as declared (names an undeclared column, ...)."""


@dataclass(frozen=True)
class Measurement:
    """One check of one product as SQL.

    `query` returns one number, the measured value (NULL: nothing to measure, which fails);
    it is the statement the quality run executes and the query the contract publishes, so it
    holds no bound parameter and runs on PostgreSQL and on DuckDB (a consumer's tools load the
    product's published rows there) unless it reads other tables (`reads`), which only the
    domain's own database has. `threshold` is the ODCS comparison the value must meet.

    The rest is what the run shows beside the value: the failing rows under `failing` (a
    condition on the source, alias t, with the CTEs of `prelude` and the `joins` it needs) and
    a `detail` (a query of one text)."""

    query: str
    threshold: dict[str, Any]
    expected: str  # the threshold in words, as results show it
    unit: str  # what the measured value counts, in messages
    odcs_unit: str = "rows"
    places: int | None = None  # decimals the run keeps of the value
    failing: str | None = None
    prelude: tuple[str, ...] = ()
    joins: str = ""
    detail: str | None = None
    reads: tuple[str, ...] = ()

    def passes(self, measured: Decimal | None) -> bool:
        """Whether a measured value meets the threshold (no value never does)."""
        if measured is None:
            return False
        (comparator, bound), *_ = self.threshold.items()
        if comparator == "mustBeBetween":
            return Decimal(str(bound[0])) <= measured <= Decimal(str(bound[1]))
        limit = Decimal(str(bound))
        if comparator == "mustBeLessOrEqualTo":
            return measured <= limit
        if comparator == "mustBeGreaterOrEqualTo":
            return measured >= limit
        if comparator == "mustBe":
            return measured == limit
        raise ValueError(f"threshold has comparator '{comparator}'. Not one the run knows.")


@dataclass(frozen=True, kw_only=True)
class Check:
    """A declared check. `warn_only` checks report a warning instead of a failure.

    A kind of check is one subclass, in a module of its own under shared/declarations/checks/: its
    declaration, its name, its measurement, its description and what it means for writes."""

    severity: Severity = Severity.MAJOR
    description: str = ""
    warn_only: bool = False

    kind: ClassVar[str]  # as stored and shown: not_null, unique, ...
    dimension: ClassVar[Dimension]

    @property
    def name(self) -> str:
        """A name unique within the product, stable across runs."""
        raise NotImplementedError

    @property
    def checked_columns(self) -> tuple[str, ...]:
        """The product's columns the check reads (shown in sample failing rows unless PII)."""
        return ()

    @property
    def rule_column(self) -> str | None:
        """The column the contract's rule sits on (None: on the product's schema object)."""
        columns = self.checked_columns
        return columns[0] if len(columns) == 1 else None

    def measurement(self, product: Product, *, clock: str = CONSUMER_CLOCK) -> Measurement:
        """The check measured on the product's source; `clock` is the SQL of the time to
        measure ages against (by default the time the query runs)."""
        raise NotImplementedError

    def default_description(self, product: Product) -> str:
        """What the check promises, in words, when the declaration gives no description."""
        raise NotImplementedError

    def write_rule(self) -> dict[str, Any]:
        """What the check asks of a written value of its one column, as FieldRule fields
        (choices, minimum, maximum, pattern, references); nothing by default."""
        return {}


# --- SQL pieces the kinds share ----------------------------------------------------------------


def source_of(product: Product) -> str:
    """The product's table or view, quoted, aliased t."""
    return f"{quote_ident(product.source)} AS t"


def column_of(name: str) -> str:
    """A column of the source (alias t), quoted."""
    return f"t.{quote_ident(name)}"


def text_literal(value: str) -> str:
    """A string as a SQL literal (standard conforming: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"


def plain(value: Decimal | float | int) -> str:
    """A number as written in thresholds and SQL: 0 rather than 0.0, never an exponent."""
    return format(Decimal(str(value)).normalize(), "f")


def odcs_number(value: float) -> int | float:
    """A threshold as YAML and JSON show it best: 0 rather than 0.0."""
    return int(value) if float(value).is_integer() else value


def count_rows(product: Product, where: str, prelude: tuple[str, ...] = (), joins: str = "") -> str:
    """The query counting the source's rows under `where`."""
    with_ = f"WITH {', '.join(prelude)} " if prelude else ""
    return f"{with_}SELECT count(*) FROM {source_of(product)}{joins} WHERE {where}"


def declared_column(product: Product, name: str) -> Column:
    """The product's column of that name; a DeclarationError naming the known ones if none."""
    column = product.column(name)
    if column is None:
        raise DeclarationError(
            f"the check names column '{name}', which product '{product.name}' does not declare; "
            f"known: {', '.join(product.column_names)}"
        )
    return column


def spoken(age: dt.timedelta) -> str:
    """A duration in words, in the largest whole unit: '14 days', '36 hours'."""
    value, unit = duration(age)
    word = {"d": "day", "h": "hour", "min": "minute", "s": "second"}[unit]
    return f"{value} {word}{'' if value == 1 else 's'}"


def duration(age: dt.timedelta) -> tuple[int, str]:
    """A duration as a whole number of the largest unit that holds it exactly."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds and seconds % size == 0:
            return seconds // size, unit
    return seconds, "s"
