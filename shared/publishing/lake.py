"""The lake output port: each product of a domain published as immutable Parquet snapshots in a
lake (a local folder or an object store), read from one database snapshot through the read path
the API uses, so that PII columns are masked exactly as the mesh reads them (docs/lake.md).

    <lake>/<domain>/<product>/v<version>/
        snapshot=<id>/month=YYYY-MM/part-0.parquet   a partitioned product (a dated table)
        snapshot=<id>/part-0.parquet                 every other product
        snapshot=<id>/_manifest.json                 written after the snapshot's files
        _latest                                      the latest complete snapshot; written last

A snapshot's files and manifest are written first; then, once every product of the export is
written, each product's `_latest` pointer is replaced in one step (a rename on a local file
system, one PUT on S3): a reader that resolves `_latest` sees the previous snapshot or the new
one, whole, never a part of one. Snapshots are never changed once written; the oldest are
removed after the pointer moved, `keep` complete ones left."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shared.declarations.checks import Freshness
from shared.declarations.products import DATED, Column, ColumnType, Domain, Product
from shared.governance.contracts import contract_version
from shared.governance.metadata import measure, recency_columns
from shared.reading.formats import arrow_schema
from shared.reading.query import OrderTerm, PiiAccess, ReadQuery, parse_read
from shared.reading.rows import arrow_batches
from shared.schedule import every
from shared.security.pseudonym import PseudonymKey, PseudonymSettings
from shared.settings import ServiceSettings
from shared.storage.db import connect

_log = logging.getLogger("datamesh.lake")
T = TypeVar("T")

POINTER = "_latest"
MANIFEST = "_manifest.json"
SNAPSHOT_PREFIX = "snapshot="
PARTITION_COLUMN = "month"
# the folder of rows whose partition value is null (Hive's name: Spark, Trino, pyarrow and
# DuckDB read it as a null month)
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_VERSION = 1
# rows read from the database at a time, and written to a Parquet row group at least (but the
# last of a file)
BATCH_ROWS = 50_000
ROW_GROUP_ROWS = 100_000
# a snapshot without a manifest this old was left by an export that died: removed by the next
ABANDONED_AFTER = dt.timedelta(hours=1)
# a snapshot id: the database snapshot's time (UTC, to the second), then a random part
SNAPSHOT_ID = re.compile(r"(?P<time>[0-9]{8}T[0-9]{6}Z)-(?P<random>[0-9a-f]{6,32})")


class _Thread:
    """The blocking file work of one export (Parquet encoding, writes, renames), in one thread
    of its own, off the event loop: Arrow's allocator keeps memory per thread, so one thread
    holds one export's buffers at most once."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-export")

    async def __call__(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class ExportBusy(RuntimeError):
    """Another export of the domain is running (it holds the domain's export lock)."""


# --- where things are ------------------------------------------------------------------------


def _shown(url: str) -> str:
    """A URL without its credentials or query (what may be printed, logged or answered)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def _s3_endpoint(endpoint: str) -> dict[str, Any]:
    """S3FileSystem's options for an S3-compatible endpoint (http://host:port, https://...)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"DATAMESH_LAKE_S3_ENDPOINT '{endpoint}' is not an endpoint like http://127.0.0.1:9000"
        )
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return {"endpoint_override": host, "scheme": parts.scheme}


