"""The docs pages in a real browser, on a machine without internet: Debian's chromium, driven by
Playwright, with no name resolution but the services' own. Each service's Swagger UI must draw
every operation of its OpenAPI document from files the service serves itself, without a request
to another origin or a Content-Security-Policy violation, and "Authorize" + "Try it out" +
"Execute" must read data.

Needs `chromium` on the PATH (`.ci/run` installs it); `pytest -m "not browser"` leaves it out."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.serving.docs import SWAGGER_UI_VERSION
from tests.conftest import token
from tests.servers import served

pytestmark = pytest.mark.browser

SERVICES = ("sales", "marketing", "mesh")
# The browser reaches the services by this name, mapped to 127.0.0.1, and resolves no other
# name: nothing can leave the machine. A name rather than 127.0.0.1 since Swagger UI treats
# localhost and 127.0.0.1 apart in places: the pages load as from another machine.
HOST = "docs.test"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TIMEOUT_MS = 15_000

# per service, a read to run from its page: the operation's tag and path, its path parameters,
# and a field of the (first) row it answers with its value
READS: dict[str, tuple[str, str, dict[str, str], tuple[str, int]]] = {
    "sales": (
        "customers",
        "/sales/v1/customers/{customer_id}",
        {"customer_id": "3"},
        ("customer_id", 3),
    ),
    "marketing": (
        "campaigns",
        "/marketing/v1/campaigns/{campaign_id}",
        {"campaign_id": "2"},
        ("campaign_id", 2),
    ),
    # a metric: the mesh reads both domains for it
    "mesh": ("campaign-roi", "/mesh/v1/campaign-roi", {}, ("campaign_id", 1)),
}


@pytest.fixture(scope="module")
def services(domain_urls: dict[str, str]) -> Iterator[dict[str, str]]:
    """Every service on a loopback port (the mesh reading the domains over HTTP); base URLs."""
    mesh = create_app(FederationSettings.model_validate({"domains": domain_urls}))
    with served(mesh) as mesh_url:
        yield {**domain_urls, "mesh": mesh_url}


@pytest.fixture(scope="module")
def browser(services: dict[str, str]) -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            'chromium is not installed (`apt-get install chromium`); `pytest -m "not browser"` '
            "runs the other tests"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                # HOST is the loopback; any other name fails to resolve
                f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND",
                "--no-proxy-server",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def page_url(services: dict[str, str], service: str) -> str:
    """The service's base URL as the browser reaches it."""
    return f"http://{HOST}:{urlsplit(services[service]).port}"


@dataclass
class Watched:
    """What a page asked its origin for, and what it must not do: requests to another origin
    (refused), CSP violations (the page's securitypolicyviolation events), console errors."""

    origin: str
    served: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def route(self, route: Route, request: Request) -> None:
        if request.url.startswith(self.origin + "/"):
            self.served.append(urlsplit(request.url).path)
            route.continue_()
        else:
            self.foreign.append(request.url)
            route.abort("blockedbyclient")

    def request(self, request: Request) -> None:
        # a request routing might not see (a service worker's, say) is counted all the same
        if not request.url.startswith((self.origin + "/", "data:")):
            self.foreign.append(request.url)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_clean(self, page: Page) -> None:
        reported = page.evaluate("window.__cspViolations")
        assert (sorted(set(self.foreign)), reported, self.errors) == ([], [], [])


# recorded before any script of the page runs (Playwright's init scripts are not subject to
# the page's policy)
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    `${e.violatedDirective} ${e.blockedURI} (${e.sourceFile}:${e.lineNumber}:${e.columnNumber})`
  );
});
"""


def open_docs(
    browser: Browser,
    services: dict[str, str],
    service: str,
    until: Literal["load", "networkidle"] = "networkidle",
) -> tuple[Page, Watched]:
    """A fresh browser context on the service's docs page, watched."""
    origin = page_url(services, service)
    watched = Watched(origin)
    context = browser.new_context(base_url=origin)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", watched.route)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.on("request", watched.request)
    page.on("console", watched.console)
    response = page.goto(f"/{service}/docs", wait_until=until)
    assert response is not None and response.status == 200
    return page, watched


def operation_ids(document: dict[str, Any]) -> list[str]:
    """The element ids Swagger UI gives the operations of the document: one per operation and
    tag (Swagger UI draws an operation under each of its tags; an untagged one under
    "default")."""
    ids = []
    for path in document["paths"].values():
        for method, operation in path.items():
            if method not in HTTP_METHODS:
                continue
            for tag in operation.get("tags") or ["default"]:
                # Swagger UI writes spaces as "_" and CSS-escapes the rest: plain names only here
                ids.append(f"operations-{tag}-{operation['operationId']}".replace(" ", "_"))
    assert all(re.fullmatch(r"[A-Za-z][\w-]*", i) for i in ids), ids
    return ids


