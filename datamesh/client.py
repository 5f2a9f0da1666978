"""A small Python client of DataMesh for notebooks: products and metrics as pandas DataFrames.

    from datamesh import Mesh

    mesh = Mesh()  # DATAMESH_URL (default http://127.0.0.1:8000) and DATAMESH_TOKEN
    clv = mesh.read("sales", "customer-lifetime-value", order="lifetime_value.desc", limit=10)
    roi = mesh.metric("campaign-roi", since="2024-06-01")

Reads ask for Arrow (`Accept: application/vnd.apache.arrow.stream`), which carries every
column's type, and convert it to pandas: integers stay integers (nullable `Int32`/`Int64` when
a column holds nulls), dates become `datetime64[us]`, timestamps `datetime64[us, UTC]`, money
and decimals `float64` (or `decimal.Decimal` objects, exactly, with `exact=True`). An Arrow read
returns the whole result in one streamed answer (or `limit` rows); `page_size=` reads it instead
in JSON pages, following the keyset cursor of each page's `Link: rel="next"` header, and
`pages()` yields those pages one by one. See docs/client.md.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow as pa
import pyarrow.compute as pc

try:
    import pandas as pd
except ModuleNotFoundError as missing:  # pragma: no cover - the services' image has no pandas
    raise ModuleNotFoundError(
        "The DataMesh client returns pandas DataFrames: pip install 'datamesh[client]'"
    ) from missing

__all__ = ["DataMeshError", "Mesh"]

ARROW = "application/vnd.apache.arrow.stream"
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PAGE_SIZE = 10_000  # the services' largest JSON page
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_OPTIONS = ("select", "order", "limit", "offset")
_RESERVED = (*_OPTIONS, "cursor", "format")

FilterValue = str | Sequence[str]
Filters = Mapping[str, FilterValue]


class DataMeshError(Exception):
    """A read that failed: the service's problem+json (RFC 9457) or why no answer came.

    `status` is the HTTP status (None when no answer came: unreachable, cut-off stream, no
    token), `title`, `detail` and `code` are the problem's, `problem` is its whole body (it
    may name the offending `parameter`, `value`, `scope`, ...), `url` the URL read.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        code: str | None = None,
        problem: Mapping[str, Any] | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.problem: dict[str, Any] = dict(problem or {})
        self.url = url
        self.retry_after = retry_after
        head = " ".join(str(part) for part in (status, title) if part)
        super().__init__(f"{head}: {detail}" if head else detail)

    @classmethod
    def from_response(cls, response: httpx.Response) -> DataMeshError:
        """The error of a non-2xx answer (its body must have been read)."""
        problem: dict[str, Any] = {}
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                problem = body
        detail = problem.get("detail") or response.text.strip()[:500] or response.reason_phrase
        retry_after = response.headers.get("retry-after")
        return cls(
            str(detail),
            status=response.status_code,
            title=problem.get("title") or response.reason_phrase,
            code=problem.get("code"),
            problem=problem,
            url=str(response.request.url),
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )


