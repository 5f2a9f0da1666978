"""The docs stay true to the declarations: each registered domain's own page
(services/<domain>/README.md, checked by tests/domain_docs.py), and the README's tour of the
sample domains. No test asks the README or docs/ to change for a new domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import DOMAINS, domain, package
from shared.serving.docs import ASSETS, SWAGGER_UI, SWAGGER_UI_VERSION, assets_path
from tests.domain_docs import overview_problems, page_path, page_problems, product_problems, tables

ROOT = Path(__file__).resolve().parent.parent
# the domains the README tours (its products, services and personas tables), as it says
SAMPLES = ("sales", "marketing")


@pytest.mark.parametrize("name", DOMAINS)
def test_each_domain_documents_itself_on_its_own_page(name: str) -> None:
    page = page_path(package(name)).read_text()
    problems = overview_problems(domain(name), page) + product_problems(domain(name), page)
    assert problems == []


def test_the_page_check_finds_what_a_page_gets_wrong() -> None:
    sales = domain("sales")
    page = page_path(package("sales")).read_text()
    assert page_problems(sales, page) == []
    wrong = (
        page.replace("| port | 8001 |", "| port | 9001 |")
        .replace("| `products` | products | table |\n", "")
        .replace("| phone | text (nullable) | pii |", "| phone | text | pii |")
        .replace("| `unique:email` | uniqueness | major | 0 duplicated values |\n", "")
        .replace(f"Definition: {sales.products[4].definition}", "Definition: monthly sales.")
        .replace("### `orders` (table `orders`,", "### `orders` (table `order`,")
    )
    problems = page_problems(sales, wrong)
    assert [problem[:40] for problem in problems] == [
        "the 'field' table's port is '9001', not ",
        "the 'product' table lists [['`customers`",
        "customers: the 'column' table lists [['c",
        "no heading '### `orders` (table `orders`",
        "sales-summary: 'One row per calendar mon",
        "customers: the 'check' table lists [['`n",
        "no heading '### `orders` (table `orders`",
    ]
    assert "['phone', 'text', 'pii']" in problems[2]
    assert "'`unique:email`'" not in problems[5].split(", not ")[0]


def test_the_readme_tours_the_sample_domains() -> None:
    """The README's tables show the sample domains as examples; `datamesh domains` lists every
    registered one, and each domain's page is its documentation."""
    assert set(SAMPLES) <= set(DOMAINS)
    readme = (ROOT / "README.md").read_text()
    rows = [row for rows in tables(readme) for row in rows]
    for name in SAMPLES:
        declared = domain(name)
        products = [row[1:4] for row in rows if row[0] == name and row[1].startswith("`")]
        assert products == [
            [f"`{p.name}`", p.source, "table" if p.is_table else "view"] for p in declared.products
        ]
        url = f"http://127.0.0.1:{declared.port}/{name}/"
        assert [name, url, f"{url}docs"] in rows
        assert [r for r in rows if r[0] == f"`{name}_analyst`"] != []
        assert f"(services/{name}/README.md)" in readme
    assert ["mesh", "http://127.0.0.1:8000/mesh/", "http://127.0.0.1:8000/mesh/docs"] in rows
    assert "datamesh domains" in readme


def test_the_vendored_swagger_ui_is_the_version_it_is_served_as() -> None:
    bundle = (SWAGGER_UI / "swagger-ui-bundle.js").read_text()
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle
    assert f"version {SWAGGER_UI_VERSION} (tarball" in (SWAGGER_UI / "README.md").read_text()
    assert assets_path("mesh") == f"/mesh/docs/assets/{SWAGGER_UI_VERSION}"
    for name in ASSETS:
        assert (SWAGGER_UI / name).stat().st_size > 0
    assert (SWAGGER_UI / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
