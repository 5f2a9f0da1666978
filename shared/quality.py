"""Quality runs: every declared check of a domain's products measured by one SQL query against
the product's source, scored, and kept in the domain's own database.

Identifiers in the SQL come only from declarations (quoted); every value is a bound parameter.
A `Consistency` rule's `violations` is SQL written in the declaration, trusted as code is.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any

import asyncpg

from shared.checks import (
    AcceptedValues,
    Check,
    Consistency,
    Freshness,
    NotNull,
    Outliers,
    Pattern,
    Range,
    References,
    RowCount,
    Severity,
    Unique,
)
from shared.products import Classification, Column, ColumnType, Domain, Product
from shared.query import quote_ident

SAMPLE_ROWS = 5
TRIGGERS = ("manual", "schedule", "cli")


class Outcome(StrEnum):
    """What a check found: `warn` is a finding of a warn-only check; `error` a check that could
    not be measured (its SQL failed)."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"


WEIGHTS: dict[Severity, int] = {Severity.CRITICAL: 3, Severity.MAJOR: 2, Severity.MINOR: 1}
CREDITS: dict[Outcome, Fraction] = {
    Outcome.PASS: Fraction(1),
    Outcome.WARN: Fraction(1, 2),
    Outcome.FAIL: Fraction(0),
    Outcome.ERROR: Fraction(0),
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one product in one run."""

    product: str
    check_name: str
    kind: str
    dimension: str
    severity: Severity
    outcome: Outcome
    measured_value: Decimal | None
    threshold: str
    message: str
    sample_rows: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "product": self.product,
            "check": self.check_name,
            "kind": self.kind,
            "dimension": self.dimension,
            "severity": str(self.severity),
            "outcome": str(self.outcome),
            "measured_value": _json_number(self.measured_value),
            "threshold": self.threshold,
            "message": self.message,
            "sample_rows": self.sample_rows,
        }


def _json_number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def score(results: Iterable[CheckResult]) -> float | None:
    """The quality score of a set of check results, 0 to 100 (None without results).

    Each check weighs by its severity (critical 3, major 2, minor 1) and earns a credit by its
    outcome (pass 1, warn 0.5, fail 0, error 0):

        score = 100 x sum(weight x credit) / sum(weight), rounded half up to 1 decimal.

    Computed exactly (fractions) before the one rounding.
    """
    weight = earned = Fraction(0)
    for result in results:
        weight += WEIGHTS[result.severity]
        earned += WEIGHTS[result.severity] * CREDITS[result.outcome]
    if not weight:
        return None
    exact = 100 * earned / weight
    rounded = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        Decimal("0.1"), rounding=ROUND_HALF_UP
    )
    return float(rounded)


@dataclass(frozen=True)
class Tally:
    """Counts of outcomes and the score of a set of results (a run, or one product of it)."""

    checks: int
    passed: int
    failed: int
    warned: int
    errored: int
    score: float | None

    @classmethod
    def of(cls, results: Sequence[CheckResult]) -> Tally:
        """The tally of these results."""
        outcomes = [r.outcome for r in results]
        return cls(
            checks=len(outcomes),
            passed=outcomes.count(Outcome.PASS),
            failed=outcomes.count(Outcome.FAIL),
            warned=outcomes.count(Outcome.WARN),
            errored=outcomes.count(Outcome.ERROR),
            score=score(results),
        )

    def document(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "checks": self.checks,
            "passed": self.passed,
            "failed": self.failed,
            "warned": self.warned,
            "errored": self.errored,
        }


@dataclass(frozen=True)
class QualityRun:
    """One run of a domain's checks: when, why, and every result in declaration order."""

    run_id: int
    started_at: dt.datetime
    finished_at: dt.datetime
    trigger: str
    results: tuple[CheckResult, ...]

    @property
    def tally(self) -> Tally:
        """Outcome counts and score of the whole run."""
        return Tally.of(self.results)

    def product_tallies(self) -> dict[str, Tally]:
        """Outcome counts and score per product, in declaration order."""
        by_product: dict[str, list[CheckResult]] = {}
        for result in self.results:
            by_product.setdefault(result.product, []).append(result)
        return {name: Tally.of(results) for name, results in by_product.items()}

    def summary(self) -> dict[str, Any]:
        """The run without its results: counts and scores, whole and per product."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.astimezone(dt.UTC).isoformat(),
            "finished_at": self.finished_at.astimezone(dt.UTC).isoformat(),
            "trigger": self.trigger,
            **self.tally.document(),
            "products": {name: t.document() for name, t in self.product_tallies().items()},
        }

    def document(self) -> dict[str, Any]:
        """The run with every result."""
        return {**self.summary(), "results": [r.document() for r in self.results]}


# --- Measuring ---------------------------------------------------------------------------


class DeclarationError(Exception):
    """A check that cannot be measured as declared (names an undeclared column, ...)."""


@dataclass(frozen=True)
class _Measure:
    """One check as SQL: returns measured, ok (boolean), samples (JSON text) and detail."""

    sql: str
    args: tuple[Any, ...]
    threshold: str
    unit: str


def _column(product: Product, name: str) -> Column:
    column = product.column(name)
    if column is None:
        raise DeclarationError(
            f"the check names column '{name}', which product '{product.name}' does not declare; "
            f"known: {', '.join(product.column_names)}"
        )
    return column


def _sample_columns(product: Product, check: Check) -> list[str]:
    """The key, then the checked columns that are not PII (a PII value never leaves in a
    sample; the key is enough to find the row)."""
    names = list(product.key)
    for name in check.checked_columns:
        if _column(product, name).classification is not Classification.PII and name not in names:
            names.append(name)
    return names


def _rows_query(
    product: Product,
    check: Check,
    where: str,
    *,
    prelude: str = "",
    joins: str = "",
    measured: str = "(SELECT count(*) FROM failing)",
    detail: str = "NULL",
) -> str:
    """The failing rows of the source (alias t) under `where`: their count (or `measured`),
    and the first few by key with the key and the checked columns."""
    sample = _sample_columns(product, check)
    select = ", ".join(f"t.{quote_ident(c)}" for c in sample)
    order = ", ".join(f"s.{quote_ident(c)}" for c in product.key)
    source = quote_ident(product.source)
    return f"""
        WITH {prelude}
        failing AS (SELECT {select} FROM {source} AS t {joins} WHERE {where})
        SELECT {measured} AS measured,
               {measured} = 0 AS ok,
               (SELECT coalesce(json_agg(s ORDER BY {order}), '[]')
                FROM (SELECT * FROM failing AS s ORDER BY {order} LIMIT {SAMPLE_ROWS}) AS s
               )::text AS samples,
               {detail} AS detail
    """


def _number(value: float) -> Decimal:
    return Decimal(str(value))


def _plain(value: Decimal | float | int) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def _measure(product: Product, check: Check, now: dt.datetime) -> _Measure:
    """The SQL that measures one check of one product."""
    for name in (*product.key, *check.checked_columns):
        _column(product, name)
    source = quote_ident(product.source)
    if isinstance(check, NotNull):
        col = quote_ident(check.column)
        return _Measure(
            _rows_query(product, check, f"t.{col} IS NULL"), (), "0 null values", "null values"
        )
    if isinstance(check, Unique):
        cols = [quote_ident(c) for c in check.columns]
        plain = ", ".join(cols)
        present = " AND ".join(f"t.{c} IS NOT NULL" for c in cols)
        prelude = (
            f"duplicated AS (SELECT {', '.join(f't.{c}' for c in cols)} FROM {source} AS t "
            f"WHERE {present} GROUP BY {plain} HAVING count(*) > 1),"
        )
        where = f"({', '.join(f't.{c}' for c in cols)}) IN (SELECT {plain} FROM duplicated)"
        return _Measure(
            _rows_query(
                product, check, where, prelude=prelude, measured="(SELECT count(*) FROM duplicated)"
            ),
            (),
            "0 duplicated values",
            "duplicated values (groups of rows sharing them)",
        )
    if isinstance(check, AcceptedValues):
        col = quote_ident(check.column)
        where = f"t.{col} IS NOT NULL AND NOT (t.{col}::text = ANY($1::text[]))"
        return _Measure(
            _rows_query(product, check, where),
            (list(check.values),),
            "values in " + ", ".join(check.values),
            "values not accepted",
        )
    if isinstance(check, Range):
        col = quote_ident(check.column)
        where = f"(t.{col} < $1::numeric OR t.{col} > $2::numeric)"  # NULL bounds are open
        low, high = check.minimum, check.maximum
        bounds = [
            f">= {_plain(low)}" if low is not None else "",
            f"<= {_plain(high)}" if high is not None else "",
        ]
        return _Measure(
            _rows_query(product, check, where),
            (None if low is None else _number(low), None if high is None else _number(high)),
            "values " + " and ".join(b for b in bounds if b),
            "values out of range",
        )
    if isinstance(check, Pattern):
        col = quote_ident(check.column)
        where = f"t.{col} IS NOT NULL AND NOT (t.{col}::text ~ $1)"
        return _Measure(
            _rows_query(product, check, where),
            (check.regex,),
            f"values matching {check.regex}",
            "values not matching",
        )
    if isinstance(check, References):
        if len(check.columns) != len(check.target_columns) or not check.columns:
            raise DeclarationError(
                f"references {check.columns} -> {check.target_columns}: the column lists differ "
                "in length"
            )
        target = quote_ident(check.target_table)
        present = " AND ".join(f"t.{quote_ident(c)} IS NOT NULL" for c in check.columns)
        match = " AND ".join(
            f"r.{quote_ident(tc)} = t.{quote_ident(c)}"
            for c, tc in zip(check.columns, check.target_columns, strict=True)
        )
        where = f"{present} AND NOT EXISTS (SELECT 1 FROM {target} AS r WHERE {match})"
        return _Measure(
            _rows_query(product, check, where),
            (),
            f"0 orphans ({', '.join(check.columns)} in "
            f"{check.target_table}({', '.join(check.target_columns)}))",
            "orphan rows",
        )
    if isinstance(check, Consistency):
        return _Measure(
            _rows_query(product, check, f"({check.violations}) IS TRUE"),
            (),
            f"0 rows breaking {check.rule}",
            "rows breaking the rule",
        )
    if isinstance(check, Outliers):
        col = quote_ident(check.column)
        value = f"t.{col}::double precision"
        prelude = (
            f"centre AS (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}) AS median "
            f"FROM {source} AS t WHERE t.{col} IS NOT NULL), "
            f"spread AS (SELECT percentile_cont(0.5) WITHIN GROUP "
            f"(ORDER BY abs({value} - centre.median)) AS mad "
            f"FROM {source} AS t, centre WHERE t.{col} IS NOT NULL),"
        )
        where = (
            f"spread.mad > 0 AND 0.6745 * abs({value} - centre.median) / spread.mad > $1::float8"
        )
        detail = (
            "(SELECT format('median %s, MAD %s', round(centre.median::numeric, 2), "
            "round(spread.mad::numeric, 2)) FROM centre, spread)"
        )
        return _Measure(
            _rows_query(
                product, check, where, prelude=prelude, joins=", centre, spread", detail=detail
            ),
            (check.threshold,),
            f"robust z-score <= {_plain(check.threshold)}",
            "outliers",
        )
    if isinstance(check, Freshness):
        column = _column(product, check.column)
        col = quote_ident(check.column)
        if column.type is ColumnType.DATE:  # a day counts from its midnight, UTC
            newest = f"max(t.{col})::timestamp AT TIME ZONE 'UTC'"
        elif column.type is ColumnType.TIMESTAMP:
            newest = f"max(t.{col})"
        else:
            raise DeclarationError(
                f"freshness of '{check.column}', a {column.type} column: only date and "
                "timestamp columns have an age"
            )
        hours = check.max_age.total_seconds() / 3600
        sql = f"""
            SELECT round((extract(epoch FROM $1::timestamptz - newest) / 3600)::numeric, 2)
                       AS measured,
                   coalesce($1::timestamptz - newest <= $2::interval, FALSE) AS ok,
                   '[]'::text AS samples,
                   'newest ' || newest AS detail
            FROM (SELECT {newest} AS newest FROM {quote_ident(product.source)} AS t) AS n
        """
        return _Measure(sql, (now, check.max_age), f"age <= {_plain(hours)} h", "hours old")
    if isinstance(check, RowCount):
        bounds = [
            f">= {check.minimum}" if check.minimum is not None else "",
            f"<= {check.maximum}" if check.maximum is not None else "",
        ]
        sql = f"""
            SELECT count(*) AS measured,
                   count(*) >= coalesce($1::bigint, 0)
                       AND count(*) <= coalesce($2::bigint, count(*)) AS ok,
                   '[]'::text AS samples,
                   NULL AS detail
            FROM {quote_ident(product.source)}
        """
        return _Measure(
            sql,
            (check.minimum, check.maximum),
            "rows " + " and ".join(b for b in bounds if b),
            "rows",
        )
    raise DeclarationError(f"no runner for checks of kind '{check.kind}'")


async def _run_check(
    conn: asyncpg.Connection, product: Product, check: Check, now: dt.datetime
) -> CheckResult:
    def result(
        outcome: Outcome,
        measured: Decimal | None,
        threshold: str,
        message: str,
        samples: list[dict[str, Any]] | None = None,
    ) -> CheckResult:
        return CheckResult(
            product=product.name,
            check_name=check.name,
            kind=check.kind,
            dimension=str(check.dimension),
            severity=check.severity,
            outcome=outcome,
            measured_value=measured,
            threshold=threshold,
            message=message,
            sample_rows=samples or [],
        )

    try:
        measure = _measure(product, check, now)
    except DeclarationError as exc:
        return result(Outcome.ERROR, None, "", f"bad declaration: {exc}")
    try:
        async with conn.transaction():  # a savepoint: a failing check does not end the run
            row = await conn.fetchrow(measure.sql, *measure.args)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, asyncpg.PostgresConnectionError):
            raise
        return result(Outcome.ERROR, None, measure.threshold, f"{type(exc).__name__}: {exc}")
    assert row is not None
    measured = None if row["measured"] is None else Decimal(row["measured"])
    failed = Outcome.WARN if check.warn_only else Outcome.FAIL
    outcome = Outcome.PASS if row["ok"] else failed
    found = "no rows" if measured is None else f"{_plain(measured)} {measure.unit}"
    if measured is not None and not measured.is_finite():
        # an infinite date or timestamp (PostgreSQL's infinity) measures an infinite age: no
        # number to keep, and not a pass whichever way the comparison went
        outcome, found, measured = failed, f"an infinite value ({measured} {measure.unit})", None
    message = f"{found}; expected {measure.threshold}"
    if row["detail"]:
        message += f" ({row['detail']})"
    return result(outcome, measured, measure.threshold, message, json.loads(row["samples"]))


async def run_checks(
    conn: asyncpg.Connection, products: Iterable[Product], *, now: dt.datetime | None = None
) -> list[CheckResult]:
    """Measure every declared check of the products, in one snapshot of the database.

    Freshness is measured against `now` (default: the current time). A check whose SQL fails
    is an `error` result with the database's message; the other checks still run.
    """
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now has value '{now.isoformat()}'. Not an aware datetime.")
    results: list[CheckResult] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for product in products:
            for check in product.checks:
                results.append(await _run_check(conn, product, check, now))
    return results


async def run_quality(
    conn: asyncpg.Connection, domain: Domain, *, trigger: str, now: dt.datetime | None = None
) -> QualityRun:
    """Run every check of the domain's products and keep the run and its results."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger has value '{trigger}'. Not one of {', '.join(TRIGGERS)}.")
    started_at = dt.datetime.now(dt.UTC)
    results = await run_checks(conn, domain.products, now=now)
    finished_at = dt.datetime.now(dt.UTC)
    run = QualityRun(0, started_at, finished_at, trigger, tuple(results))
    return await store_run(conn, run)


# --- Keeping runs ------------------------------------------------------------------------


async def store_run(conn: asyncpg.Connection, run: QualityRun) -> QualityRun:
    """Write a run and its results in one transaction; the run with its new run_id."""
    tally = run.tally
    async with conn.transaction():
        run_id = await conn.fetchval(
            """
            INSERT INTO quality_runs
                (started_at, finished_at, trigger, score, checks, passed, failed, warned, errored)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING run_id
            """,
            run.started_at,
            run.finished_at,
            run.trigger,
            None if tally.score is None else Decimal(str(tally.score)),
            tally.checks,
            tally.passed,
            tally.failed,
            tally.warned,
            tally.errored,
        )
        await conn.executemany(
            """
            INSERT INTO quality_results
                (run_id, product, check_name, kind, dimension, severity, outcome,
                 measured_value, threshold, message, sample_rows)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb)
            """,
            [
                (
                    run_id,
                    r.product,
                    r.check_name,
                    r.kind,
                    r.dimension,
                    str(r.severity),
                    str(r.outcome),
                    r.measured_value,
                    r.threshold,
                    r.message,
                    json.dumps(r.sample_rows),
                )
                for r in run.results
            ],
        )
    return QualityRun(run_id, run.started_at, run.finished_at, run.trigger, run.results)


_RUN_COLUMNS = "run_id, started_at, finished_at, trigger"


async def _runs(conn: asyncpg.Connection, runs: list[asyncpg.Record]) -> list[QualityRun]:
    """The runs of these quality_runs rows, each with its results (read in one query)."""
    rows = await conn.fetch(
        """
        SELECT run_id, product, check_name, kind, dimension, severity, outcome, measured_value,
               threshold, message, sample_rows::text AS sample_rows
        FROM quality_results WHERE run_id = ANY($1::integer[]) ORDER BY result_id
        """,
        [run["run_id"] for run in runs],
    )
    results: dict[int, list[CheckResult]] = {run["run_id"]: [] for run in runs}
    for r in rows:
        results[r["run_id"]].append(
            CheckResult(
                product=r["product"],
                check_name=r["check_name"],
                kind=r["kind"],
                dimension=r["dimension"],
                severity=Severity(r["severity"]),
                outcome=Outcome(r["outcome"]),
                measured_value=r["measured_value"],
                threshold=r["threshold"],
                message=r["message"],
                sample_rows=json.loads(r["sample_rows"]),
            )
        )
    return [
        QualityRun(
            run_id=run["run_id"],
            started_at=run["started_at"],
            finished_at=run["finished_at"],
            trigger=run["trigger"],
            results=tuple(results[run["run_id"]]),
        )
        for run in runs
    ]


async def read_run(conn: asyncpg.Connection, run_id: int) -> QualityRun | None:
    """A kept run with its results, or None."""
    row = await conn.fetchrow(f"SELECT {_RUN_COLUMNS} FROM quality_runs WHERE run_id = $1", run_id)
    return None if row is None else (await _runs(conn, [row]))[0]


async def latest_run(conn: asyncpg.Connection) -> QualityRun | None:
    """The newest kept run with its results, or None before the first run."""
    run_id = await conn.fetchval("SELECT max(run_id) FROM quality_runs")
    return None if run_id is None else await read_run(conn, run_id)


async def run_history(
    conn: asyncpg.Connection, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Summaries of kept runs, newest first, and how many runs are kept in all."""
    total = await conn.fetchval("SELECT count(*) FROM quality_runs")
    rows = await conn.fetch(
        f"SELECT {_RUN_COLUMNS} FROM quality_runs ORDER BY run_id DESC LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    return [run.summary() for run in await _runs(conn, list(rows))], total


async def latest_scores(conn: asyncpg.Connection) -> dict[str, float]:
    """Product name -> quality score of the latest run (empty before the first run)."""
    run = await latest_run(conn)
    if run is None:
        return {}
    return {
        name: tally.score
        for name, tally in run.product_tallies().items()
        if tally.score is not None
    }


async def latest_run_summary(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """The latest run's counts and scores, whole and per product, without its results."""
    run = await latest_run(conn)
    return None if run is None else run.summary()


# The runs are kept in quality_runs and quality_results, created once for every domain database
# by the framework's migration branch (migrations/framework/versions/0001_quality.py); a change
# of their shape is a new revision of that branch.
