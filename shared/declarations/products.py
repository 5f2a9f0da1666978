"""Declaration types: a domain declares its data products; the framework serves them."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from shared.declarations.writes import TableWrites, check_writes

if TYPE_CHECKING:
    from shared.declarations.checks import Check


class ColumnType(StrEnum):
    """Logical column types; each maps to one PostgreSQL, Arrow and JSON type."""

    TEXT = "text"
    INTEGER = "integer"
    BIGINT = "bigint"
    MONEY = "money"  # numeric(14,2): a JSON number with 2 decimals
    DECIMAL = "decimal"  # numeric(precision, scale) as declared on the column
    DATE = "date"
    TIMESTAMP = "timestamp"  # timestamptz
    BOOLEAN = "boolean"


# Every stored text column holds at most this many characters unless it declares another
# `max_length`: short enough that a value fits any btree index (2,704 bytes a row, 4 bytes a
# character at most), such as the views' sort indexes.
DEFAULT_TEXT_LENGTH = 200
# Every date and timestamp column holds values within these days unless it declares others:
# business dates, never PostgreSQL's infinity (which 0001-01-01 and 9999-12-31 become through
# the driver), always a year of four digits. Whole years, so the range can be stated as a
# pattern in OpenAPI.
DEFAULT_EARLIEST = dt.date(1900, 1, 1)
DEFAULT_LATEST = dt.date(2199, 12, 31)


DATED = frozenset({ColumnType.DATE, ColumnType.TIMESTAMP})


class Classification(StrEnum):
    """How sensitive a column is; PII is masked for callers without the domain's pii scope."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PII = "pii"


@dataclass(frozen=True)
class Pseudonym:
    """How a computed column is derived: the HMAC-SHA256 (hex) of a stored text column,
    trimmed of spaces and lower-cased, keyed by the mesh-wide pseudonymisation secret.

    Equal values (ignoring case and surrounding spaces) get the same key in every domain, so
    products can be joined on it; without the secret a key can be neither reversed nor
    recomputed from a guessed value. Computed inside PostgreSQL at read time: the secret
    never enters SQL text and the value never leaves the database in clear."""

    source: str


@dataclass(frozen=True)
class Column:
    """One column of a data product, as it appears in SQL and in every output format.

    A column is stored in the product's table or view unless it is `computed`: then the
    framework computes it from stored columns when it is selected or filtered on."""

    name: str
    type: ColumnType
    description: str
    classification: Classification = Classification.INTERNAL
    nullable: bool = False
    filterable: bool = True
    sortable: bool = True
    precision: int = 14
    scale: int = 2
    unique: bool = False
    computed: Pseudonym | None = None
    max_length: int | None = None  # text: characters at most (default DEFAULT_TEXT_LENGTH)
    earliest: dt.date | None = None  # date, timestamp: the first day (default DEFAULT_EARLIEST)
    latest: dt.date | None = None  # date, timestamp: the last day (default DEFAULT_LATEST)

    def __post_init__(self) -> None:
        if self.max_length is not None and (
            self.type is not ColumnType.TEXT or self.max_length < 1
        ):
            raise ValueError(f"Column '{self.name}': max_length is for text columns, at least 1")
        if (self.earliest or self.latest) and self.type not in DATED:
            raise ValueError(f"Column '{self.name}': earliest/latest are for dates and timestamps")
        if self.type in DATED:
            first, last = self.date_range or (DEFAULT_EARLIEST, DEFAULT_LATEST)
            if (first.month, first.day) != (1, 1) or (last.month, last.day) != (12, 31):
                raise ValueError(
                    f"Column '{self.name}': a date range spans whole years (from January 1 to "
                    "December 31), so that OpenAPI can state it as a pattern"
                )
            if not dt.date(1000, 1, 1) <= first <= last <= dt.date(9998, 12, 31):
                raise ValueError(f"Column '{self.name}': the date range is empty or too wide")

    @property
    def is_pii(self) -> bool:
        """Whether the column is masked for callers without the domain's pii scope."""
        return self.classification is Classification.PII

    @property
    def length_limit(self) -> int | None:
        """The most characters a text column holds (None: not a text column)."""
        if self.type is not ColumnType.TEXT:
            return None
        return self.max_length or DEFAULT_TEXT_LENGTH

    @property
    def date_range(self) -> tuple[dt.date, dt.date] | None:
        """The first and last day a date or timestamp column holds (timestamps: from the first
        day's midnight UTC to the end of the last day, UTC); None for other columns."""
        if self.type not in DATED:
            return None
        return (self.earliest or DEFAULT_EARLIEST, self.latest or DEFAULT_LATEST)


def pseudonymous_key(name: str, source: Column) -> Column:
    """The pseudonymous join key of a stored PII text column (such as `email_key` of `email`):
    readable without the pii scope, filterable, equal in every domain for equal values."""
    return Column(
        name,
        ColumnType.TEXT,
        f"Pseudonymous join key of {source.name}: HMAC-SHA256 (hex) of {source.name} trimmed "
        "and lower-cased, keyed by the mesh-wide pseudonymisation secret. Equal for the same "
        f"{source.name} in every domain (the mesh joins on it); {source.name} cannot be "
        "recovered from it.",
        classification=Classification.CONFIDENTIAL,
        nullable=source.nullable,
        sortable=False,
        computed=Pseudonym(source.name),
    )


