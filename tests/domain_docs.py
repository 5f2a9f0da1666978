"""What a domain's own page, `services/<domain>/README.md`, must say, read from the domain's
declaration: its policy (owner, classification, port, docs, database, rate limit, persona), its
scopes, its products, and under each product its columns, definition and quality checks.

tests/test_docs.py and tests/test_quality.py hold every registered domain's page to it, and
tests/test_domain_new.py a scaffolded domain's. Tables are compared cell by cell, stripped, so
their padding is free; a table is found by the first cell of its header row.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import import_module
from pathlib import Path

from shared.declarations.products import Domain, Product
from shared.security.auth import known_scopes, personas

Row = list[str]


def page_path(package: str) -> Path:
    """A domain's page: README.md in its package's folder (services/<domain>/README.md)."""
    module = import_module(package)
    assert module.__file__ is not None
    return Path(module.__file__).parent / "README.md"


def tables(text: str) -> list[list[Row]]:
    """Every Markdown table of the text: its rows (the header first, no separator row), each
    the row's cells, stripped."""
    found: list[list[Row]] = []
    current: list[Row] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|") and len(line) > 1):
            current = None
            continue
        if current is None:
            current = []
            found.append(current)
        if not re.fullmatch(r"\|[\s:|-]*\|", line):  # the separator row
            current.append([cell.strip() for cell in line[1:-1].split("|")])
    return found


def table(text: str, first_header: str) -> list[Row] | None:
    """The rows (header left out) of the first table whose header's first cell starts with
    `first_header`, or None."""
    for rows in tables(text):
        if rows and rows[0][0].startswith(first_header):
            return rows[1:]
    return None


def kind(product: Product) -> str:
    return "table" if product.is_table else "view"


def _duration(age: dt.timedelta) -> str:
    if age % dt.timedelta(days=1):
        return f"{age / dt.timedelta(hours=1):g} hours"
    return f"{age.days} day" if age.days == 1 else f"{age.days} days"


def heading(product: Product) -> str:
    """A product's heading on its domain's page."""
    sla = f"; freshness SLA {_duration(product.freshness)}" if product.freshness else ""
    return (
        f"### `{product.name}` ({kind(product)} `{product.source}`, key "
        f"{', '.join(product.key)}{sla})"
    )


def section(page: str, product: Product) -> str | None:
    """The text under a product's heading, up to the next heading of level 1 to 3."""
    lines = page.splitlines()
    if heading(product) not in lines:
        return None
    start = lines.index(heading(product)) + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"#{1,3} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def overview_problems(domain: Domain, page: str) -> list[str]:
    """What the page's title, policy, scopes and products tables get wrong or leave out."""
    name = domain.name
    problems = []
    if page.splitlines()[:1] != [f"# {domain.title}"]:
        problems.append(f"the page does not start with '# {domain.title}'")
    fields = {row[0]: row[1] for row in table(page, "field") or [] if len(row) > 1}
    analyst = personas((name,))[f"{name}_analyst"]
    expected = {
        "owner": domain.owner,
        "classification": domain.data_classification,
        "port": str(domain.port),
        "docs": f"http://127.0.0.1:{domain.port}/{name}/docs",
        "database": f"`{domain.database}`",
        "rate limit": f"{domain.rate_limit_per_minute} requests per minute",
        "persona": f"`{name}_analyst` (`{' '.join(analyst)}`)",
    }
    for field, value in expected.items():
        exact = field in ("owner", "classification", "port", "docs", "database")
        given = fields.get(field)
        if given is None or not (given == value if exact else given.startswith(value)):
            problems.append(f"the 'field' table's {field} is {given!r}, not {value!r}")
    scopes = [f"`{s}`" for s in known_scopes((name,)) if s.startswith(f"{name}:")]
    listed = [row[0] for row in table(page, "scope") or []]
    if listed != scopes:
        problems.append(f"the 'scope' table lists {listed}, not {scopes}")
    products = [[f"`{p.name}`", p.source, kind(p)] for p in domain.products]
    rows = [row[:3] for row in table(page, "product") or []]
    if rows != products:
        problems.append(f"the 'product' table lists {rows}, not {products}")
    return problems


def product_problems(domain: Domain, page: str) -> list[str]:
    """What the page gets wrong or leaves out of each product: its heading, description,
    definition and columns (name, type, classification)."""
    problems = []
    for product in domain.products:
        text = section(page, product)
        if text is None:
            problems.append(f"no heading '{heading(product)}'")
            continue
        for said in (product.description, product.definition):
            if said and said not in text:
                problems.append(f"{product.name}: '{said}' is not said")
        columns = [
            [c.name, f"{c.type} (nullable)" if c.nullable else str(c.type), str(c.classification)]
            for c in product.columns
        ]
        rows = [row[:3] for row in table(text, "column") or []]
        if rows != columns:
            problems.append(f"{product.name}: the 'column' table lists {rows}, not {columns}")
    return problems


def check_problems(domain: Domain, page: str) -> list[str]:
    """What the page gets wrong or leaves out of each product's quality checks: each by name,
    in the declared order, with its dimension and severity."""
    problems = []
    for product in domain.products:
        text = section(page, product)
        if text is None:
            problems.append(f"no heading '{heading(product)}'")
            continue
        checks = [
            [
                f"`{check.name}`",
                str(check.dimension),
                f"{check.severity}, warning only" if check.warn_only else str(check.severity),
            ]
            for check in product.checks
        ]
        rows = [row[:3] for row in table(text, "check") or []]
        if rows != checks:
            problems.append(f"{product.name}: the 'check' table lists {rows}, not {checks}")
    return problems


def page_problems(domain: Domain, page: str) -> list[str]:
    """Everything the domain's page gets wrong or leaves out; empty when it is true."""
    return [
        *overview_problems(domain, page),
        *product_problems(domain, page),
        *check_problems(domain, page),
    ]
