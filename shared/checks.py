"""Quality-check declarations: what a product promises about its data, declared next to its
columns. shared/quality.py runs them; shared/contracts.py writes them into the ODCS contract."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


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


@dataclass(frozen=True, kw_only=True)
class Check:
    """A declared check. `warn_only` checks report a warning instead of a failure."""

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


@dataclass(frozen=True, kw_only=True)
class NotNull(Check):
    column: str
    kind: ClassVar[str] = "not_null"
    dimension: ClassVar[Dimension] = Dimension.COMPLETENESS

    @property
    def name(self) -> str:
        return f"not_null:{self.column}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return (self.column,)


@dataclass(frozen=True, kw_only=True)
class Unique(Check):
    columns: tuple[str, ...]
    kind: ClassVar[str] = "unique"
    dimension: ClassVar[Dimension] = Dimension.UNIQUENESS

    @property
    def name(self) -> str:
        return f"unique:{','.join(self.columns)}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return self.columns


@dataclass(frozen=True, kw_only=True)
class AcceptedValues(Check):
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


@dataclass(frozen=True, kw_only=True)
class Range(Check):
    """Values between `minimum` and `maximum` (inclusive; either may be open)."""

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


@dataclass(frozen=True, kw_only=True)
class Pattern(Check):
    """Values matching a POSIX regular expression (e.g. an email shape)."""

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


@dataclass(frozen=True, kw_only=True)
class References(Check):
    """Every non-null value of `columns` exists in `target_table`.`target_columns`."""

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


@dataclass(frozen=True, kw_only=True)
class Freshness(Check):
    """The newest value of a timestamp or date column is younger than `max_age`."""

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


@dataclass(frozen=True, kw_only=True)
class RowCount(Check):
    minimum: int | None = None
    maximum: int | None = None
    kind: ClassVar[str] = "row_count"
    dimension: ClassVar[Dimension] = Dimension.COVERAGE

    @property
    def name(self) -> str:
        return "row_count"


@dataclass(frozen=True, kw_only=True)
class Consistency(Check):
    """A cross-column rule: `violations` is a SQL boolean expression over the product's source
    (alias `t`) that is TRUE for every row breaking the rule; it may use subqueries."""

    rule: str
    violations: str
    columns: tuple[str, ...] = ()  # the columns the rule reads, shown in sample failing rows
    kind: ClassVar[str] = "consistency"
    dimension: ClassVar[Dimension] = Dimension.CONSISTENCY

    @property
    def name(self) -> str:
        return f"consistency:{self.rule}"

    @property
    def checked_columns(self) -> tuple[str, ...]:
        return self.columns


@dataclass(frozen=True, kw_only=True)
class Outliers(Check):
    """Values whose robust z-score (0.6745 x |x - median| / MAD) exceeds `threshold`; a warning
    by default, not a failure."""

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


def not_null(*columns: str, severity: Severity = Severity.MAJOR) -> tuple[NotNull, ...]:
    """A NotNull check for each of the columns."""
    return tuple(NotNull(column=c, severity=severity) for c in columns)


# an email address's shape: something, one @, a domain with a dot (the schemas' CHECK too)
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
