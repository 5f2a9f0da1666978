"""The lake output port (docs/lake.md): every product of every domain exported as a Parquet
snapshot whose manifest matches its files and whose rows are the API's (PII masked, never in
clear in any file), from one database snapshot per domain; `_latest` moved last, so a reader
sees the previous snapshot or the new one, never a part of one, even when the export is killed;
retention; the S3 path against a real S3 server (moto) on loopback; the snapshots endpoint; the
scheduled export; and the docs' DuckDB and pyarrow snippets, run as written."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from services import DOMAINS, domain, sample
from services.cli import cli
from shared.declarations.products import Product
from shared.publishing.lake import (
    MANIFEST,
    POINTER,
    ExportBusy,
    Lake,
    export_domain,
    export_lock_key,
    list_snapshots,
    partition_column,
    pseudonym_key,
)
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.db import connect
from shared.storage.embedded import free_port
from tests.conftest import ADMIN, AS_OF, app_client, create_database, sample_databases, token
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@pytest.fixture(scope="module")
def lake_databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Each domain's database of this module's own, with the sample."""
    return sample_databases(postgres_servers, "lake")


async def export_all(lake: Lake, urls: dict[str, str], **options: Any) -> dict[str, str]:
    """Export every domain; the snapshot id of each."""
    ids = {}
    for name in DOMAINS:
        declared = domain(name)
        done = await export_domain(
            declared, urls[name], lake, pseudonym=pseudonym_key(declared), **options
        )
        ids[name] = done[0].snapshot_id
    return ids


@pytest.fixture(scope="module")
async def exported(
    lake_databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The sample exported to a local lake, `<tmp>/lake`."""
    root = tmp_path_factory.mktemp("exported") / "lake"
    await export_all(Lake.at(str(root)), lake_databases)
    return root


@pytest.fixture(scope="module")
async def clients(
    lake_databases: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """An admin client of each domain service over this module's databases (no lake)."""
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(
                app_client(create_domain_app(domain(name), database_url=url, settings=settings))
            )
            for name, url in lake_databases.items()
        }


def products() -> list[tuple[str, Product]]:
    return [(name, p) for name in DOMAINS for p in domain(name).products]


def files(root: Path, pattern: str) -> list[Path]:
    """The files under a folder whose names match the pattern."""
    return [p for p in root.rglob(pattern) if p.is_file()]


