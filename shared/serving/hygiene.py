"""What every service does around each request: a rate limit per caller, a cap on the request
body, CORS for configured origins only, security headers on every response, and one structured
access-log line that names the caller but never carries a token or a value from a query."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import sys
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PROBLEM_CODE, Problem, problem_response
from shared.reading.formats import MEDIA_TYPES
from shared.security.auth import Principal, TokenVerifier, caller_of, verified_principal
from shared.serving.rate_limits import CallerLimits
from shared.settings import ServiceSettings
from shared.telemetry import metrics

API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=63072000; includeSubDomains"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# what a browser may read from a cross-origin answer besides the CORS-safelisted headers
EXPOSED_HEADERS = [
    "Content-Range",
    "Content-Disposition",
    "Link",
    "Location",
    "Preference-Applied",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "ETag",  # writes (shared.writing.routes): a row's entity tag, whether a response is replayed
    "Idempotent-Replayed",
    # the mesh's answers: the engine that computed them, the lake snapshots read, their age
    "DataMesh-Engine",
    "DataMesh-Snapshots",
    "DataMesh-Snapshot-Age-Seconds",
]
# the framework's own OpenAPI tags; any other tag of a route is the product it reads
_FRAMEWORK_TAGS = {"health", "catalogue", "quality", "contracts"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
_CONTENT_RANGE = re.compile(r"(\d+)-(\d+)/")

_CALLER = "datamesh.rate_limited_caller"
_ON_BEHALF_OF = "datamesh.on_behalf_of"
METRICS_PATH = "/metrics"
# a response's media type -> the format label of its rows and bytes
_FORMATS = {media.split(";")[0]: str(name) for name, media in MEDIA_TYPES.items()}

access_log = logging.getLogger("datamesh.access")
_PID = os.getpid()  # a worker is a process started anew (serve_workers), never a fork


def rate_limit_for(declared: int, settings: ServiceSettings) -> int:
    """Requests per minute a caller may make to a service: its declared rate (a domain's in its
    declaration, the mesh's in its settings) unless the settings say otherwise (0: unlimited)."""
    if settings.rate_limit_per_minute is not None:
        return settings.rate_limit_per_minute
    return declared


class RateLimited(Problem):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ContentTooLarge(Problem):
    status = 413
    code = "content_too_large"
    title = "Content too large"

    def __init__(self, limit: int):
        super().__init__(
            f"The request body is larger than the limit of {limit} bytes.", limit_bytes=limit
        )


class RequestTimeout(Problem):
    status = 408
    code = "request_timeout"
    title = "Request timeout"

    def __init__(self, seconds: float):
        super().__init__(
            f"The request body stopped arriving: nothing came for {seconds:g} s "
            "(DATAMESH_BODY_TIMEOUT_SECONDS).",
            headers={"Connection": "close"},  # the rest of the body is not waited for
            timeout_seconds=seconds,
        )


class InternalError(Problem):
    status = 500
    code = "internal_error"
    title = "Internal error"


def install_hygiene(
    app: FastAPI, service: str, settings: ServiceSettings, *, rate_limit_per_minute: int
) -> None:
    """Wrap the app: security headers and access log outermost, then CORS (when origins are
    configured), then the rate limit (the service's declared one, unless the settings say
    otherwise) and the body cap, then the app itself."""
    app.add_middleware(
        RequestLimits,
        per_minute=rate_limit_for(rate_limit_per_minute, settings),
        windows=CallerLimits(service, rate_limit_for(rate_limit_per_minute, settings), settings),
        max_body_bytes=settings.max_body_bytes,
        mesh_subjects=frozenset(settings.mesh_subjects),
        body_timeout=settings.body_timeout_seconds,
        unlimited_paths=(f"/{service}/healthz", f"/{service}/readyz", METRICS_PATH),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "PUT", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Accept",
                "Content-Type",
                "Prefer",
                *("Idempotency-Key", "If-Match", "If-None-Match"),  # writes
            ],
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=False,  # bearer tokens, never cookies
            max_age=600,
        )
    app.add_middleware(ResponseHygiene, service=service, measured=settings.metrics_enabled)
    _log_to_stdout()