@dataclass(frozen=True)
class Lake:
    """A lake: its file system (pyarrow.fs), its root folder in it, and its URL as shown."""

    url: str
    filesystem: Any  # a pyarrow.fs.FileSystem
    root: str
    local: bool

    @classmethod
    def at(cls, url: str, *, s3_endpoint: str | None = None) -> Lake:
        """The lake at a URL: a local path (relative to the current folder, or file://), or
        s3://bucket/prefix (credentials from AWS's standard variables, or the URL's user
        info; `s3_endpoint` for an S3-compatible store), or any other URL pyarrow.fs opens."""
        text = url.strip()
        if not text:
            raise ValueError("The lake's URL is empty: give a local path or s3://bucket/prefix")
        if "://" not in text or text.startswith("file://"):
            given = unquote(text.removeprefix("file://")) if "://" in text else text
            path = Path(given).expanduser().resolve()
            return cls(str(path), pafs.LocalFileSystem(), path.as_posix(), local=True)
        parts = urlsplit(text)
        if parts.scheme == "s3":
            if not parts.hostname:
                raise ValueError(f"The lake's URL '{_shown(text)}' names no bucket")
            if parts.query:
                raise ValueError(
                    f"The lake's URL '{_shown(text)}' has a query: S3 options are settings "
                    "(DATAMESH_LAKE_S3_ENDPOINT, AWS_REGION and AWS's credential variables)"
                )
            options: dict[str, Any] = {"connect_timeout": 5, "request_timeout": 60}
            if parts.username:
                options["access_key"] = unquote(parts.username)
                options["secret_key"] = unquote(parts.password or "")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if s3_endpoint:
                options |= _s3_endpoint(s3_endpoint)
            # an S3-compatible store's region is nominal; AWS's is asked of the bucket
            options["region"] = region or (
                "us-east-1" if s3_endpoint else pafs.resolve_s3_region(parts.hostname)
            )
            filesystem = pafs.S3FileSystem(**options)
            root = f"{parts.hostname}{parts.path}".rstrip("/")
            return cls(_shown(text), filesystem, root, local=False)
        filesystem, root = pafs.FileSystem.from_uri(text)
        return cls(_shown(text), filesystem, root.rstrip("/"), local=False)

    def product_path(self, domain: str, product: Product) -> str:
        """The folder of a product's snapshots (and its `_latest`) in the file system."""
        return f"{self.root}/{domain}/{product.name}/v{product.version}"

    def show(self, path: str) -> str:
        """A path of the file system as a location in the lake (its URL, then the path)."""
        return self.url + path[len(self.root) :]

    # blocking operations on the file system: callers in an event loop run them in a thread

    def _parent(self, path: str) -> None:
        if self.local:  # an object store has no folders to create
            self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)

    def write_bytes(self, path: str, data: bytes) -> None:
        """A whole file (durable on a local disk once this returns)."""
        self._parent(path)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(data)
        self.sync(path)

    def read_json(self, path: str) -> Any:
        """A JSON file, or None if there is none (or it is not JSON: not written whole)."""
        try:
            with self.filesystem.open_input_stream(path) as stream:
                data = stream.read()
        except FileNotFoundError:
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None

    def replace(self, path: str, data: bytes) -> None:
        """Replace a small file in one step: readers see the old content or the new, whole.
        Locally: written to a temporary name, flushed, then renamed over the old (atomic on
        POSIX); on an object store, one PUT is atomic already."""
        if not self.local:
            with self.filesystem.open_output_stream(path) as stream:
                stream.write(data)
            return
        temporary = f"{path}.tmp-{secrets.token_hex(4)}"
        self.write_bytes(temporary, data)
        try:
            self.filesystem.move(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(temporary)
            raise
        self.sync(path.rsplit("/", 1)[0])

    def sync(self, path: str) -> None:
        """Flush a local file or folder to disk (an object store needs nothing)."""
        if not self.local:
            return
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def entries(self, path: str) -> list[Any]:
        """The files and folders right under a folder (none if it does not exist)."""
        return list(self.filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True)))

    def remove(self, path: str) -> None:
        """Remove a folder and everything in it (nothing if it is gone already)."""
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(path)


# --- what is written -------------------------------------------------------------------------


def lake_query(product: Product) -> ReadQuery:
    """The read of every row of a product as the lake holds it: the API's read with no pii
    scope (PII columns masked, as the mesh reads them; pseudonymous keys computed), ordered by
    the partition column (then the key) so that each month's rows come together."""
    query = parse_read(product, [], max_limit=None, pii=PiiAccess.masked())
    column = partition_column(product)
    if column is not None:
        query.order = (OrderTerm(column),)
    return query


def partition_column(product: Product) -> Column | None:
    """The column whose month partitions a product's snapshots: a table's declared freshness
    column, else its first date column; None for views, tables without one (a stored, non-PII
    date or timestamp column only) and products that have a column named `month`."""
    if not product.is_table or product.column(PARTITION_COLUMN):
        return None  # a product's own `month` column would clash with the folders' `month`
    declared = [product.column(c.column) for c in product.checks if isinstance(c, Freshness)]
    dates = [c for c in product.columns if c.type is ColumnType.DATE]
    for column in (*declared, *dates):
        if column and column.type in DATED and not column.is_pii and column.computed is None:
            return column
    return None