def start_export(root: Path, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """`datamesh lake export --domain sales --to <root>` in a process group of its own."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "lake",
            "export",
            "--domain",
            "sales",
            "--to",
            str(root),
        ],
        env=os.environ | environment,
        cwd=root.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def product_folder(root: Path, name: str, product: Product) -> Path:
    return root / name / product.name / f"v{product.version}"


def latest_folder(root: Path, name: str, product: Product) -> Path:
    """The snapshot folder `_latest` names, resolved once, as a reader does."""
    folder = product_folder(root, name, product)
    pointer = json.loads((folder / POINTER).read_text())
    assert pointer["path"] == f"snapshot={pointer['snapshot_id']}"
    return folder / pointer["path"]


def complete(snapshot: Path) -> dict[str, Any]:
    """A snapshot's manifest, after checking that its files are exactly the ones it lists,
    each with the rows it says, adding up to its row count."""
    manifest = json.loads((snapshot / MANIFEST).read_text())
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert files == sorted([MANIFEST, *(p["path"] for p in manifest["partitions"])])
    for partition in manifest["partitions"]:
        path = snapshot / partition["path"]
        assert pq.ParquetFile(path).metadata.num_rows == partition["row_count"], path
        assert path.stat().st_size == partition["bytes"]
    assert sum(p["row_count"] for p in manifest["partitions"]) == manifest["row_count"]
    assert sum(p["bytes"] for p in manifest["partitions"]) == manifest["bytes"]
    return manifest


def snapshot_table(
    snapshot: Path | str, manifest: dict[str, Any], filesystem: Any = None
) -> pa.Table:
    """A snapshot's rows as pyarrow reads its folder (the `month` of a partitioned one's
    folder names left out: the product's columns only)."""
    partitioned = manifest["partitioning"] is not None
    table = ds.dataset(
        str(snapshot),
        format="parquet",
        partitioning="hive" if partitioned else None,
        filesystem=filesystem,
    ).to_table()
    return table.drop_columns(["month"]) if partitioned else table


def by_key(table: pa.Table, product: Product) -> list[dict[str, Any]]:
    return table.sort_by([(k, "ascending") for k in product.key]).to_pylist()


async def api_count(client: httpx.AsyncClient, name: str, product: Product) -> int:
    response = await client.get(
        f"/{name}/v1/{product.name}", params={"limit": 1}, headers={"Prefer": "count=exact"}
    )
    assert response.status_code == 200, response.text
    return int(response.headers["Content-Range"].rsplit("/", 1)[1])


async def api_arrow(client: httpx.AsyncClient, name: str, product: Product) -> pa.Table:
    """Every row as the mesh reads it: Arrow, with the read scope only (PII masked)."""
    reader = {"Authorization": f"Bearer {token(f'{name}:read')}"}
    response = await client.get(
        f"/{name}/v1/{product.name}", params={"format": "arrow"}, headers=reader
    )
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all()


# --- what is written ---------------------------------------------------------------------------


async def test_every_product_of_every_domain_is_exported_with_one_snapshot_id_per_domain(
    exported: Path,
) -> None:
    found = {(p.parent.parent.parent.name, p.parent.parent.name) for p in files(exported, POINTER)}
    assert found == {(name, p.name) for name, p in products()}
    for name in DOMAINS:
        ids = {latest_folder(exported, name, p).name for p in domain(name).products}
        assert len(ids) == 1, f"{name}: one export, one database snapshot: {ids}"
        (snapshot,) = ids
        assert re.fullmatch(r"snapshot=[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}", snapshot)


@pytest.mark.parametrize(("name", "product"), products(), ids=lambda v: getattr(v, "name", v))
async def test_a_manifest_matches_its_files_and_the_files_hold_the_apis_rows(
    exported: Path, clients: dict[str, httpx.AsyncClient], name: str, product: Product
) -> None:
    client = clients[name]
    snapshot = latest_folder(exported, name, product)
    manifest = complete(snapshot)
    contract = (await client.get(f"/{name}/v1/products/{product.name}/contract?format=json")).json()
    assert manifest["domain"] == name
    assert manifest["product"] == product.name
    assert manifest["product_version"] == product.version
    assert manifest["contract_version"] == contract["version"]
    assert manifest["snapshot_id"] == snapshot.name.removeprefix("snapshot=")
    assert manifest["kind"] == ("table" if product.is_table else "view")
    assert manifest["key"] == list(product.key)
    # the row count is the API's
    assert manifest["row_count"] == await api_count(client, name, product)
    # the schema is the files' (and the API's Arrow schema)
    fields = [(f["name"], f["type"], f["nullable"]) for f in manifest["schema"]["fields"]]
    for partition in manifest["partitions"]:
        schema = pq.read_schema(snapshot / partition["path"])
        assert [(f.name, str(f.type), f.nullable) for f in schema] == fields
    pii = [c.name for c in product.columns if c.is_pii]
    assert manifest["masked_columns"] == sorted(pii)
    assert [f["name"] for f in manifest["schema"]["fields"] if f["masked"]] == pii
    # the rows are the API's, as the mesh reads them (PII masked, email_key present)
    lake = snapshot_table(snapshot, manifest)
    api = await api_arrow(client, name, product)
    assert lake.schema.names == api.schema.names
    assert [str(t) for t in lake.schema.types] == [str(t) for t in api.schema.types]
    assert by_key(lake, product) == by_key(api, product)
    for column in pii:
        assert lake.column(column).null_count == lake.num_rows
    # partitions: a month's rows in its folder; the high-water mark is the newest value
    source = partition_column(product)
    if source is None:
        assert manifest["partitioning"] is None
        assert [p["path"] for p in manifest["partitions"]] == ["part-0.parquet"]
    else:
        assert manifest["partitioning"]["source_column"] == source.name
        assert len(manifest["partitions"]) > 1
        for partition in manifest["partitions"]:
            month = partition["month"]
            assert partition["path"] == f"month={month}/part-0.parquet"
            values = pq.read_table(snapshot / partition["path"]).column(source.name)
            if pa.types.is_timestamp(values.type):
                values = pc.cast(values, pa.timestamp("us"))
            assert set(pc.strftime(values, format="%Y-%m").to_pylist()) == {month}
    mark = manifest["high_water_mark"]
    metadata = (await client.get(f"/{name}/v1/metadata")).json()["tables"][product.name]
    assert mark["columns"] == metadata["last_updated_from"]
    assert mark["value"] == metadata["last_updated"]
    assert dt.datetime.fromisoformat(mark["snapshot_time"]) <= dt.datetime.fromisoformat(
        manifest["created_at"]
    )


async def test_no_pii_value_is_in_clear_in_any_file(
    exported: Path, clients: dict[str, httpx.AsyncClient]
) -> None:
    clear: set[str] = set()
    for name, product in products():
        pii = [c.name for c in product.columns if c.is_pii]
        if not pii:
            continue
        response = await clients[name].get(
            f"/{name}/v1/{product.name}", params={"select": ",".join(pii)}, headers=ADMIN
        )
        assert "Masked-Columns" not in response.headers  # the admin reads them in clear
        clear |= {v for row in response.json() for v in row.values() if v}
    assert len(clear) > 50
    emails = {v for v in clear if EMAIL.fullmatch(v)}
    assert len(emails) >= 25  # customers and leads share a few
    parquet = files(exported, "*.parquet")
    assert len(parquet) > 20
    for path in parquet:
        table = pq.read_table(path)
        for column in table.itercolumns():
            if not pa.types.is_string(column.type):
                continue
            for value in column.to_pylist():
                if value is None:
                    continue
                assert value not in clear, f"{path}: a PII value in clear"
                assert not any(email in value for email in emails), f"{path}: an email"
        metadata = pq.ParquetFile(path).metadata.metadata or {}
        text = b" ".join(metadata.values()).decode(errors="replace")
        assert not any(email in text for email in emails)
    for path in files(exported, MANIFEST):
        assert not any(email in path.read_text() for email in emails)


async def test_an_export_reads_one_database_snapshot(
    lake_databases: dict[str, str], tmp_path: Path
) -> None:
    """A lead inserted while marketing's first product is being written is in no snapshot of
    that export: all its products are read in one REPEATABLE READ transaction."""
    marketing = domain("marketing")
    url = lake_databases["marketing"]
    root = tmp_path / "lake"
    conn = await connect(url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM leads")
        assert marketing.products[0].name == "campaigns"
        export = asyncio.create_task(
            export_domain(
                marketing,
                url,
                Lake.at(str(root)),
                pseudonym=pseudonym_key(marketing),
                pause_seconds=0.1,
            )
        )
        deadline = time.monotonic() + 30
        while not files(root / "marketing" / "campaigns", "*.parquet"):
            assert time.monotonic() < deadline and not export.done()
            await asyncio.sleep(0.02)
        await conn.execute(
            "INSERT INTO leads (first_name, last_name, email, lead_source, lead_score, status, "
            "campaign_id) SELECT 'Snap', 'Shot', 'snapshot-test@example.com', lead_source, 50, "
            "'New', campaign_id FROM leads LIMIT 1"
        )
        assert not files(root / "marketing" / "leads", "*.parquet"), "leads read already"
        done = await export
        assert await conn.fetchval("SELECT count(*) FROM leads") == before + 1
    finally:
        await conn.execute("DELETE FROM leads WHERE email = 'snapshot-test@example.com'")
        await conn.close()
    leads = next(e for e in done if e.product.name == "leads")
    assert leads.manifest["row_count"] == before
    assert {e.snapshot_id for e in done} == {done[0].snapshot_id}


async def test_a_second_export_of_a_domain_at_the_same_time_is_refused(
    lake_databases: dict[str, str], tmp_path: Path
) -> None:
    sales = domain("sales")
    holder = await connect(lake_databases["sales"])
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", export_lock_key(sales))
        with pytest.raises(ExportBusy, match="Another export of the sales domain"):
            await export_domain(
                sales,
                lake_databases["sales"],
                Lake.at(str(tmp_path)),
                pseudonym=pseudonym_key(sales),
            )
    finally:
        await holder.close()
    assert not files(tmp_path, "*")  # nothing written


async def test_rows_go_to_their_months_folder_nulls_to_hives_default_one(tmp_path: Path) -> None:
    from shared.publishing.lake import NULL_PARTITION, _SnapshotFiles, _Thread

    schema = pa.schema([pa.field("id", pa.int32()), pa.field("day", pa.date32())])

    def batch(*rows: tuple[int, dt.date | None]) -> pa.RecordBatch:
        ids, days = zip(*rows, strict=True)
        return pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.int32()), pa.array(days)], schema=schema
        )

    run = _Thread()
    lake = Lake.at(str(tmp_path))
    files = _SnapshotFiles(run, lake, lake.root + "/snapshot", schema, "day", 0.0)
    try:
        await files.add(batch((1, None), (2, dt.date(2024, 1, 5)), (3, dt.date(2024, 1, 31))))
        await files.add(batch((4, dt.date(2024, 2, 1)), (5, None)))
        await files.add(batch((6, dt.date(2024, 1, 9))))  # out of order: a second file
        partitions = await files.finish()
    finally:
        run.close()
    assert [(p["path"], p["month"], p["row_count"]) for p in partitions] == [
        ("month=2024-01/part-0.parquet", "2024-01", 2),
        ("month=2024-01/part-1.parquet", "2024-01", 1),
        ("month=2024-02/part-0.parquet", "2024-02", 1),
        (f"month={NULL_PARTITION}/part-0.parquet", None, 2),
    ]
    table = ds.dataset(str(tmp_path / "snapshot"), partitioning="hive").to_table()
    assert sorted((r["id"], r["month"]) for r in table.to_pylist()) == [
        (1, None),
        (2, "2024-01"),
        (3, "2024-01"),
        (4, "2024-02"),
        (5, None),
        (6, "2024-01"),
    ]


