"""Quality checks, one module per kind: what a product promises about its data, declared next
to its columns, and how it is measured. shared/governance/quality.py runs the measurements;
shared/governance/contracts.py publishes them in the ODCS contract; shared/writing/inputs.py derives the rules of
written values from them. A new kind is a module here and its line in KINDS."""

from __future__ import annotations

from shared.declarations.checks.accepted_values import AcceptedValues
from shared.declarations.checks.base import (
    CONSUMER_CLOCK,
    Check,
    DeclarationError,
    Dimension,
    Measurement,
    Severity,
)
from shared.declarations.checks.consistency import Consistency
from shared.declarations.checks.freshness import Freshness
from shared.declarations.checks.not_null import NotNull, not_null
from shared.declarations.checks.outliers import Outliers
from shared.declarations.checks.pattern import Pattern
from shared.declarations.checks.range import Range
from shared.declarations.checks.references import References
from shared.declarations.checks.row_count import RowCount
from shared.declarations.checks.unique import Unique

# every kind of check, by the name results and contracts show
KINDS: dict[str, type[Check]] = {
    kind.kind: kind
    for kind in (
        NotNull,
        Unique,
        AcceptedValues,
        Range,
        Pattern,
        References,
        Freshness,
        RowCount,
        Consistency,
        Outliers,
    )
}

# an email address's shape: something, one @, a domain with a dot (the schemas' CHECK too)
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

__all__ = [
    "CONSUMER_CLOCK",
    "EMAIL_PATTERN",
    "KINDS",
    "AcceptedValues",
    "Check",
    "Consistency",
    "DeclarationError",
    "Dimension",
    "Freshness",
    "Measurement",
    "NotNull",
    "Outliers",
    "Pattern",
    "Range",
    "References",
    "RowCount",
    "Severity",
    "Unique",
    "not_null",
]
