"""Quality runs: every declared check of a domain's products measured by its measurement's
query against the product's source (the query the product's contract publishes), scored, and
kept in the domain's own database.

Identifiers in the SQL come only from declarations (quoted), and so do the values, as SQL
literals (shared/declarations/checks), so that the statement run is the one published. A `Consistency`
rule's `violations` is SQL written in the declaration, trusted as code is.
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

from shared.declarations.checks import (
    CONSUMER_CLOCK,
    Check,
    DeclarationError,
    Measurement,
    Severity,
)
from shared.declarations.checks.base import declared_column, plain
from shared.declarations.products import Classification, Domain, Product
from shared.sql import quote_ident

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


def _sample_columns(product: Product, check: Check) -> list[str]:
    """The key, then the checked columns that are not PII (a PII value never leaves in a
    sample; the key is enough to find the row)."""
    names = list(product.key)
    for name in check.checked_columns:
        if (
            declared_column(product, name).classification is not Classification.PII
            and name not in names
        ):
            names.append(name)
    return names


def _samples_query(product: Product, check: Check, measurement: Measurement) -> str:
    """The first few failing rows by key, with the key and the checked columns, as JSON."""
    sample = _sample_columns(product, check)
    select = ", ".join(f"t.{quote_ident(c)}" for c in sample)
    order = ", ".join(f"s.{quote_ident(c)}" for c in product.key)
    source = quote_ident(product.source)
    ctes = ", ".join(
        (
            *measurement.prelude,
            f"failing AS (SELECT {select} FROM {source} AS t{measurement.joins} "
            f"WHERE {measurement.failing})",
        )
    )
    return f"""
        WITH {ctes}
        SELECT coalesce(json_agg(s ORDER BY {order}), '[]')::text
        FROM (SELECT * FROM failing AS s ORDER BY {order} LIMIT {SAMPLE_ROWS}) AS s
    """


def measurement(product: Product, check: Check, *, clock: str = CONSUMER_CLOCK) -> Measurement:
    """The measurement of one check of one product, its columns checked against the product's
    declaration (a DeclarationError names the unknown one)."""
    for name in (*product.key, *check.checked_columns):
        declared_column(product, name)
    return check.measurement(product, clock=clock)


async def _run_check(
    conn: asyncpg.Connection, product: Product, check: Check, clock: str
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
        measure = measurement(product, check, clock=clock)
    except DeclarationError as exc:
        return result(Outcome.ERROR, None, "", f"bad declaration: {exc}")
    samples: list[dict[str, Any]] = []
    try:
        async with conn.transaction():  # a savepoint: a failing check does not end the run
            value = await conn.fetchval(measure.query)
            exact = None if value is None else Decimal(value)
            ok = measure.passes(exact)
            if not ok and measure.failing is not None:
                samples = json.loads(await conn.fetchval(_samples_query(product, check, measure)))
            detail = None if measure.detail is None else await conn.fetchval(measure.detail)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, asyncpg.PostgresConnectionError):
            raise
        return result(Outcome.ERROR, None, measure.expected, f"{type(exc).__name__}: {exc}")
    measured = exact
    if exact is not None and exact.is_finite() and measure.places is not None:
        measured = exact.quantize(Decimal(1).scaleb(-measure.places), rounding=ROUND_HALF_UP)
    failed = Outcome.WARN if check.warn_only else Outcome.FAIL
    outcome = Outcome.PASS if ok else failed
    found = "no rows" if measured is None else f"{plain(measured)} {measure.unit}"
    if measured is not None and not measured.is_finite():
        # an infinite date or timestamp (PostgreSQL's infinity) measures an infinite age: no
        # number to keep, and not a pass whichever way the comparison went
        outcome, found, measured = failed, f"an infinite value ({measured} {measure.unit})", None
    message = f"{found}; expected {measure.expected}"
    if detail:
        message += f" ({detail})"
    return result(outcome, measured, measure.expected, message, samples)


async def run_checks(
    conn: asyncpg.Connection, products: Iterable[Product], *, now: dt.datetime | None = None
) -> list[CheckResult]:
    """Measure every declared check of the products, in one snapshot of the database.

    Each check's measured value is its measurement's query, executed as the product's contract
    publishes it; freshness is measured against `now` (default: the time of the run, the
    query's own `now()`). A check whose SQL fails is an `error` result with the database's
    message; the other checks still run.
    """
    clock = CONSUMER_CLOCK
    if now is not None:
        if now.tzinfo is None:
            raise ValueError(f"now has value '{now.isoformat()}'. Not an aware datetime.")
        clock = f"'{now.isoformat()}'::timestamptz"
    results: list[CheckResult] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for product in products:
            for check in product.checks:
                results.append(await _run_check(conn, product, check, clock))
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