# --- atomicity -------------------------------------------------------------------------------


def _resolve_all(root: Path, name: str) -> dict[str, str]:
    """Each product's latest snapshot, resolved and read whole (fails on a partial one)."""
    seen = {}
    for product in domain(name).products:
        snapshot = latest_folder(root, name, product)
        manifest = complete(snapshot)
        assert snapshot_table(snapshot, manifest).num_rows == manifest["row_count"]
        seen[product.name] = manifest["snapshot_id"]
    return seen


async def test_a_reader_sees_the_previous_snapshot_or_the_new_one(
    lake_databases: dict[str, str], tmp_path: Path
) -> None:
    marketing = domain("marketing")
    root = tmp_path / "lake"
    lake = Lake.at(str(root))
    key = pseudonym_key(marketing)
    url = lake_databases["marketing"]
    (old,) = {e.snapshot_id for e in await export_domain(marketing, url, lake, pseudonym=key)}
    stop = threading.Event()
    seen: list[dict[str, str]] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(_resolve_all(root, "marketing"))

    reader = asyncio.create_task(asyncio.to_thread(read))
    try:
        done = await export_domain(marketing, url, lake, pseudonym=key, pause_seconds=0.05)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await reader
    new = done[0].snapshot_id
    assert len(seen) > 10
    assert all(set(ids.values()) <= {old, new} for ids in seen)
    assert seen[0] == dict.fromkeys(seen[0], old)
    assert seen[-1] == dict.fromkeys(seen[-1], new)