class RequestLimits:
    """Refuse a caller over its rate (429), a body over the cap (413) and a body that stops
    arriving (408: nothing for `body_timeout` seconds).

    The caller is the subject of a valid bearer token, verified here with the service's own
    verifier; without a valid token it is the client address, so floods of 401s are bounded
    too. The moving windows are counted in the configured store (`windows`: each process's
    memory, or one that every worker and replica shares: shared.serving.rate_limits). The health
    endpoints (`unlimited_paths`) are never limited: an orchestrator's probes must not see a
    429."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        windows: CallerLimits,
        max_body_bytes: int,
        mesh_subjects: frozenset[str] = frozenset(),
        body_timeout: float = 0.0,
        unlimited_paths: tuple[str, ...] = (),
    ):
        self.app = app
        self.mesh_subjects = mesh_subjects
        self.windows = windows if per_minute else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.unlimited_paths = frozenset(unlimited_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.windows is not None and scope["path"] not in self.unlimited_paths:
            caller, who = await _caller(scope, self.mesh_subjects)
            counted = await self.windows.hit(caller)
            stats, limit = counted.stats, counted.item.amount
            # the moving window frees a slot once its oldest hit is more than a minute old
            reset = int(stats.reset_time - time.time()) + 1
            quota = {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(max(stats.remaining, 0)),
                "RateLimit-Reset": str(reset),
            }
            if not counted.allowed:
                problem = RateLimited(
                    f"More than {limit} requests in a minute from {who}; retry in {reset} s.",
                    headers={**quota, "Retry-After": str(reset)},
                    limit=limit,
                    retry_after_seconds=reset,
                )
                await problem_response(problem, Request(scope))(scope, receive, send)
                return
            send = _adding_headers(send, quota)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._capped(receive), sending)
        except (ContentTooLarge, RequestTimeout) as problem:
            if started:
                raise
            await self._refuse_body(problem, scope, receive, send)

    def _capped(self, receive: Receive) -> Receive:
        """The body as the app reads it, refused once it passes the cap (chunked bodies have
        no Content-Length to check up front) or when its next part does not come within the
        body timeout. Once the body is whole, messages pass untouched (a stream's wait for the
        client to disconnect is no body read)."""
        received = 0
        whole = False

        async def capped() -> Message:
            nonlocal received, whole
            if whole or not self.body_timeout:
                message = await receive()
            else:
                try:
                    async with asyncio.timeout(self.body_timeout):
                        message = await receive()
                except TimeoutError:
                    raise RequestTimeout(self.body_timeout) from None
            if message["type"] == "http.request":
                whole = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise ContentTooLarge(self.max_body_bytes)
            return message

        return capped

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse_body(ContentTooLarge(self.max_body_bytes), scope, receive, send)

    async def _refuse_body(
        self, problem: Problem, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = problem_response(problem, Request(scope))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


async def _caller(scope: Scope, mesh_subjects: frozenset[str]) -> tuple[str, str]:
    """The rate-limit key of the request's caller and how to name it in a message (the mesh's
    reads count per end user: shared.security.auth.caller_of)."""
    principal = await _principal(scope)
    scope[_CALLER] = principal  # for the access line of a request refused here
    client = scope.get("client")
    caller = caller_of(
        principal, Headers(scope=scope), client[0] if client else None, mesh_subjects
    )
    if caller.on_behalf_of is not None:
        scope[_ON_BEHALF_OF] = caller.on_behalf_of
    return caller.key, caller.name


async def _principal(scope: Scope) -> Principal | None:
    """The principal of the request's bearer token if it is valid. The route's scope check
    verifies it again (cheap: the key is in memory, or cached from the JWKS) and answers 401
    or 503 itself when it is not."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    verifier: TokenVerifier | None = getattr(scope["app"].state, "token_verifier", None)
    if scheme.lower() != "bearer" or not token.strip() or verifier is None:
        return None
    try:
        if verifier.fetches_keys:
            return await run_in_threadpool(verifier.verify, token.strip())
        return verifier.verify(token.strip())
    except Problem:
        return None


