"""A metric's one DuckDB statement as Spark SQL: translated by sqlglot, never written twice.

The translation is mechanical: sqlglot reads the statement as DuckDB and writes it as Spark;
on the way, each call of a DuckDB macro the metrics use (metrics.MACROS) is replaced by the
macro's own body with the call's arguments (Spark SQL has no macros), and HUGEINT, DuckDB's
128-bit integer (the integer cents of the macros), becomes DECIMAL(38, 0), Spark's widest
exact integer. `$since`/`$until` become Spark's named parameters `:since`/`:until`.
"""

from __future__ import annotations

from functools import cache

import sqlglot
from sqlglot import exp

from services.federation.metrics import MACROS

_READ, _WRITE = "duckdb", "spark"
_WIDE_INTEGER = exp.DataType.build("DECIMAL(38, 0)", dialect=_WRITE)


@cache
def _macros() -> dict[str, tuple[tuple[str, ...], exp.Expression]]:
    """Each macro by name: its parameters and its body."""
    macros: dict[str, tuple[tuple[str, ...], exp.Expression]] = {}
    for text in MACROS:
        created = sqlglot.parse_one(text, read=_READ)
        signature = created.this
        if (
            not isinstance(created, exp.Create)
            or str(created.args.get("kind", "")).upper() != "MACRO"
            or not isinstance(signature, exp.UserDefinedFunction)
        ):
            raise ValueError(f"not a macro: {text}")
        parameters = tuple(p.name.lower() for p in signature.expressions)
        macros[signature.this.name.lower()] = (parameters, created.expression)
    return macros


def _called_macro(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous) and node.name.lower() in _macros():
        return node.name.lower()
    return None


def _expand(node: exp.Expression) -> exp.Expression:
    """A macro call replaced by the macro's body, its parameters by the call's arguments."""
    name = _called_macro(node)
    if name is None:
        return node
    parameters, body = _macros()[name]
    arguments = node.expressions
    if len(arguments) != len(parameters):
        raise ValueError(f"{name}() takes {len(parameters)} arguments, not {len(arguments)}")
    bound = dict(zip(parameters, arguments, strict=True))

    def substitute(part: exp.Expression) -> exp.Expression:
        if isinstance(part, exp.Column) and not part.table and part.name.lower() in bound:
            return _grouped(bound[part.name.lower()].copy())
        return part

    return _grouped(body.copy().transform(substitute))


def _grouped(node: exp.Expression) -> exp.Expression:
    """The expression, in parentheses unless it is one term (a name, a literal, a call)."""
    if isinstance(node, exp.Column | exp.Literal | exp.Paren | exp.Func | exp.Case):
        return node
    return exp.Paren(this=node)


def _spark_types(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.INT128:
        return _WIDE_INTEGER.copy()
    return node


@cache
def spark_sql(sql: str) -> str:
    """The DuckDB statement `sql` (which may call metrics.MACROS) as one Spark SQL statement."""
    tree = sqlglot.parse_one(sql, read=_READ)
    # a macro's body may call another macro: expand until none is left
    while any(_called_macro(node) for node in tree.walk()):
        tree = tree.transform(_expand)
    tree = tree.transform(_spark_types)
    return tree.sql(dialect=_WRITE, pretty=True)


def parameters(sql: str) -> tuple[str, ...]:
    """The named parameters the statement takes (`$since` in DuckDB is `:since` in Spark)."""
    return tuple(
        dict.fromkeys(
            node.name for node in sqlglot.parse_one(sql, read=_READ).find_all(exp.Placeholder)
        )
    )
