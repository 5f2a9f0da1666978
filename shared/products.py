"""Declaration types: a domain declares its data products; the framework serves them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from shared.checks import Check


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


class Classification(StrEnum):
    """How sensitive a column is; PII is masked for callers without the domain's pii scope."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PII = "pii"


@dataclass(frozen=True)
class Column:
    """One column of a data product, as it appears in SQL and in every output format."""

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


# names a product may not take: they are routes of every domain
RESERVED_PRODUCT_NAMES = frozenset({"metadata", "quality", "contracts"})


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
    service_levels: ServiceLevels = field(default_factory=ServiceLevels)

    def __post_init__(self) -> None:
        names = [p.name for p in self.products]
        if len(set(names)) != len(names):
            raise ValueError(f"Domain '{self.name}' declares a product twice: {names}")
        reserved = sorted(RESERVED_PRODUCT_NAMES.intersection(names))
        if reserved:
            raise ValueError(f"Domain '{self.name}': product names {reserved} are reserved")

    def product(self, name: str) -> Product | None:
        """The product published under that kebab-case name, or None."""
        for product in self.products:
            if product.name == name:
                return product
        return None
