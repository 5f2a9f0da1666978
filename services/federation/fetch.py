"""Reading the domains' published products, in Arrow, over one shared HTTP client."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa
import stamina
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from services.federation.cache import TableCache
from services.federation.resilience import (
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    CircuitBreaker,
    InvalidUpstream,
    RetryableStatus,
    retryable,
)
from services.federation.settings import SERVICE as MESH
from services.federation.settings import FederationSettings
from shared.errors import GatewayTimeout, Problem, ServiceUnavailable
from shared.reading.routes import posted_read_path
from shared.security.auth import (
    ON_BEHALF_OF,  # the end user a read is for: a domain limits per user
    AuthSettings,
    mint_token,
)
from shared.telemetry import metrics

_ARROW = "application/vnd.apache.arrow.stream"
_FORM = "application/x-www-form-urlencoded"
# answers that say the rows kept are current: a GET's 304, a POST read's 412 (RFC 9110)
_NOT_MODIFIED = (304, 412)
# a keyed read's body at most (the domains take 1 MiB by default: DATAMESH_MAX_BODY_BYTES)
MAX_KEY_BYTES = 512 * 1024

_JSON = "application/json"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ListedProduct(_Shape):
    name: str
    path: str


class _MetadataEntry(_Shape):
    kind: str
    path: str
    description: str
    row_count: int | None
    last_updated: str | None
    quality_score: float | None
    columns: list[Any]


class _Metadata(_Shape):
    owner: str
    description: str
    update_frequency: str
    data_classification: str
    measured_at: str
    tables: dict[str, _MetadataEntry]


# the JSON documents the mesh reads from a domain, by what it calls them, and their shape
JSON_SHAPES: dict[str, TypeAdapter[Any]] = {
    "product list": TypeAdapter(list[_ListedProduct]),
    "metadata": TypeAdapter(_Metadata),
    "quality": TypeAdapter(dict[str, Any]),
}


class UpstreamRateLimited(Problem):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


@dataclass(frozen=True)
class Fetched:
    """An input's rows, and the ETag its domain answered them with (None: not versioned)."""

    table: pa.Table
    tag: str | None


@dataclass(frozen=True)
class Keys:
    """The rows of an input that can matter to its metric, named by the metric's other inputs:
    `sql` (DuckDB, over the other inputs by their names) answers the values of the input's
    `column` that the metric can join; the mesh reads only the rows holding one of them (a
    semi-join pushed to the domain: a POST read, `column=in.(...)` in its body). The rows left out
    must not change the metric's answer: the Spark engine reads them all, and the tests
    compare both engines."""

    column: str
    sql: str


@dataclass(frozen=True)
class Input:
    """One domain product a metric reads: only the columns and rows it needs."""

    name: str
    domain: str
    product: str
    columns: tuple[str, ...]
    filters: tuple[tuple[str, str], ...] = ()
    since_column: str | None = None
    until_column: str | None = None
    until_is_timestamp: bool = False
    keys: Keys | None = None

    @property
    def lineage(self) -> str:
        """`domain/product`, as the metric catalogue names its inputs."""
        return f"{self.domain}/{self.product}"

    def row_filters(self, period: Period) -> list[tuple[str, str]]:
        """The rows the input reads, as PostgREST filters (`column`, `op.value`): its own and
        the period's. Both engines read these rows: pushed to the domain over HTTP, or applied
        to the lake's snapshot on Spark."""
        return [*self.filters, *_period_filters(self, period)]