def _adding_headers(send: Send, headers: dict[str, str]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            response_headers = MutableHeaders(scope=message)
            for name, value in headers.items():
                response_headers.setdefault(name, value)
        await send(message)

    return sending


class ResponseHygiene:
    """Security headers on every response (errors and docs included) and one access-log line
    per request. An error no handler took still gets its problem+json 500 with the headers
    here; the exception goes on to the app's error handler, which logs it."""

    def __init__(self, app: ASGIApp, *, service: str, measured: bool = True):
        self.app = app
        self.service = service
        self.measured = measured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        response = _ResponseSeen(scope, send)
        try:
            await self.app(scope, receive, response.send)
        except Exception:
            if not response.started:
                problem = InternalError("The service failed to answer; the error was logged.")
                await problem_response(problem, Request(scope))(scope, receive, response.send)
            raise
        finally:
            seconds = time.perf_counter() - began
            entry = _access_entry(self.service, scope, response, seconds * 1000)
            access_log.info(json.dumps(entry, separators=(",", ":")), extra={"access": entry})
            if self.measured:
                _measure(self.service, scope, response, seconds, entry)


class _ResponseSeen:
    """The response on its way out: headers added, HTML held until its CSP can be computed,
    status and size noted for the access log."""

    def __init__(self, scope: Scope, send: Send):
        self.scope = scope
        self._send = send
        self.started = False
        self.status = 0
        self.bytes = 0
        self.headers: Headers = Headers()
        self._held: Message | None = None
        self._html: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            headers = MutableHeaders(scope=message)
            _secure(headers, https=self.scope.get("scheme") == "https")
            self.headers = Headers(raw=list(message["headers"]))
            if headers.get("content-type", "").startswith("text/html"):
                self._held = message  # its CSP depends on the page's scripts
                return
            await self._send(message)
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.bytes += len(body)
            if self._held is None:
                await self._send(message)
                return
            self._html.append(body)
            if message.get("more_body", False):
                return
            page = b"".join(self._html)
            headers = MutableHeaders(scope=self._held)
            headers["Content-Security-Policy"] = page_csp(page.decode("utf-8", "replace"))
            self.headers = Headers(raw=list(self._held["headers"]))
            await self._send(self._held)
            self._held = None
            await self._send({"type": "http.response.body", "body": page, "more_body": False})
        else:
            await self._send(message)


def _secure(headers: MutableHeaders, *, https: bool) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    headers["Content-Security-Policy"] = API_CSP
    headers.setdefault("Cache-Control", "no-store")
    if https:
        headers["Strict-Transport-Security"] = HSTS


class _PageAssets(HTMLParser):
    """The scripts, stylesheets and icons an HTML page loads, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.images: list[str] = []
        self.inline: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "script":
            if attributes.get("src"):
                self.scripts.append(attributes["src"])
            else:
                self._in_inline_script = True
                self.inline.append("")
        elif tag == "link" and attributes.get("href"):
            relations = attributes.get("rel", "").lower().split()
            if "stylesheet" in relations:
                self.styles.append(attributes["href"])
            elif "icon" in relations:
                self.images.append(attributes["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline[-1] += data


def page_csp(html: str) -> str:
    """The Content-Security-Policy of one of the framework's HTML pages (the Swagger UI docs):
    the scripts, stylesheets and icons the page names (another origin's by exact URL, this
    origin's as 'self'), its inline scripts by hash, the OpenAPI document and "Try it out"
    calls on this origin, and the data: SVGs Swagger UI draws its icons with; nothing else
    (tests/test_docs_browser.py: no violation in Chromium on load, authorizing and executing)."""
    assets = _PageAssets()
    assets.feed(html)
    assets.close()
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in assets.inline
    ]
    directives = {
        "default-src": ["'none'"],
        "script-src": [*_sources(assets.scripts), *hashes] or ["'none'"],
        "style-src": _sources(assets.styles) or ["'none'"],
        "img-src": [*_sources(assets.images), "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def _sources(urls: list[str]) -> list[str]:
    """CSP source expressions for the URLs a page names, each once: an absolute URL is its own
    source; a path is no valid source expression, and is the page's origin, 'self'."""
    sources = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme:
            sources.append(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        elif parts.netloc:  # //host/path: the page's scheme
            sources.append(parts.netloc + parts.path)
        else:
            sources.append("'self'")
    return list(dict.fromkeys(sources))


def _access_entry(
    service: str, scope: Scope, response: _ResponseSeen, duration_ms: float
) -> dict[str, Any]:
    principal = verified_principal(scope) or scope.get(_CALLER)
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "service": service,
        "pid": _PID,  # which worker of the service answered (`--workers N`)
        "method": scope["method"],
        "path": _safe_path(scope["path"]),
        # parameter names only: values can be PII (a filter on an email)
        "params": _parameter_names(scope.get("query_string", b"")),
        "status": response.status or None,  # None: the client went away before an answer
        "duration_ms": round(duration_ms, 1),
        "subject": principal.subject if principal else None,
        "on_behalf_of": scope.get(_ON_BEHALF_OF),
        "scopes": sorted(principal.scopes) if principal else [],
        "product": _product(scope),
        "rows": _rows(scope, response),
        "bytes": 0 if scope["method"] == "HEAD" else response.bytes,
    }


def _safe_path(path: str) -> str:
    """The path with any segment that is not a plain name or key (say an email typed into a
    URL) replaced by '*'."""
    return "/".join(s if not s or _PATH_SEGMENT.fullmatch(s) else "*" for s in path.split("/"))


def _parameter_names(query_string: bytes) -> list[str]:
    names: list[str] = []
    for pair in query_string.decode("latin-1").split("&"):
        name = pair.partition("=")[0]
        if not name:
            continue
        name = name if _NAME.fullmatch(name) else "*"
        if name not in names:
            names.append(name)
    return names


def _product(scope: Scope) -> str | None:
    """The product (or metric) the matched route reads, if it reads one."""
    named = scope.get("path_params", {}).get("product")
    if isinstance(named, str):
        return named if _PATH_SEGMENT.fullmatch(named) else "*"
    tags = getattr(scope.get("route"), "tags", None) or []
    if tags and tags[0] not in _FRAMEWORK_TAGS:
        return str(tags[0])
    return None


def _rows(scope: Scope, response: _ResponseSeen) -> int | None:
    """Rows in the answer when known: as a handler noted them (`scope[metrics.ROWS_NOTE]`), or from a JSON
    page's Content-Range."""
    if isinstance(scope.get(metrics.ROWS_NOTE), int):
        return int(scope[metrics.ROWS_NOTE])
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    span = response.headers.get("content-range", "")
    if match := _CONTENT_RANGE.match(span):
        return int(match.group(2)) - int(match.group(1)) + 1
    return 0 if span.startswith("*/") else None


def _measure(
    service: str, scope: Scope, response: _ResponseSeen, seconds: float, entry: dict[str, Any]
) -> None:
    """Count the request in the service's metrics: by route template (never the raw path),
    rows and bytes by product and format for reads, writes by outcome."""
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    method, status = scope["method"], response.status
    metrics.child(metrics.HTTP_REQUESTS, service, template, method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, service, template, method).observe(seconds)
    product = entry["product"]
    if product is None or status >= 400 or not status:
        if product is not None and status >= 400 and _is_write(route):
            reason = str(scope.get(PROBLEM_CODE) or status)
            metrics.child(metrics.WRITES, service, product, _operation(route), "refused").inc()
            metrics.child(metrics.WRITE_REFUSALS, service, product, reason).inc()
        return
    if _is_write(route):
        replayed = response.headers.get("idempotent-replayed") == "true"
        outcome = "replayed" if replayed else "accepted"
        metrics.child(metrics.WRITES, service, product, _operation(route), outcome).inc()
    elif method in ("GET", "HEAD"):
        media = response.headers.get("content-type", "").split(";")[0].strip()
        kind = _FORMATS.get(media)
        if kind is not None:
            metrics.child(metrics.ROWS_SERVED, service, product, kind).inc(entry["rows"] or 0)
            metrics.child(metrics.BYTES_SERVED, service, product, kind).inc(entry["bytes"])


def _is_write(route: Any) -> bool:
    return "x-write" in (getattr(route, "openapi_extra", None) or {})


def _operation(route: Any) -> str:
    """A write route's operation, the first word of its name (`create_orders`: create)."""
    return str(getattr(route, "name", "") or "write").split("_")[0]


class _Stdout(logging.StreamHandler[Any]):
    """Writes to whatever sys.stdout is at the time (as logging's last-resort handler does
    with stderr), so a replaced stdout never leaves it writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_to_stdout() -> None:
    """Access lines go to stdout unless logging was configured for them already."""
    if not access_log.handlers:
        access_log.addHandler(_Stdout())
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.INFO)