@pytest.mark.slow
async def test_an_export_killed_midway_leaves_the_previous_snapshot_named_and_intact(
    lake_databases: dict[str, str], tmp_path: Path
) -> None:
    sales = domain("sales")
    root = tmp_path / "lake"
    lake = Lake.at(str(root))
    url = lake_databases["sales"]
    before = {
        e.product.name: e.manifest
        for e in await export_domain(sales, url, lake, pseudonym=pseudonym_key(sales))
    }
    (old,) = {m["snapshot_id"] for m in before.values()}
    process = start_export(root, {"SALES_DATABASE_URL": url, "DATAMESH_LAKE_PAUSE_SECONDS": "0.5"})
    readings = 0
    try:
        deadline = time.monotonic() + 60
        while True:  # until the new snapshot has files: midway
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the export wrote no file in a minute"
            assert set(_resolve_all(root, "sales").values()) == {old}
            readings += 1
            if any(old not in str(p) for p in files(root / "sales", "*.parquet")):
                break
            await asyncio.sleep(0.05)
        assert set(_resolve_all(root, "sales").values()) == {old}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process.stderr:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert readings > 1
    # the pointer names the old snapshot, which is whole and unchanged
    for product in sales.products:
        snapshot = latest_folder(root, "sales", product)
        assert snapshot.name == f"snapshot={old}"
        assert complete(snapshot) == before[product.name]
    partial = [
        s for p in sales.products for s in list_snapshots(lake, "sales", p) if not s.complete
    ]
    assert partial, "the killed export left its partial folder"
    assert all(not (Path(s.folder) / MANIFEST).exists() for s in partial)
    # the next export completes, and leaves the recent partial folder alone (it could be an
    # export still running elsewhere: only an hour-old one is abandoned)
    done = await export_domain(sales, url, lake, pseudonym=pseudonym_key(sales))
    assert set(_resolve_all(root, "sales").values()) == {done[0].snapshot_id}
    left = {s.snapshot_id for p in sales.products for s in list_snapshots(lake, "sales", p)}
    assert {s.snapshot_id for s in partial} <= left, "a recent partial folder is kept"