class ServiceToken:
    """The mesh's own token for reading the domains: MESH_SERVICE_TOKEN if set, else minted
    from the local signing secret with read scopes only (never pii), renewed before it expires."""

    _TTL = dt.timedelta(hours=1)

    def __init__(self, settings: FederationSettings, auth: AuthSettings):
        self._configured = settings.service_token
        self._secret = auth.secret()
        self._auth = auth
        self._scopes = tuple(f"{name}:read" for name in settings.domains)
        self._token: str | None = None
        self._renew_at = 0.0

    def header(self) -> dict[str, str]:
        """The Authorization header of the mesh's requests to the domains."""
        if self._configured:
            return {"Authorization": f"Bearer {self._configured.get_secret_value()}"}
        if self._secret is None:
            return {}
        if self._token is None or time.monotonic() >= self._renew_at:
            self._token = mint_token(
                self._secret,
                self._scopes,
                ttl=self._TTL,
                subject="mesh",
                issuer=self._auth.jwt_issuer,
                audience=self._auth.jwt_audience,
            )
            self._renew_at = time.monotonic() + self._TTL.total_seconds() / 2
        return {"Authorization": f"Bearer {self._token}"}


class DomainRegistry:
    """The domains the mesh federates: their base URLs and their published products, read
    with retries (idempotent reads only) behind one circuit breaker per domain; every answer
    is checked before use (docs/operations.md)."""

    def __init__(
        self,
        settings: FederationSettings,
        client: httpx.AsyncClient,
        token: ServiceToken,
        cache: TableCache | None = None,
    ):
        self.settings = settings
        self.client = client
        self.token = token
        self.cache = cache  # the inputs read last, revalidated by their ETags
        self._paths: dict[str, tuple[float, dict[str, str]]] = {}
        self.circuits = {
            name: CircuitBreaker(
                name,
                threshold=settings.circuit_failure_threshold,
                cooldown=settings.circuit_cooldown_seconds,
            )
            for name in settings.domains
        }

    async def product_path(self, domain: str, product: str, caller: str | None = None) -> str:
        """The published path of a product, discovered from the domain's product list."""
        cached = self._paths.get(domain)
        if cached is None or time.monotonic() - cached[0] > self.settings.discovery_ttl_seconds:
            entries = await self.get_json(domain, "product list", f"/{domain}/v1", caller)
            cached = (time.monotonic(), {e["name"]: e["path"] for e in entries})
            self._paths[domain] = cached
        path = cached[1].get(product)
        if path is None:
            raise ServiceUnavailable(
                f"The {domain} domain does not publish the product '{product}' this metric reads.",
                domain=domain,
                product=product,
            )
        return path

    async def fetch(
        self,
        source: Input,
        period: Period,
        caller: str | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        """The input's rows as an Arrow table, its filters and columns pushed to the domain,
        read on behalf of `caller` (the end user's token subject); with `body` (key_filter's),
        only the rows whose `source.keys.column` is one of its keys (a POST read: the list is
        too long for a URL). Rows kept from the same read
        before are asked for with their ETag: a `304` (a POST's `412`) means they are current."""
        params = [("select", ",".join(source.columns)), *source.row_filters(period)]
        began = time.perf_counter()
        path = await self.product_path(source.domain, source.product, caller)
        method = "GET" if body is None else "POST"
        if body is not None:
            path = posted_read_path(path)
        digest = None if body is None else hashlib.sha256(body).hexdigest()
        key = (source.domain, path, tuple(params), digest)
        kept = self.cache.get(key) if self.cache is not None else None
        response = await self._request(
            source.domain,
            source.product,
            path,
            params,
            _ARROW,
            method,
            caller=caller,
            if_none_match=kept.tag if kept is not None else None,
            body=body,
        )
        if kept is not None and response.status_code in _NOT_MODIFIED:
            fetched, outcome = Fetched(kept.value, kept.tag), "not_modified"
        else:
            fetched = Fetched(_arrow_table(source, response), response.headers.get("etag"))
            outcome = "changed" if kept is not None else "read"
            if self.cache is not None:
                if fetched.tag is None:
                    self.cache.discard(key)
                else:
                    self.cache.put(key, fetched.tag, fetched.table)
        metrics.MESH_FETCH_DURATION.labels(MESH, source.domain, source.product).observe(
            time.perf_counter() - began
        )
        metrics.MESH_INPUT_READS.labels(MESH, source.domain, source.product, outcome).inc()
        return fetched

    async def fetch_all(
        self,
        inputs: Sequence[Input],
        period: Period,
        *,
        caller: str | None = None,
        bodies: Mapping[str, bytes | None] | None = None,
    ) -> dict[str, Fetched]:
        """Every input, concurrently (with its key filter's body, if given); the first failure
        cancels the others and is raised."""
        bodies = bodies or {}
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    i.name: group.create_task(self.fetch(i, period, caller, bodies.get(i.name)))
                    for i in inputs
                }
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None
        return {name: task.result() for name, task in tasks.items()}

    async def get_json(self, domain: str, what: str, path: str, caller: str | None = None) -> Any:
        """A JSON document a domain serves, checked against its shape (JSON_SHAPES[what]);
        problems name the domain and `what`."""
        response = await self._request(domain, what, path, [], _JSON, caller=caller)
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != _JSON:
            raise _invalid(domain, what, f"its content type is '{media or 'none'}', not {_JSON}")
        try:
            document = response.json()
        except ValueError:
            raise _invalid(domain, what, "its body is not JSON") from None
        shape = JSON_SHAPES.get(what)
        if shape is not None:
            try:
                shape.validate_python(document)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "the document"
                raise _invalid(domain, what, f"{where}: {first['msg']}") from None
        return document

    async def _request(
        self,
        domain: str,
        product: str,
        path: str,
        params: Sequence[tuple[str, str]],
        accept: str,
        method: str = "GET",
        *,
        caller: str | None = None,
        if_none_match: str | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        """One read of a domain, tried again on a connect error, a read timeout or a
        502/503/504 (idempotent methods only, and reads: a POST read too), each try through the
        domain's circuit. With `if_none_match`, a `304 Not Modified` (a POST read's `412`) is an
        answer too."""
        base = self.settings.domains.get(domain)
        if base is None:
            raise ServiceUnavailable(
                f"No base URL is registered for the {domain} domain (MESH_DOMAINS).", domain=domain
            )
        headers = {"Accept": accept, **self.token.header()}
        if caller is not None:
            headers[ON_BEHALF_OF] = caller
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        if body is not None:
            headers["Content-Type"] = _FORM
        try:
            return await self._retried(domain, product, method, base + path, params, headers, body)
        except Problem as failure:
            metrics.MESH_FETCH_FAILURES.labels(MESH, domain, failure.code).inc()
            raise

    async def _retried(
        self,
        domain: str,
        product: str,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> httpx.Response:
        settings = self.settings
        # a POST read changes nothing: tried again like a GET
        reads = method in IDEMPOTENT_METHODS or body is not None
        attempts = settings.retry_attempts if reads else 1
        try:
            async for attempt in stamina.retry_context(
                on=retryable,
                attempts=attempts,
                timeout=settings.retry_budget_seconds,
                wait_initial=settings.retry_initial_seconds,
                wait_max=settings.retry_max_seconds,
                wait_jitter=settings.retry_jitter_seconds,
            ):
                if attempt.num > 1:
                    metrics.MESH_FETCH_RETRIES.labels(MESH, domain).inc()
                with attempt:
                    return await self._attempt(domain, product, method, url, params, headers, body)
        except httpx.TimeoutException:
            raise GatewayTimeout(
                f"The {domain} domain did not answer for '{product}' within "
                f"{settings.read_timeout_seconds:g}s.",
                domain=domain,
                product=product,
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"The {domain} domain is unreachable for '{product}' ({type(exc).__name__}).",
                headers={"Retry-After": "5"},
                domain=domain,
                product=product,
            ) from None
        except RetryableStatus as failure:
            raise _upstream_error(domain, product, failure.response) from None
        raise AssertionError("unreachable: stamina either returns or raises")

    async def _attempt(
        self,
        domain: str,
        product: str,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> httpx.Response:
        circuit = self.circuits[domain]
        circuit.before_call(product)
        try:
            response = await self.client.request(
                method,
                url,
                params=httpx.QueryParams(list(params)),
                headers=headers,
                content=body,
            )
        except httpx.HTTPError as exc:
            circuit.failed(type(exc).__name__)
            raise
        except BaseException:
            circuit.abandoned()
            raise
        if response.status_code >= 500:
            circuit.failed(f"HTTP {response.status_code}")
            if response.status_code in RETRYABLE_STATUSES:
                raise RetryableStatus(response)
        else:
            circuit.succeeded()
        if response.status_code in _NOT_MODIFIED and "If-None-Match" in headers:
            return response
        if response.status_code != 200:
            raise _upstream_error(domain, product, response)
        return response


def key_filter(source: Input, keys: Sequence[Any]) -> bytes | None:
    """The form body of a keyed read (`column=in.(k1,k2,...)`, parentheses and commas left as
    they are: a form parser takes them so), or None to read every row: more keys than a body
    may carry (MAX_KEY_BYTES)."""
    assert source.keys is not None
    listed = ",".join(_listed(k) for k in keys)
    body = f"{quote(source.keys.column)}={quote(f'in.({listed})', safe='(),')}".encode()
    return body if len(body) <= MAX_KEY_BYTES else None


_PLAIN = re.compile(r'[^,()" \\]+')


def _listed(value: Any) -> str:
    """A value in a PostgREST `in.(...)` list: quoted if it holds a reserved character."""
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _upstream_error(domain: str, product: str, response: httpx.Response) -> Problem:
    detail = response.text[:300]
    if response.status_code == 429:
        # the caller's own quota at the domain (the mesh reads on its behalf): theirs to wait
        retry = response.headers.get("retry-after", "60")
        try:
            problem = response.json()
        except ValueError:
            problem = None
        why = str(problem.get("code")) if isinstance(problem, dict) else "rate_limited"
        return UpstreamRateLimited(
            f"The {domain} domain refused more reads of '{product}' on this caller's behalf "
            f"({why}: its limit per caller); retry in {retry} s.",
            headers={"Retry-After": retry},
            domain=domain,
            product=product,
            upstream_status=429,
        )
    return ServiceUnavailable(
        f"The {domain} domain answered {response.status_code} for '{product}': {detail}",
        headers={"Retry-After": "5"},
        domain=domain,
        product=product,
        upstream_status=response.status_code,
    )


def _invalid(domain: str, product: str, why: str) -> InvalidUpstream:
    return InvalidUpstream(
        f"The {domain} domain's answer for '{product}' is not valid: {why}.",
        domain=domain,
        product=product,
    )


def _arrow_table(source: Input, response: httpx.Response) -> pa.Table:
    """The Arrow stream of an answer, checked: its content type, a whole stream (with its end
    marker) and every column asked for."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _ARROW:
        raise _invalid(
            source.domain, source.product, f"its content type is '{media or 'none'}', not {_ARROW}"
        )
    try:
        table = pa.ipc.open_stream(response.content).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _invalid(
            source.domain, source.product, f"its body is not an Arrow stream ({exc})"
        ) from None
    missing = [c for c in source.columns if c not in table.column_names]
    if missing:
        raise _invalid(source.domain, source.product, f"it lacks the columns {', '.join(missing)}")
    return table


@dataclass(frozen=True)
class Period:
    """The days a metric is about: `since` and `until` inclusive, either open."""

    since: dt.date | None = None
    until: dt.date | None = None


def _period_filters(source: Input, period: Period) -> list[tuple[str, str]]:
    filters: list[tuple[str, str]] = []
    if source.since_column and period.since:
        filters.append((source.since_column, f"gte.{period.since.isoformat()}"))
    if source.until_column and period.until:
        if source.until_is_timestamp:  # a timestamp is within the day if before the next one
            next_day = period.until + dt.timedelta(days=1)
            filters.append((source.until_column, f"lt.{next_day.isoformat()}"))
        else:
            filters.append((source.until_column, f"lte.{period.until.isoformat()}"))
    return filters
