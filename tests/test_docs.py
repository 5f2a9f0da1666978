"""The docs stay true to the declarations."""

from __future__ import annotations

from pathlib import Path

from services import DOMAINS, domain, registered
from shared.serving.docs import ASSETS, SWAGGER_UI_VERSION, assets_path

ROOT = Path(__file__).resolve().parent.parent


def test_products_page_lists_every_product_and_definition() -> None:
    page = (ROOT / "docs" / "products.md").read_text()
    for name in DOMAINS:
        for product in domain(name).products:
            assert f"### `{product.name}` (" in page
            for column in product.columns:
                assert f"| {column.name} | {column.type}" in page
            if product.definition:
                assert product.definition in page


def test_readme_lists_every_product() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in DOMAINS:
        for product in domain(name).products:
            assert f"| {name:<9} | `{product.name}`" in readme


def test_the_vendored_swagger_ui_is_the_version_it_is_served_as() -> None:
    swagger_ui = ROOT / "shared" / "serving" / "swagger_ui"
    bundle = (swagger_ui / "swagger-ui-bundle.js").read_text()
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle
    assert f"version {SWAGGER_UI_VERSION} (tarball" in (swagger_ui / "README.md").read_text()
    assert assets_path("mesh") == f"/mesh/docs/assets/{SWAGGER_UI_VERSION}"
    for name in ASSETS:
        assert (swagger_ui / name).stat().st_size > 0
    assert (swagger_ui / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


def test_readme_gives_every_domain_its_port_and_persona() -> None:
    readme = (ROOT / "README.md").read_text()
    for declared in registered():
        name, port = declared.name, declared.port
        assert f"| {name:<9} | http://127.0.0.1:{port}/{name}/ " in readme
        assert f"| `{name}_analyst`" in readme