# --- retention -------------------------------------------------------------------------------


async def test_retention_keeps_the_newest_n_and_removes_abandoned_snapshots(
    lake_databases: dict[str, str], tmp_path: Path
) -> None:
    sales = domain("sales")
    product = sales.product("products")
    assert product is not None
    root = tmp_path / "lake"
    lake = Lake.at(str(root))
    folder = product_folder(root, "sales", product)

    async def export(keep: int) -> str:
        (done,) = await export_domain(
            sales, lake_databases["sales"], lake, products=(product,), keep=keep
        )
        return done.snapshot_id

    ids = [await export(keep=2) for _ in range(4)]
    kept = [s.snapshot_id for s in list_snapshots(lake, "sales", product)]
    assert kept == [ids[3], ids[2]]
    assert latest_folder(root, "sales", product).name == f"snapshot={ids[3]}"
    # a partial snapshot an hour old is abandoned; a recent one may be an export in progress
    abandoned = folder / "snapshot=20200101T000000Z-abcdef"
    recent = folder / f"snapshot={dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-fedcba"
    for partial in (abandoned, recent):
        partial.mkdir()
        (partial / "part-0.parquet").write_bytes(b"half a file")
    (folder / f"{POINTER}.tmp-0123abcd").write_text("{}")
    last = await export(keep=1)
    assert [s.snapshot_id for s in list_snapshots(lake, "sales", product) if s.complete] == [last]
    assert not abandoned.exists()
    assert recent.exists()
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [POINTER]