@dataclass(frozen=True)
class Product:
    """A data product: one table or view published at /<domain>/v<version>/<name>."""

    name: str
    source: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    is_table: bool = True
    version: int = 1
    definition: str = ""
    checks: tuple[Check, ...] = ()
    freshness: dt.timedelta | None = None  # SLA: the newest row is at most this old

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"Product '{self.name}' declares a column twice: {names}")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"Product '{self.name}' key names undeclared columns: {missing}")
        checks = [c.name for c in self.checks]
        if len(set(checks)) != len(checks):
            raise ValueError(f"Product '{self.name}' declares a check twice: {checks}")
        for name in self.key:  # a key is in every cursor and URL: never PII, always stored
            column = self._by_name[name]
            if column.is_pii or column.computed:
                raise ValueError(
                    f"Product '{self.name}' key column '{name}' is PII or computed; a key column "
                    "must be a stored, non-PII column"
                )
        for column in self.columns:
            if column.computed:
                self._check_computed(column)
        stored = {c.name for c in self.stored_columns}
        for check in self.checks:
            unstored = [c for c in check.checked_columns if c in names and c not in stored]
            if unstored:
                raise ValueError(
                    f"Product '{self.name}' check '{check.name}' reads computed columns "
                    f"{unstored}; checks run on stored columns only"
                )

    def _check_computed(self, column: Column) -> None:
        assert column.computed is not None
        source = self._by_name.get(column.computed.source)
        if source is None or source.computed or source.type is not ColumnType.TEXT:
            raise ValueError(
                f"Product '{self.name}' column '{column.name}' is computed from "
                f"'{column.computed.source}', which is not a stored text column of the product"
            )
        if column.type is not ColumnType.TEXT or column.sortable:
            raise ValueError(
                f"Product '{self.name}' computed column '{column.name}' must be text and "
                "declared sortable=False (no index can serve an order on it)"
            )
        if column.nullable != source.nullable:
            raise ValueError(
                f"Product '{self.name}' computed column '{column.name}' is nullable exactly "
                f"when '{source.name}' is"
            )

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        """The columns of the source table or view (every column but the computed ones)."""
        return tuple(c for c in self.columns if c.computed is None)

    @property
    def column_names(self) -> tuple[str, ...]:
        """Declared column names in declaration order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column | None:
        """The declared column of that name, or None."""
        return self._by_name.get(name)

    @property
    def _by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


@dataclass(frozen=True)
class ServiceLevels:
    """What a domain promises about its products' service (the contract's SLA)."""

    availability_pct: float = 99.5
    retention: dt.timedelta = dt.timedelta(days=3 * 365)
    latency: dt.timedelta = dt.timedelta(seconds=1)  # a committed write is readable after
    # ... and reflected in the analytics views (materialized: shared.storage.views) after
    view_freshness: dt.timedelta = dt.timedelta(seconds=30)


# names a product may not take: they are routes of every domain
RESERVED_PRODUCT_NAMES = frozenset({"metadata", "quality", "contracts", "corrections", "query"})
_DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_]*")
# names a domain may not take: the mesh's service, the framework's migration history
RESERVED_DOMAIN_NAMES = {
    "mesh": "the federation service's",
    "framework": "the framework's migration history's (migrations/framework/)",
}


@dataclass(frozen=True)
class Domain:
    """A business domain: its identity, its owner and the products it publishes."""

    name: str
    title: str
    description: str
    owner: str
    update_frequency: str
    data_classification: str
    database: str
    products: tuple[Product, ...] = field(default_factory=tuple)
    # its policy: the port `datamesh up` serves it on unless told otherwise (required of a
    # registered domain), and the requests a caller may make per minute
    port: int | None = None
    rate_limit_per_minute: int = 600
    service_levels: ServiceLevels = field(default_factory=ServiceLevels)
    # the tables its owning team writes through the API, and how (shared.writing.inputs)
    writes: tuple[TableWrites, ...] = ()

    def __post_init__(self) -> None:
        if not _DOMAIN_NAME.fullmatch(self.name):
            raise ValueError(
                f"Domain name '{self.name}' must be lowercase letters, digits and underscores, "
                "starting with a letter (it names a package, scopes and variables)"
            )
        if self.name in RESERVED_DOMAIN_NAMES:
            raise ValueError(f"Domain name '{self.name}' is {RESERVED_DOMAIN_NAMES[self.name]}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"Domain '{self.name}': port {self.port} is not a TCP port")
        if self.rate_limit_per_minute < 0:
            raise ValueError(f"Domain '{self.name}': a negative rate limit (0: no limit)")
        names = [p.name for p in self.products]
        if len(set(names)) != len(names):
            raise ValueError(f"Domain '{self.name}' declares a product twice: {names}")
        reserved = sorted(RESERVED_PRODUCT_NAMES.intersection(names))
        if reserved:
            raise ValueError(f"Domain '{self.name}': product names {reserved} are reserved")
        check_writes(self)

    def product(self, name: str) -> Product | None:
        """The product published under that kebab-case name, or None."""
        for product in self.products:
            if product.name == name:
                return product
        return None