def drawn_operations(page: Page, expected: int) -> list[str]:
    """The ids of the operations the page draws, once it draws as many as expected or stops
    drawing (at most TIMEOUT_MS)."""
    # (a locator, not wait_for_function: Playwright evaluates that one's predicate with eval in
    # the page, which the page's policy rightly refuses)
    with contextlib.suppress(PlaywrightTimeout):  # the comparison says what is missing
        page.locator(".opblock").nth(expected - 1).wait_for(state="attached")
    ids: list[str] = page.eval_on_selector_all(".opblock", "blocks => blocks.map(b => b.id)")
    return ids


@pytest.mark.parametrize("service", SERVICES)
def test_the_docs_page_draws_every_operation_offline(
    browser: Browser, services: dict[str, str], service: str
) -> None:
    document = httpx.get(f"{services[service]}/{service}/openapi.json").json()
    expected = operation_ids(document)
    assert len(expected) >= 11  # the mesh has the fewest

    page, watched = open_docs(browser, services, service)
    try:
        drawn = drawn_operations(page, len(expected))
        assert sorted(drawn) == sorted(expected)
        assets = f"/{service}/docs/assets/{SWAGGER_UI_VERSION}"
        # the page, its files and its document came from the service, the icon too
        assert sorted(set(watched.served)) == [
            f"/{service}/docs",
            f"{assets}/favicon-32x32.png",
            f"{assets}/swagger-ui-bundle.js",
            f"{assets}/swagger-ui.css",
            f"/{service}/openapi.json",
        ]
        watched.assert_clean(page)
    finally:
        page.context.close()


@pytest.mark.parametrize("service", SERVICES)
def test_authorize_try_it_out_and_execute_read_data(
    browser: Browser, services: dict[str, str], service: str
) -> None:
    tag, path, parameters, (field_name, value) = READS[service]
    # campaign-roi answers Marketing's campaign rows: it needs marketing:read too (docs/mesh.md)
    bearer = token(f"{service}:read", *(("marketing:read",) if service == "mesh" else ()))
    url = path.format(**parameters)
    expected = httpx.get(f"{services[service]}{url}", headers={"Authorization": f"Bearer {bearer}"})
    assert expected.status_code == 200
    assert httpx.get(f"{services[service]}{url}").status_code == 401  # the token is needed
    document = httpx.get(f"{services[service]}/{service}/openapi.json").json()
    operation_id = document["paths"][path]["get"]["operationId"]

    # (the clicks wait for what they click: no need to wait for the network to settle)
    page, watched = open_docs(browser, services, service, until="load")
    try:
        page.locator(".auth-wrapper button.authorize").click()
        dialog = page.locator(".modal-ux")
        dialog.locator("input").fill(bearer)
        dialog.locator("button.authorize").click()
        dialog.locator("button.btn-done").click()
        assert page.locator(".auth-wrapper button.authorize.locked").count() == 1

        operation = page.locator(f"#operations-{tag}-{operation_id}")
        operation.locator(".opblock-summary-control").click()
        operation.locator("button.try-out__btn").click()
        for name, given in parameters.items():
            operation.locator(f"tr[data-param-name='{name}'] input").fill(given)
        operation.locator("button.execute").click()

        live = operation.locator(".live-responses-table")
        status = live.locator("tbody .response-col_status")
        status.wait_for()
        assert status.inner_text().strip() == "200"
        body = live.locator("tbody .response-col_description .highlight-code code").first
        shown = json.loads(body.inner_text())
        assert shown == expected.json()
        assert (shown[0] if isinstance(shown, list) else shown)[field_name] == value
        assert operation.locator(".request-url pre").inner_text() == watched.origin + url
        assert f"Authorization: Bearer {bearer}" in operation.locator(".curl").inner_text()
        watched.assert_clean(page)

        # persistAuthorization: the token outlives the page (opened again, without the deep
        # link to the operation: Swagger UI warns on the console about underscores in those)
        page.goto(f"/{service}/docs", wait_until="networkidle")
        assert page.locator(".auth-wrapper button.authorize").get_attribute("class") == (
            "btn authorize locked"
        )
        watched.assert_clean(page)
    finally:
        page.context.close()
