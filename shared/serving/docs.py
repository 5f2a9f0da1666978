"""A service's docs page: Swagger UI at /<service>/docs, its script, stylesheet and icon served by
the service itself under /<service>/docs/assets/<Swagger UI version>/, so that the page loads
nothing from another origin and works on a machine without internet.

The files are those of the `swagger-ui-dist` npm package, vendored unchanged in
shared/serving/swagger_ui/ with its licence (see the README there to update them)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

SWAGGER_UI = Path(__file__).with_name("swagger_ui")
SWAGGER_UI_VERSION: str = json.loads((SWAGGER_UI / "package.json").read_text())["version"]

# the files the page loads, and their media types
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# the version is in the path: a new Swagger UI is a new URL, so browsers may keep a file forever
IMMUTABLE = "public, max-age=31536000, immutable"

# a token given to "Authorize" survives reloading the page
SWAGGER_UI_PARAMETERS = {"persistAuthorization": True}


def assets_path(service: str) -> str:
    """Where the service serves Swagger UI's files."""
    return f"/{service}/docs/assets/{SWAGGER_UI_VERSION}"


def install_docs(app: FastAPI, service: str) -> None:
    """The docs page and Swagger UI's files, open like the OpenAPI document (the app is built
    with docs_url=None)."""
    assert app.openapi_url, "the docs page shows the OpenAPI document"
    openapi_url = app.openapi_url
    assets = assets_path(service)
    title = f"{app.title} - Swagger UI"

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's prefix
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=title,
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to come back from
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    app.add_route(f"/{service}/docs", docs, include_in_schema=False)
    for name, media_type in ASSETS.items():
        app.add_route(
            f"{assets}/{name}",
            _asset((SWAGGER_UI / name).read_bytes(), media_type),
            include_in_schema=False,
        )


def _asset(content: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def asset(request: Request) -> Response:
        return Response(content, media_type=media_type, headers={"Cache-Control": IMMUTABLE})

    return asset