def new_snapshot_id(at: dt.datetime) -> str:
    """A sortable snapshot id: the time (UTC, to the second), then a random part."""
    return f"{at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def snapshot_time(snapshot_id: str) -> dt.datetime | None:
    """The time in a snapshot id, or None if it is not one."""
    match = SNAPSHOT_ID.fullmatch(snapshot_id)
    if match is None:
        return None
    return dt.datetime.strptime(match["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def _months(values: Any) -> Any:
    """The month (YYYY-MM, UTC) of each date or timestamp of an Arrow array; null for null."""
    if pa.types.is_timestamp(values.type) and values.type.tz is not None:
        values = pc.cast(values, pa.timestamp(values.type.unit))  # the UTC wall time
    elif pa.types.is_date(values.type):
        values = pc.cast(values, pa.timestamp("s"))
    return pc.strftime(values, format="%Y-%m")


def _split(batch: Any, column: str) -> Iterator[tuple[str | None, Any]]:
    """The rows of a batch by month of a column, months in order of first appearance."""
    months = _months(batch.column(column))
    for month in pc.unique(months).to_pylist():
        mask = pc.is_null(months) if month is None else pc.fill_null(pc.equal(months, month), False)
        yield month, batch.filter(mask)


@dataclass
class _File:
    """One Parquet file of a snapshot being written: row groups of ROW_GROUP_ROWS rows."""

    lake: Lake
    path: str  # relative to the snapshot's folder
    full: str
    schema: Any
    month: str | None
    rows: int = 0
    size: int = 0
    _pending: list[Any] = field(default_factory=list)
    _pending_rows: int = 0
    _stream: Any = None
    _writer: Any = None

    def open(self) -> None:
        self.lake._parent(self.full)
        self._stream = self.lake.filesystem.open_output_stream(self.full)
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd")

    def add(self, batch: Any) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self.size = self._stream.tell()
        self._stream.close()
        self.lake.sync(self.full)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._stream is not None:
            self._stream.close()

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "month": self.month, "row_count": self.rows, "bytes": self.size}


class _SnapshotFiles:
    """The Parquet files of one product's snapshot as its rows arrive: one file per month of
    the partition column (rows come ordered by it, so a month's file is closed when the next
    month starts), or one file."""

    def __init__(
        self, run: _Thread, lake: Lake, folder: str, schema: Any, column: str | None, pause: float
    ):
        self.run = run
        self.lake = lake
        self.folder = folder
        self.schema = schema
        self.column = column
        self.pause = pause
        self.open: dict[str | None, _File] = {}
        self.done: list[_File] = []
        self._parts: dict[str | None, int] = {}  # files begun per month

    async def add(self, batch: Any) -> None:
        if batch.num_rows == 0:
            return
        if self.column is None:
            await self._write(None, batch, partitioned=False)
            return
        for month, rows in _split(batch, self.column):
            await self._write(month, rows, partitioned=True)

    async def _write(self, month: str | None, rows: Any, *, partitioned: bool) -> None:
        file = self.open.get(month)
        if file is None:
            if partitioned and month is not None:  # a later month: the earlier ones are done
                for other in [m for m in self.open if m is not None]:
                    await self._close(other)
            number = self._parts.get(month, 0)
            self._parts[month] = number + 1
            folder = f"{PARTITION_COLUMN}={month or NULL_PARTITION}/" if partitioned else ""
            path = f"{folder}part-{number}.parquet"
            file = _File(self.lake, path, f"{self.folder}/{path}", self.schema, month)
            await self.run(file.open)
            self.open[month] = file
        await self.run(file.add, rows)

    async def _close(self, month: str | None) -> None:
        file = self.open.pop(month)
        await self.run(file.close)
        self.done.append(file)
        if self.pause:
            await asyncio.sleep(self.pause)

    def abort(self) -> None:
        """Close the files being written, as they are (their folder is then removed)."""
        for file in self.open.values():
            with contextlib.suppress(Exception):
                file.abort()
        self.open.clear()

    async def finish(self) -> list[dict[str, Any]]:
        """Close every file; the partitions' entries of the manifest, by path. A product
        without rows gets one empty file (its schema), so that readers find the snapshot."""
        for month in list(self.open):
            await self._close(month)
        if not self.done:
            empty = _File(
                self.lake, "part-0.parquet", f"{self.folder}/part-0.parquet", self.schema, None
            )
            await self.run(empty.open)
            await self.run(empty.close)
            self.done.append(empty)
        if self.lake.local:
            for folder in {f.full.rsplit("/", 1)[0] for f in self.done}:
                await self.run(self.lake.sync, folder)
        return sorted((f.entry() for f in self.done), key=lambda e: e["path"])


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value.isoformat())