class Mesh:
    """A client of one DataMesh: the mesh's metrics and catalog, and every domain's products.

    `url` is the mesh's base URL (`http://127.0.0.1:8000`; a trailing `/mesh` is accepted),
    else `DATAMESH_URL`, else `http://127.0.0.1:8000` (where `datamesh up` serves it). `token`
    is a bearer token, else `DATAMESH_TOKEN`; without one, `Mesh()` raises a DataMeshError
    saying how to get one (`datamesh token --persona analyst`).

    The domains are separate services; their base URLs come from `domains` (`{"sales":
    "http://127.0.0.1:8001", ...}`), else `DATAMESH_DOMAINS` (the same, as JSON), else the
    mesh's own registry, read once from its catalog (`GET /mesh/v1/catalog`, which needs
    `mesh:read`). "mesh" names the mesh itself: `read("mesh", "campaign-roi")` is a metric.

    `timeout` bounds connecting (at most 10 s) and each read between two chunks of an answer,
    in seconds; `transport` replaces httpx's (for tests).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        domains: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("DATAMESH_TOKEN")
        token = (token or "").strip().removeprefix("Bearer ").strip()
        if not token:
            raise DataMeshError(
                "No token: pass Mesh(token=...) or set DATAMESH_TOKEN, e.g. "
                "`export DATAMESH_TOKEN=$(datamesh token --persona analyst)` "
                "(see the README's Tokens)."
            )
        self.url = _base_url(url or os.environ.get("DATAMESH_URL") or DEFAULT_URL, "mesh")
        if domains is None and os.environ.get("DATAMESH_DOMAINS"):
            domains = _domains_from_env(os.environ["DATAMESH_DOMAINS"])
        self._domains: dict[str, str] | None = (
            None if domains is None else {n: _base_url(u, n) for n, u in domains.items()}
        )
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Mesh({self.url!r})"

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # --- where things are ---------------------------------------------------------------

    @property
    def domains(self) -> dict[str, str]:
        """Each domain's base URL: as given, from DATAMESH_DOMAINS, or from the mesh catalog."""
        if self._domains is None:
            try:
                catalog = self._json(f"{self.url}/mesh/v1/catalog")
            except DataMeshError as error:
                raise DataMeshError(
                    f"Could not locate the domains from the mesh catalog: {error.detail} Give "
                    "their URLs instead: Mesh(domains={'sales': 'http://127.0.0.1:8001', ...}) "
                    "or DATAMESH_DOMAINS as JSON.",
                    status=error.status,
                    title=error.title,
                    code=error.code,
                    problem=error.problem,
                    url=error.url,
                ) from error
            self._domains = {d["name"]: _base_url(d["url"], d["name"]) for d in catalog["domains"]}
        return dict(self._domains)

    def _service(self, domain: str) -> str:
        _check_name(domain, "domain")
        if domain == "mesh":
            return self.url
        known = self.domains
        if domain not in known:
            raise DataMeshError(f"Unknown domain '{domain}'; known: {', '.join(sorted(known))}.")
        return known[domain]

    def _product_url(self, domain: str, product: str) -> str:
        _check_name(product, "product")
        return f"{self._service(domain)}/{domain}/v1/{product}"

    # --- data ---------------------------------------------------------------------------

    def read(
        self,
        domain: str,
        product: str,
        /,
        *,
        select: str | Sequence[str] | None = None,
        order: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        filters: Filters | None = None,
        exact: bool = False,
        page_size: int | None = None,
        **column_filters: FilterValue,
    ) -> pd.DataFrame:
        """A domain's data product as a DataFrame.

        Filters use the PostgREST grammar as keyword arguments or a dict, ANDed:
        `country="eq.USA"`, `filters={"total_amount": "gt.50000"}`; a list repeats a column
        (`total_amount=["gte.10", "lt.20"]`). `select` (a list or "a,b"), `order`
        ("lifetime_value.desc" or a list), `limit` and `offset` as in docs/reading.md.
        Without `limit`, every matching row. Money and decimals are float64, or
        decimal.Decimal with `exact=True`.

        By default one Arrow request answers the whole read. With `page_size`, the rows are
        read in JSON pages of that size, following each page's `Link: rel="next"` keyset
        cursor until the last page (or `limit` rows): the same DataFrame, in several requests.
        """
        url = self._product_url(domain, product)
        params = _params(select, order, offset, filters, column_filters)
        if page_size is None:
            if limit is not None:
                params.append(("limit", str(_count(limit, "limit"))))
            return self._arrow(url, params, exact)
        limit = None if limit is None else _count(limit, "limit")
        return _concat(list(self._pages(url, params, page_size, exact, limit)))

    def pages(
        self,
        domain: str,
        product: str,
        /,
        *,
        page_size: int = 1000,
        select: str | Sequence[str] | None = None,
        order: str | Sequence[str] | None = None,
        filters: Filters | None = None,
        exact: bool = False,
        **column_filters: FilterValue,
    ) -> Iterator[pd.DataFrame]:
        """A product's rows page by page (JSON pages of `page_size` rows, at most 10,000,
        each a DataFrame typed like `read`'s), following the keyset cursor: for results too
        large to hold at once. Pages never lose or repeat a row, however deep."""
        url = self._product_url(domain, product)
        params = _params(select, order, None, filters, column_filters)
        return self._pages(url, params, page_size, exact, None)

    def metric(
        self,
        name: str,
        /,
        *,
        since: dt.date | str | None = None,
        until: dt.date | str | None = None,
        select: str | Sequence[str] | None = None,
        order: str | Sequence[str] | None = None,
        limit: int | None = None,
        filters: Filters | None = None,
        exact: bool = False,
        **column_filters: FilterValue,
    ) -> pd.DataFrame:
        """A cross-domain metric of the mesh (`/mesh/v1/<name>`, docs/mesh.md) as a DataFrame.

        `since` and `until` (dates, inclusive) bound the period; filters, `select`, `order`
        and `limit` as in `read`."""
        params = _params(select, order, None, filters, column_filters)
        for key, value in (("since", since), ("until", until)):
            if value is not None:
                params.append((key, _iso_date(value, key)))
        if limit is not None:
            params.append(("limit", str(_count(limit, "limit"))))
        return self._arrow(self._product_url("mesh", name), params, exact)

    def count(
        self,
        domain: str,
        product: str,
        /,
        *,
        filters: Filters | None = None,
        **column_filters: FilterValue,
    ) -> int:
        """How many rows of the product match the filters (`Prefer: count=exact`)."""
        params = [*_params(None, None, None, filters, column_filters), ("limit", "0")]
        response = self._get(
            self._product_url(domain, product), params, headers={"Prefer": "count=exact"}
        )
        total = response.headers.get("content-range", "").rpartition("/")[2]
        if not total.isdigit():
            raise DataMeshError(
                f"The answer has no exact count (Content-Range: "
                f"{response.headers.get('content-range')!r}).",
                url=str(response.url),
            )
        return int(total)

    # --- what there is ------------------------------------------------------------------

    def catalog(self, q: str | None = None) -> dict[str, Any]:
        """The mesh catalog (docs/catalog.md): every domain with its products (owner,
        classification, row count, freshness, quality score, contract URL, columns) and every
        metric with its inputs; `q` keeps what mentions the word."""
        catalog: dict[str, Any] = self._json(
            f"{self.url}/mesh/v1/catalog", [("q", q)] if q else None
        )
        return catalog

    def metrics(self) -> list[dict[str, Any]]:
        """The mesh's metrics: description, definition, output columns and inputs."""
        metrics: list[dict[str, Any]] = self._json(f"{self.url}/mesh/v1/metrics")
        return metrics

    def products(self, domain: str) -> list[dict[str, Any]]:
        """A domain's products with their columns (`GET /<domain>/v1`)."""
        products: list[dict[str, Any]] = self._json(f"{self._service(domain)}/{domain}/v1")
        return products

    def metadata(self, domain: str) -> dict[str, Any]:
        """A domain's live metadata: owner, classification, and per product row count,
        freshness, quality score and columns (docs/catalog.md)."""
        metadata: dict[str, Any] = self._json(f"{self._service(domain)}/{domain}/v1/metadata")
        return metadata

    def contract(self, domain: str, product: str) -> dict[str, Any]:
        """A product's ODCS v3 data contract (docs/contracts.md), as a dict."""
        _check_name(product, "product")
        url = f"{self._service(domain)}/{domain}/v1/products/{product}/contract"
        contract: dict[str, Any] = self._json(url, headers={"Accept": "application/json"})
        return contract

    def quality(self, domain: str | None = None) -> dict[str, Any]:
        """A domain's latest quality run (docs/quality.md), or with no domain the mesh's
        overview of every domain's."""
        if domain is None:
            overview: dict[str, Any] = self._json(f"{self.url}/mesh/v1/quality")
            return overview
        run: dict[str, Any] = self._json(f"{self._service(domain)}/{domain}/v1/quality")
        return run

    # --- HTTP ---------------------------------------------------------------------------

    def _get(
        self,
        url: str,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.get(url, params=tuple(params or ()), headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_error(url, exc) from exc
        if response.is_error:
            raise DataMeshError.from_response(response)
        return response

    def _json(
        self,
        url: str,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self._get(url, params, headers).json()

    def _arrow(self, url: str, params: list[tuple[str, str]], exact: bool) -> pd.DataFrame:
        request = self._http.build_request(
            "GET", url, params=tuple(params), headers={"Accept": ARROW}
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(url, exc) from exc
        try:
            if response.is_error:
                response.read()
                raise DataMeshError.from_response(response)
            kind = response.headers.get("content-type", "")
            if not kind.startswith(ARROW):
                raise DataMeshError(
                    f"Expected an Arrow stream, got {kind!r}.", url=str(request.url)
                )
            try:
                body = io.BufferedReader(_Chunks(response.iter_bytes()), buffer_size=1 << 16)
                table = pa.ipc.open_stream(body).read_all()
            except httpx.HTTPError as exc:
                raise DataMeshError(
                    f"The answer ended before its end ({type(exc).__name__}): the read was cut "
                    "off; try again (docs/operations.md).",
                    url=str(request.url),
                ) from exc
            except pa.ArrowInvalid as exc:
                raise DataMeshError(
                    f"The answer is not a whole Arrow stream: {exc}", url=str(request.url)
                ) from exc
        finally:
            response.close()
        frame = _frame(table, exact)
        masked = response.headers.get("masked-columns")
        if masked:
            frame.attrs["masked_columns"] = [c.strip() for c in masked.split(",")]
        return frame

    def _pages(
        self,
        url: str,
        params: list[tuple[str, str]],
        page_size: int,
        exact: bool,
        limit: int | None,
    ) -> Iterator[pd.DataFrame]:
        size = _count(page_size, "page_size")
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, not {page_size}")
        # the columns' types: an Arrow read of no row with the same parameters (which also
        # checks them before the first page)
        schema = self._arrow_schema(url, params)

        def generate() -> Iterator[pd.DataFrame]:
            if limit == 0:
                yield _frame(schema.empty_table(), exact)
                return
            cursor: str | None = None
            seen = 0
            while True:
                wanted = size if limit is None else min(size, limit - seen)
                page_params = [*params, ("limit", str(wanted))]
                if cursor is not None:  # the cursor says where the page starts
                    page_params = [(k, v) for k, v in page_params if k != "offset"]
                    page_params.append(("cursor", cursor))
                response = self._get(url, page_params, headers={"Accept": "application/json"})
                rows = json.loads(response.text, parse_float=Decimal)
                if not isinstance(rows, list):
                    raise DataMeshError(
                        "Expected a JSON array of rows.", url=str(response.request.url)
                    )
                yield _frame(_table(rows, schema), exact)
                seen += len(rows)
                cursor = _next_cursor(response)
                if cursor is None or (limit is not None and seen >= limit):
                    return

        return generate()

    def _arrow_schema(self, url: str, params: list[tuple[str, str]]) -> pa.Schema:
        probe = [(k, v) for k, v in params if k != "offset"] + [("limit", "0")]
        response = self._get(url, probe, headers={"Accept": ARROW})
        return pa.ipc.open_stream(response.content).schema


class _Chunks(io.RawIOBase):
    """An HTTP body being received, as a file Arrow can read a stream from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


# --- conversions ---------------------------------------------------------------------------


def _frame(table: pa.Table, exact: bool) -> pd.DataFrame:
    """An Arrow table as a DataFrame with analysis-friendly dtypes (see the module's doc)."""
    columns: dict[str, pd.Series] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_decimal(kind):
            # exact: decimal.Decimal objects (None for nulls)
            series = (column if exact else pc.cast(column, pa.float64())).to_pandas()
        elif pa.types.is_date(kind):
            series = pc.cast(column, pa.timestamp("us")).to_pandas()
        elif pa.types.is_integer(kind) and column.null_count:
            nullable = pd.api.types.pandas_dtype(
                {8: "Int8", 16: "Int16", 32: "Int32", 64: "Int64"}[kind.bit_width]
            )
            series = column.to_pandas(types_mapper={kind: nullable}.get)
        elif pa.types.is_boolean(kind) and column.null_count:
            series = column.to_pandas(types_mapper={kind: pd.BooleanDtype()}.get)
        else:
            series = column.to_pandas()
        columns[field.name] = series.rename(field.name)
    if not columns:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    return pd.DataFrame(columns)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """JSON rows (numbers parsed as Decimal) as an Arrow table of the read's schema."""
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        kind = field.type
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            arrays.append(pa.array(values, pa.string()).cast(kind))
        elif pa.types.is_decimal(kind):
            arrays.append(pa.array([None if v is None else Decimal(v) for v in values], kind))
        else:
            arrays.append(pa.array(values, kind))
    return pa.Table.from_arrays(arrays, schema=schema)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


# --- parameters ----------------------------------------------------------------------------


def _params(
    select: str | Sequence[str] | None,
    order: str | Sequence[str] | None,
    offset: int | None,
    filters: Filters | None,
    column_filters: Mapping[str, FilterValue],
) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if select is not None:
        params.append(("select", _joined(select, "select")))
    if order is not None:
        params.append(("order", _joined(order, "order")))
    if offset is not None:
        params.append(("offset", str(_count(offset, "offset"))))
    for source in (filters or {}, column_filters):
        for column, value in source.items():
            if column in _RESERVED:
                raise ValueError(
                    f"'{column}' is not a filter but a parameter of the read grammar"
                    + (
                        f"; give it as {column}=..."
                        if column in _OPTIONS
                        else ", set by the client"
                    )
                )
            values = list(value) if isinstance(value, list | tuple) else [value]
            for one in values:
                if not isinstance(one, str):
                    raise TypeError(
                        f"Filter {column}={one!r}: give it in the PostgREST form, a string "
                        f"such as 'eq.{one}' (operators in docs/reading.md)."
                    )
                params.append((column, one))
    return params


def _joined(value: str | Sequence[str], name: str) -> str:
    if isinstance(value, str):
        return value
    parts = list(value)
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise TypeError(f"{name} takes a string or a list of column names, not {value!r}")
    return ",".join(parts)


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number from 0, not {value!r}")
    return value


def _iso_date(value: dt.date | str, name: str) -> str:
    if isinstance(value, dt.datetime):
        raise TypeError(f"{name} is a date (2024-06-01), not a date and time: {value!r}")
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an ISO date like 2024-06-01, not {value!r}") from None


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a {what} name (letters, digits, '-' and '_')")


def _base_url(url: str, service: str) -> str:
    """A service's base URL, without a trailing slash or its own `/<service>` prefix."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL like http://127.0.0.1:8000")
    base = url.strip().rstrip("/")
    return base.removesuffix(f"/{service}")


def _domains_from_env(text: str) -> dict[str, str]:
    try:
        domains = json.loads(text)
    except ValueError:
        domains = None
    if not isinstance(domains, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in domains.items()
    ):
        raise ValueError(
            "DATAMESH_DOMAINS must be JSON like "
            '{"sales": "http://127.0.0.1:8001", "marketing": "http://127.0.0.1:8002"}'
        )
    return domains


def _next_cursor(response: httpx.Response) -> str | None:
    """The keyset cursor of the next page, from the `Link: <...>; rel="next"` header. Only the
    cursor is taken: the next request goes to the URL this client chose, with its token."""
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    cursors = parse_qs(urlsplit(link).query).get("cursor")
    if not cursors:
        raise DataMeshError(f"The next-page link has no cursor: {link}", url=str(response.url))
    return cursors[0]


def _transport_error(url: str, exc: httpx.HTTPError) -> DataMeshError:
    service = urlsplit(url)
    return DataMeshError(
        f"Could not read {service.scheme}://{service.netloc}{service.path}: "
        f"{type(exc).__name__} {exc}".rstrip(),
        url=url,
    )