# --- S3 ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_s3_lake_against_a_real_s3_server_equals_the_local_one(
    lake_databases: dict[str, str],
    settings: ServiceSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.server import ThreadedMotoServer

    for variable, value in {
        "AWS_ACCESS_KEY_ID": "lake-tests",
        "AWS_SECRET_ACCESS_KEY": "lake-tests-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(variable, value)
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        s3.create_dir("datamesh-lake")
        url = "s3://datamesh-lake/exports"
        remote = Lake.at(url, s3_endpoint=endpoint)
        assert (remote.url, remote.root, remote.local) == (url, "datamesh-lake/exports", False)
        local_root = tmp_path / "lake"
        await export_all(remote, lake_databases)  # twice: retention and `latest` on S3 too
        remote_ids = await export_all(remote, lake_databases, keep=1)
        await export_all(Lake.at(str(local_root)), lake_databases)
        # listed by the snapshots endpoint
        configured = settings.model_copy(update={"lake_url": url, "lake_s3_endpoint": endpoint})
        for name in DOMAINS:
            app = create_domain_app(
                domain(name), database_url=lake_databases[name], settings=configured
            )
            async with app_client(app) as client:
                for product in domain(name).products:
                    answer = (
                        await client.get(f"/{name}/v1/products/{product.name}/snapshots")
                    ).json()
                    assert answer["lake"] == url
                    assert answer["location"] == f"{url}/{name}/{product.name}/v1"
                    assert answer["latest"] == remote_ids[name]
                    (listed,) = answer["snapshots"]
                    assert listed["location"] == f"{answer['location']}/snapshot={remote_ids[name]}"
                    # read back with pyarrow: the rows and manifest of the local export
                    folder = listed["location"].removeprefix("s3://")
                    local = latest_folder(local_root, name, product)
                    local_manifest = complete(local)
                    same = ("snapshot_id", "created_at", "high_water_mark")
                    assert {k: v for k, v in listed["manifest"].items() if k not in same} == {
                        k: v for k, v in local_manifest.items() if k not in same
                    }
                    remote_table = snapshot_table(folder, local_manifest, s3)
                    local_table = snapshot_table(local, local_manifest)
                    assert remote_table.schema == local_table.schema
                    assert by_key(remote_table, product) == by_key(local_table, product)
                    files = s3.get_file_info(pafs.FileSelector(folder, recursive=True))
                    assert sorted(
                        f.path.removeprefix(f"{folder}/") for f in files if f.is_file
                    ) == sorted([MANIFEST, *(p["path"] for p in listed["manifest"]["partitions"])])
    finally:
        server.stop()


# --- the snapshots endpoint and the schedule --------------------------------------------------


async def test_the_snapshots_endpoint_lists_a_products_snapshots_newest_first(
    lake_databases: dict[str, str], settings: ServiceSettings, tmp_path: Path
) -> None:
    sales = domain("sales")
    root = tmp_path / "lake"
    path = "/sales/v1/products/orders/snapshots"

    def app(lake_url: str | None) -> Any:
        configured = settings.model_copy(update={"lake_url": lake_url})
        return create_domain_app(sales, database_url=lake_databases["sales"], settings=configured)

    async with app_client(app(None)) as client:
        answer = (await client.get(path)).json()
        assert answer["snapshots"] == [] and answer["lake"] is None and answer["latest"] is None
        assert "No lake is configured" in answer["note"]
        assert "DATAMESH_LAKE_URL" in answer["note"]
    async with app_client(app(str(root))) as client:
        answer = (await client.get(path)).json()
        assert answer["snapshots"] == [] and answer["lake"] == str(root)
        assert "Nothing of orders has been exported" in answer["note"]
        lake = Lake.at(str(root))
        ids = []
        for _ in range(3):
            done = await export_domain(
                sales, lake_databases["sales"], lake, pseudonym=pseudonym_key(sales)
            )
            ids.append(done[0].snapshot_id)
        response = await client.get(path)
        assert response.status_code == 200
        answer = response.json()
        assert answer["note"] is None
        assert answer["latest"] == ids[-1]
        assert answer["location"] == f"{root}/sales/orders/v1"
        assert [s["snapshot_id"] for s in answer["snapshots"]] == ids[::-1]
        assert [s["latest"] for s in answer["snapshots"]] == [True, False, False]
        for listed in answer["snapshots"]:
            assert listed["manifest"] == complete(Path(listed["location"]))
        # only complete snapshots are listed
        partial = (
            root / "sales/orders/v1" / f"snapshot={dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-0000ff"
        )
        (partial / "month=2024-10").mkdir(parents=True)
        assert len((await client.get(path)).json()["snapshots"]) == 3
        # errors
        unknown = await client.get("/sales/v1/products/nope/snapshots")
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "unknown_product"
        assert (await client.get(path, params={"limit": 1})).status_code == 400
        other = {"Authorization": f"Bearer {token('marketing:read')}"}
        assert (await client.get(path, headers=other)).status_code == 403
        reader = {"Authorization": f"Bearer {token('sales:read')}"}
        assert (await client.get(path, headers=reader)).status_code == 200
        document = (await client.get("/sales/openapi.json")).json()
        operation = document["paths"]["/sales/v1/products/{product}/snapshots"]["get"]
        assert {"200", "404", "503"} <= set(operation["responses"])


@pytest.fixture(scope="module")
def scheduled_database(postgres_servers: dict[str, PostgresServer]) -> str:
    """A marketing database of its own: the module's services (`clients`) lead the background
    jobs of theirs, and only a leader exports (shared.storage.leader)."""
    rows = sample("marketing")(AS_OF)
    return create_database(postgres_servers, "marketing", "marketing_lake_schedule", rows)


async def test_a_domain_service_exports_on_its_schedule(
    scheduled_database: str, settings: ServiceSettings, tmp_path: Path
) -> None:
    marketing = domain("marketing")
    root = tmp_path / "lake"
    configured = settings.model_copy(
        update={"lake_url": str(root), "lake_export_seconds": 3600.0, "lake_keep": 2}
    )
    app = create_domain_app(marketing, database_url=scheduled_database, settings=configured)
    async with app_client(app) as client:  # the first export runs at start
        deadline = time.monotonic() + 30
        while True:
            answers = [
                (await client.get(f"/marketing/v1/products/{p.name}/snapshots")).json()
                for p in marketing.products
            ]
            if all(a["latest"] for a in answers):
                break
            assert time.monotonic() < deadline, answers
            await asyncio.sleep(0.1)
    assert len({a["latest"] for a in answers}) == 1
    _resolve_all(root, "marketing")


def test_a_scheduled_export_needs_a_lake() -> None:
    with pytest.raises(ValueError, match="set DATAMESH_LAKE_URL"):
        ServiceSettings(lake_export_seconds=60)
    assert ServiceSettings(lake_export_seconds=60, lake_url="./lake").lake_keep == 5
    assert ServiceSettings(lake_url="  ").lake_url is None


# --- the command ------------------------------------------------------------------------------


def test_the_command_refuses_what_it_cannot_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMESH_LAKE_URL", raising=False)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["lake", "export", *args])
        return result.exit_code, " ".join(result.output.replace("│", " ").split())

    code, output = run()
    assert code == 2 and "--to" in output and "DATAMESH_LAKE_URL" in output
    code, output = run("--to", "lake", "--domain", "nope")
    assert code == 2 and "'nope' is not a domain" in output
    code, output = run("--to", "lake", "--product", "nope")
    assert code == 2 and "no domain publishes a product 'nope'" in output
    code, output = run("--to", "s3://")
    assert code == 2 and "names no bucket" in output


def test_a_lake_url_is_shown_without_credentials() -> None:
    lake = Lake.at("s3://key:secret@bucket/prefix/", s3_endpoint="http://127.0.0.1:9")
    assert lake.url == "s3://bucket/prefix"
    assert lake.root == "bucket/prefix"
    with pytest.raises(ValueError, match="'s3://bucket/prefix' has a query"):
        Lake.at("s3://key:secret@bucket/prefix?region=eu-west-1", s3_endpoint="http://127.0.0.1:9")
    local = Lake.at("file:///tmp/some%20lake/")
    assert (local.url, local.root, local.local) == ("/tmp/some lake", "/tmp/some lake", True)


# --- the docs ---------------------------------------------------------------------------------


def lake_doc_blocks(test: str) -> list[str]:
    """The Python blocks docs/lake.md marks as tested by the test module `test`, in order."""
    text = (ROOT / "docs" / "lake.md").read_text()
    marker = rf"<!-- tested: tests/{re.escape(test)} [^>]*-->\n```python\n(.*?)```"
    return re.findall(marker, text, flags=re.DOTALL)


async def test_the_docs_duckdb_and_pyarrow_snippets_read_the_lake_as_written(
    exported: Path, clients: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    duckdb_block, pyarrow_block = lake_doc_blocks("test_lake.py")
    assert "read_parquet(" in duckdb_block and "hive_partitioning = true" in duckdb_block
    assert "pyarrow.dataset" in pyarrow_block
    assert exported.name == "lake"
    monkeypatch.chdir(exported.parent)  # the snippets read ./lake
    found: dict[str, Any] = {}
    exec(compile(duckdb_block, "docs/lake.md (DuckDB)", "exec"), found)
    exec(compile(pyarrow_block, "docs/lake.md (pyarrow)", "exec"), found)
    orders = (await clients["sales"].get("/sales/v1/orders")).json()
    expected: dict[str, list[Any]] = {}
    for order in orders:
        if order["order_status"] != "Cancelled":
            month = expected.setdefault(order["order_date"][:7], [0, 0])
            month[0] += 1
            month[1] += round(order["total_amount"] * 100)
    revenue = found["revenue"]
    assert [(row.month, row.orders, round(row.revenue * 100)) for row in revenue.itertuples()] == [
        (month, n, cents) for month, (n, cents) in sorted(expected.items())
    ]
    leads = (await clients["marketing"].get("/marketing/v1/leads")).json()
    recent = found["recent"]
    assert sorted(recent["lead_id"]) == sorted(
        lead["lead_id"] for lead in leads if lead["created_at"] >= "2024-09-01"
    )
    assert recent["email"].isna().all() and recent["email_key"].notna().all()


# Trino's names of the Arrow types a manifest's schema holds (docs/lake.md, "Trino")
TRINO_TYPES = {
    "int32": "integer",
    "int64": "bigint",
    "date32[day]": "date",
    "timestamp[us, tz=UTC]": "timestamp(6)",  # the Hive connector has no zoned timestamps
    "string": "varchar",
    "bool": "boolean",
}


def trino_type(arrow: str) -> str:
    decimal = re.fullmatch(r"decimal128\((\d+), (\d+)\)", arrow)
    return f"decimal({decimal[1]}, {decimal[2]})" if decimal else TRINO_TYPES[arrow]


def test_the_docs_trino_table_is_the_manifests_schema(exported: Path) -> None:
    """Trino does not run here: its CREATE TABLE in docs/lake.md is checked against what the
    export writes (the columns and types of orders' manifest, the partition column last)."""
    text = (ROOT / "docs" / "lake.md").read_text()
    [ddl] = re.findall(r"```sql\n(CREATE TABLE hive\.sales\.orders.*?)```", text, flags=re.DOTALL)
    body = ddl[ddl.index("(") + 1 : ddl.index(")\nWITH")]
    columns = [c.strip().split(" ", 1) for c in re.split(r",\s*(?![^()]*\))", body)]
    latest = json.loads((exported / "sales" / "orders" / "v1" / "_latest").read_text())
    manifest = json.loads(
        (exported / "sales" / "orders" / "v1" / latest["path"] / "_manifest.json").read_text()
    )
    expected = [[f["name"], trino_type(f["type"])] for f in manifest["schema"]["fields"]]
    assert columns == [*expected, ["month", "varchar"]]
    assert "partitioned_by = ARRAY['month']" in ddl and "format = 'PARQUET'" in ddl