def schema_fields(schema: Any, masked: frozenset[str]) -> list[dict[str, Any]]:
    """A manifest's schema: each Arrow field's name, type (as Arrow prints it) and
    nullability, its classification, and whether it is masked (always null in the lake)."""
    return [
        {
            "name": f.name,
            "type": str(f.type),
            "nullable": f.nullable,
            "classification": (f.metadata or {}).get(b"classification", b"").decode() or None,
            "masked": f.name in masked,
        }
        for f in schema
    ]


@dataclass(frozen=True)
class Exported:
    """A product's snapshot written by an export."""

    product: Product
    snapshot_id: str
    folder: str  # in the lake's file system
    location: str  # as shown
    manifest: dict[str, Any]
    removed: tuple[str, ...] = ()  # the older snapshots removed after it (retention)


async def _export_product(
    run: _Thread,
    conn: asyncpg.Connection,
    domain: Domain,
    product: Product,
    lake: Lake,
    snapshot_id: str,
    snapshot_at: dt.datetime,
    pseudonym: PseudonymKey | None,
    pause: float,
    batch_rows: int,
) -> Exported:
    folder = f"{lake.product_path(domain.name, product)}/{SNAPSHOT_PREFIX}{snapshot_id}"
    query = lake_query(product)
    column = partition_column(product)
    schema = arrow_schema(query.output_columns)
    rows, newest = await measure(conn, product)
    files = _SnapshotFiles(run, lake, folder, schema, column.name if column else None, pause)
    try:
        async with aclosing(arrow_batches(conn, query, batch_rows, pseudonym)) as batches:
            async for batch in batches:
                await files.add(batch)
        partitions = await files.finish()
    except BaseException:
        files.abort()
        raise
    written = sum(p["row_count"] for p in partitions)
    if written != rows:  # one snapshot: cannot differ, unless the read path lost rows
        raise RuntimeError(
            f"{domain.name}/{product.name}: {written} rows written, {rows} in the snapshot"
        )
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "domain": domain.name,
        "product": product.name,
        "product_version": product.version,
        "contract_version": contract_version(product),
        "kind": "table" if product.is_table else "view",
        "snapshot_id": snapshot_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "row_count": rows,
        "bytes": sum(p["bytes"] for p in partitions),
        "format": "parquet",
        "compression": "zstd",
        "key": list(product.key),
        "partitioning": None
        if column is None
        else {
            "style": "hive",
            "column": PARTITION_COLUMN,
            "source_column": column.name,
            "granularity": "month",
            "format": "YYYY-MM",
            "null_partition": NULL_PARTITION,
        },
        "schema": {"fields": schema_fields(schema, query.masked)},
        "masked_columns": sorted(query.masked),
        "partitions": partitions,
        "high_water_mark": {
            "columns": recency_columns(product),
            "value": _iso(newest),
            "snapshot_time": _iso(snapshot_at),
        },
    }
    # in one step too: a snapshot with a manifest is complete, and its manifest whole
    await run(lake.replace, f"{folder}/{MANIFEST}", _json(manifest))
    if pause:
        await asyncio.sleep(pause)
    return Exported(product, snapshot_id, folder, lake.show(folder), manifest)


def _json(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def export_lock_key(domain: Domain) -> int:
    """The advisory lock one export of the domain holds at a time (a 64-bit key)."""
    digest = hashlib.sha256(f"datamesh lake export {domain.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def export_domain(
    domain: Domain,
    database_url: str,
    lake: Lake,
    *,
    products: Sequence[Product] | None = None,
    pseudonym: PseudonymKey | None = None,
    keep: int = 5,
    pause_seconds: float = 0.0,
    batch_rows: int = BATCH_ROWS,
) -> list[Exported]:
    """Export the domain's products (all, or `products`) to the lake as one snapshot each, all
    read in one REPEATABLE READ read-only transaction; then move each product's `_latest` to
    its new snapshot and remove the oldest beyond `keep`. Raises ExportBusy if another export
    of the domain is running (on any host: the lock is the database's)."""
    chosen = tuple(products) if products else domain.products
    run = _Thread()
    try:
        exported = await _write_snapshots(
            run, domain, database_url, lake, chosen, pseudonym, pause_seconds, batch_rows
        )
        for done in exported:  # last: each product's pointer, in one step each
            pointer = {
                "snapshot_id": done.snapshot_id,
                "path": f"{SNAPSHOT_PREFIX}{done.snapshot_id}",
                "created_at": done.manifest["created_at"],
                "row_count": done.manifest["row_count"],
            }
            path = f"{lake.product_path(domain.name, done.product)}/{POINTER}"
            await run(lake.replace, path, _json(pointer))
        pruned = []
        for done in exported:
            try:
                removed = await run(prune, lake, domain.name, done.product, keep)
            except Exception:  # the export is done; the next one prunes again
                _log.exception(
                    "removing old snapshots of %s/%s failed", domain.name, done.product.name
                )
                removed = []
            pruned.append(replace(done, removed=tuple(removed)))
        return pruned
    finally:
        run.close()


async def _write_snapshots(
    run: _Thread,
    domain: Domain,
    database_url: str,
    lake: Lake,
    chosen: Sequence[Product],
    pseudonym: PseudonymKey | None,
    pause_seconds: float,
    batch_rows: int,
) -> list[Exported]:
    """Each product's snapshot, read in one transaction (files and manifests; no pointer)."""
    exported: list[Exported] = []
    begun: list[str] = []
    conn = await connect(database_url)
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            # the first statement takes the transaction's snapshot: its time is the data's
            row = await conn.fetchrow(
                "SELECT pg_try_advisory_xact_lock($1) AS locked, statement_timestamp() AS at",
                export_lock_key(domain),
            )
            assert row is not None
            if not row["locked"]:
                raise ExportBusy(f"Another export of the {domain.name} domain is running")
            # an export reads whole tables: the service's statement timeout is for requests;
            # between two products it writes files, which may take a while on an object store
            await conn.execute(
                "SET LOCAL statement_timeout = 0; "
                "SET LOCAL idle_in_transaction_session_timeout = '10min'"
            )
            snapshot_id = new_snapshot_id(row["at"])
            for product in chosen:
                begun.append(
                    f"{lake.product_path(domain.name, product)}/{SNAPSHOT_PREFIX}{snapshot_id}"
                )
                exported.append(
                    await _export_product(
                        run,
                        conn,
                        domain,
                        product,
                        lake,
                        snapshot_id,
                        row["at"],
                        pseudonym,
                        pause_seconds,
                        batch_rows,
                    )
                )
    except Exception:
        # no pointer moved: what this export wrote is no snapshot of anything
        for folder in begun:
            with contextlib.suppress(Exception):
                await run(lake.remove, folder)
        raise
    finally:
        await conn.close()
    return exported


# --- what is there ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A snapshot folder of a product: complete (its manifest written) or not (being
    written, or left by an export that died)."""

    snapshot_id: str
    folder: str
    manifest: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def order(self) -> tuple[str, str, str]:
        match = SNAPSHOT_ID.fullmatch(self.snapshot_id)
        created = str((self.manifest or {}).get("created_at") or "")
        return (match["time"] if match else "", created, self.snapshot_id)


def latest_snapshot_id(lake: Lake, domain: str, product: Product) -> str | None:
    """The snapshot id the product's `_latest` names, if any."""
    pointer = lake.read_json(f"{lake.product_path(domain, product)}/{POINTER}")
    if not isinstance(pointer, dict):
        return None
    snapshot_id = pointer.get("snapshot_id")
    if isinstance(snapshot_id, str) and SNAPSHOT_ID.fullmatch(snapshot_id):
        return snapshot_id
    return None


def list_snapshots(lake: Lake, domain: str, product: Product) -> list[Snapshot]:
    """The product's snapshot folders, newest first, each with its manifest if complete."""
    found = []
    for entry in lake.entries(lake.product_path(domain, product)):
        name = entry.base_name
        if entry.type != pafs.FileType.Directory or not name.startswith(SNAPSHOT_PREFIX):
            continue
        snapshot_id = name.removeprefix(SNAPSHOT_PREFIX)
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            continue
        manifest = lake.read_json(f"{entry.path}/{MANIFEST}")
        found.append(
            Snapshot(snapshot_id, entry.path, manifest if isinstance(manifest, dict) else None)
        )
    return sorted(found, key=Snapshot.order, reverse=True)


def prune(
    lake: Lake, domain: str, product: Product, keep: int, *, now: dt.datetime | None = None
) -> list[str]:
    """Remove the product's complete snapshots beyond the newest `keep` (never the one
    `_latest` names), and incomplete ones older than ABANDONED_AFTER; the ids removed."""
    now = now or dt.datetime.now(dt.UTC)
    latest = latest_snapshot_id(lake, domain, product)
    snapshots = list_snapshots(lake, domain, product)
    complete = [s for s in snapshots if s.complete]
    removed = [s for s in complete[keep:] if s.snapshot_id != latest]
    for snapshot in snapshots:
        began = snapshot_time(snapshot.snapshot_id)
        if not snapshot.complete and began is not None and now - began > ABANDONED_AFTER:
            removed.append(snapshot)
    for snapshot in removed:
        lake.remove(snapshot.folder)
    if lake.local:  # a pointer's temporary file left by a crash
        folder = lake.product_path(domain, product)
        for entry in lake.entries(folder):
            if entry.base_name.startswith(f"{POINTER}.tmp-"):
                with contextlib.suppress(FileNotFoundError):
                    lake.filesystem.delete_file(entry.path)
    return [s.snapshot_id for s in removed]


# --- in a domain service ---------------------------------------------------------------------


def pseudonym_key(domain: Domain, settings: PseudonymSettings | None = None) -> PseudonymKey | None:
    """The pseudonymisation key the domain's computed columns need (None if it has none)."""
    if not any(c.computed for p in domain.products for c in p.columns):
        return None
    return (settings or PseudonymSettings()).key()


@asynccontextmanager
async def lake_exports(
    domain: Domain,
    database_url: str,
    settings: ServiceSettings,
    leads: Callable[[], bool] | None = None,
) -> AsyncIterator[None]:
    """While inside, export the domain's products to DATAMESH_LAKE_URL at start and every
    DATAMESH_LAKE_EXPORT_SECONDS (0: never), while `leads` says this process leads the domain's
    background jobs (shared.storage.leader). Of several processes serving the domain (workers,
    replicas), one exports at a time in any case; another skips its turn."""
    if settings.lake_export_seconds <= 0 or not settings.lake_url:
        yield
        return
    lake = Lake.at(settings.lake_url, s3_endpoint=settings.lake_s3_endpoint)
    key = pseudonym_key(domain)

    async def export() -> None:
        started = asyncio.get_running_loop().time()
        try:
            done = await export_domain(
                domain,
                database_url,
                lake,
                pseudonym=key,
                keep=settings.lake_keep,
                pause_seconds=settings.lake_pause_seconds,
            )
        except ExportBusy:
            _log.info("lake export of %s skipped: another one is running", domain.name)
            return
        _log.info(
            "exported %d products of %s to %s as snapshot %s in %.1fs",
            len(done),
            domain.name,
            lake.url,
            done[0].snapshot_id if done else "-",
            asyncio.get_running_loop().time() - started,
        )

    name = f"lake export of the {domain.name} domain"
    async with every(name, settings.lake_export_seconds, export, _log, only_if=leads):
        yield
