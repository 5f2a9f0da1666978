"""The mesh on Spark (MESH_ENGINE=spark) gives the same answers as the mesh on DuckDB, to the
byte: every metric, with and without a period, on the sample, on the second data set built to
corner the definitions (tests/mesh_dataset.py) and at scale 10, each Spark mesh reading a fresh
export of the same domains' databases to a lake (`datamesh lake export`'s export_domain) while
its DuckDB twin reads them over HTTP. The same grammar and formats on Spark's answers; the headers and the metric
catalogue name the engine and the snapshots read, and how old they are; a missing, unreadable
or broken snapshot and a Spark that cannot start are 503 problems naming them.

One local Spark session (local[2]) serves every test here: it takes seconds to start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from services import DOMAINS, domain
from services.federation.app import create_app
from services.federation.dialect import parameters, spark_sql
from services.federation.lake import Lake, NoSnapshot
from services.federation.metrics import MACROS, METRICS
from services.federation.settings import FederationSettings
from services.federation.spark import SparkEngine, SparkSessions, s3a_conf
from services.marketing import scale as marketing_scale
from services.sales import scale as sales_scale
from shared.publishing.lake import Lake as LakeStore
from shared.publishing.lake import export_domain, pseudonym_key
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.sample_data import seed_if_empty
from tests import mesh_dataset
from tests.conftest import AS_OF, app_client, create_database, mesh_client, owner_url, token
from tests.mesh_oracle import METRIC_NAMES
from tests.postgres import PostgresServer
from tests.servers import served
from tests.test_lake import lake_doc_blocks
from tests.test_mesh_metrics import ALT_PERIODS, SAMPLE_PERIODS, assert_problem, period_params

pytestmark = pytest.mark.spark

SCALE = 10
SCALE_PERIODS: list[tuple[str, str | None, str | None]] = [
    ("lead-to-customer-journey", "2024-07-01", "2024-09-30"),
    ("campaign-roi", "2024-07-01", "2024-09-30"),
    ("customer-acquisition-cost", "2024-06-01", "2024-08-31"),
    ("channel-effectiveness", None, "2024-08-31"),
    ("product-campaign-correlation", "2024-08-01", None),
    ("lead-source-effectiveness", "2024-05-01", "2024-09-15"),
]
PERIODS = {"sample": SAMPLE_PERIODS, "alt": ALT_PERIODS, "scale": SCALE_PERIODS}


class Twins:
    """One data set's domains, a mesh on DuckDB over HTTP and a mesh on Spark over the lake
    exported from those same domains."""

    def __init__(
        self,
        duckdb: httpx.AsyncClient,
        spark: httpx.AsyncClient,
        lake: Path,
        snapshots: dict[str, str],
    ):
        self.duckdb, self.spark, self.lake, self.snapshots = duckdb, spark, lake, snapshots

    async def both(
        self, path: str, params: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, httpx.Response]:
        duckdb, spark = await asyncio.gather(
            self.duckdb.get(path, params=params, headers=headers),
            self.spark.get(path, params=params, headers=headers),
        )
        return duckdb, spark


# -- one Spark session, the lakes, the meshes ---------------------------------------------------


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSessions]:
    """The module's one local Spark session, its scratch and warehouse under the test's tmp."""
    spark = SparkSessions("local[2]", {}, str(tmp_path_factory.mktemp("spark")))
    spark.get()
    yield spark
    spark.stop()


def spark_settings(domains: dict[str, str], lake: Path | str) -> FederationSettings:
    return FederationSettings.model_validate(
        {"domains": domains, "engine": "spark", "lake_url": str(lake)}
    )


@asynccontextmanager
async def spark_mesh(
    domains: dict[str, str], lake: Path | str, sessions: SparkSessions
) -> AsyncIterator[httpx.AsyncClient]:
    """A mesh computing on Spark, over the lake, with the module's session."""
    settings = spark_settings(domains, lake)
    app = create_app(settings, engine=SparkEngine(settings, sessions))
    async with app_client(app) as client:
        yield client


def seeded_databases(servers: dict[str, PostgresServer], suffix: str) -> dict[str, str]:
    """Each domain's new database seeded at SCALE by its generator (`datamesh seed --scale`)."""
    generators = {"sales": sales_scale.generate, "marketing": marketing_scale.generate}
    urls = {}
    for name in DOMAINS:
        url = create_database(servers, name, f"{name}_{suffix}", {})

        async def generate(conn: asyncpg.Connection, name: str = name) -> None:
            await generators[name](conn, SCALE, AS_OF)

        assert asyncio.run(seed_if_empty(domain(name), owner_url(url), generate))
        urls[name] = url
    return urls


@pytest.fixture(scope="module")
def datasets(
    database_urls: dict[str, str], postgres_servers: dict[str, PostgresServer]
) -> dict[str, dict[str, str]]:
    """Each data set's domain databases: the sample (the session's), the second data set and
    scale 10 (databases of their own)."""
    alt = {
        name: create_database(postgres_servers, name, f"{name}_spark_alt", mesh_dataset.rows(name))
        for name in DOMAINS
    }
    scaled = seeded_databases(postgres_servers, "spark_scale")
    return {"sample": database_urls, "alt": alt, "scale": scaled}


@pytest.fixture(scope="module")
def served_domains(
    datasets: dict[str, dict[str, str]], domain_urls: dict[str, str], settings: ServiceSettings
) -> Iterator[dict[str, dict[str, str]]]:
    """Each data set's domain services on real HTTP ports (the sample's: the session's)."""
    with ExitStack() as stack:

        def serve(urls: dict[str, str]) -> dict[str, str]:
            return {
                name: stack.enter_context(
                    served(create_domain_app(domain(name), database_url=url, settings=settings))
                )
                for name, url in urls.items()
            }

        yield {
            "sample": domain_urls,
            "alt": serve(datasets["alt"]),
            "scale": serve(datasets["scale"]),
        }


async def export(
    databases: dict[str, str], lake: Path, *, skip: tuple[str, ...] = ()
) -> dict[str, str]:
    """Every product of every domain exported to the lake as `datamesh lake export` does (but
    the `domain/product`s in `skip`); the snapshot id of each `domain/product`."""
    store = LakeStore.at(str(lake))
    written = {}
    for name, url in databases.items():
        declared = domain(name)
        chosen = [p for p in declared.products if f"{name}/{p.name}" not in skip]
        for done in await export_domain(
            declared, url, store, products=chosen, pseudonym=pseudonym_key(declared)
        ):
            written[f"{name}/{done.product.name}"] = done.snapshot_id
    return written


@pytest.fixture(scope="module")
async def twins(
    datasets: dict[str, dict[str, str]],
    served_domains: dict[str, dict[str, str]],
    sessions: SparkSessions,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Twins]]:
    """Each data set's twin meshes, the Spark one over a fresh export of its domains."""
    async with AsyncExitStack() as stack:
        pairs = {}
        for dataset, domains in served_domains.items():
            lake = tmp_path_factory.mktemp(f"lake-{dataset}")
            exported = await export(datasets[dataset], lake)
            duckdb = await stack.enter_async_context(mesh_client(domains))
            spark = await stack.enter_async_context(spark_mesh(domains, lake, sessions))
            pairs[dataset] = Twins(duckdb, spark, lake, exported)
        yield pairs


# -- the one definition, translated ------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_each_metric_translates_to_spark_sql_without_macros(metric: Any) -> None:
    translated = spark_sql(metric.sql)
    sqlglot.parse_one(translated, read="spark")  # one statement Spark's grammar reads
    macros = [sqlglot.parse_one(m, read="duckdb").this.this.name for m in MACROS]
    assert all(f"{name}(" not in translated.lower() for name in macros), translated
    assert "HUGEINT" not in translated.upper() and "INT128" not in translated.upper()
    assert " DIV " in translated or "round_div" not in metric.sql
    assert set(parameters(metric.sql)) == {p for p in ("since", "until") if f"${p}" in metric.sql}
    assert all(f":{p}" in translated for p in parameters(metric.sql))


# -- the same answers ---------------------------------------------------------------------------


def same_answer(duckdb: httpx.Response, spark: httpx.Response) -> None:
    """Both 200, the same body to the byte, and the same numbers read as Decimals."""
    assert duckdb.status_code == 200, duckdb.text
    assert spark.status_code == 200, spark.text
    assert spark.headers["content-type"] == duckdb.headers["content-type"]
    assert spark.headers["datamesh-engine"] == "spark"
    assert duckdb.headers["datamesh-engine"] == "duckdb"
    assert spark.text == duckdb.text
    if duckdb.headers["content-type"].startswith("application/json"):
        as_decimals = json.loads(spark.text, parse_float=Decimal)
        assert as_decimals == json.loads(duckdb.text, parse_float=Decimal)


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize("dataset", ["sample", "alt", "scale"])
async def test_every_metric_on_spark_equals_duckdb(
    twins: dict[str, Twins], dataset: str, metric: str
) -> None:
    duckdb, spark = await twins[dataset].both(f"/mesh/v1/{metric}")
    same_answer(duckdb, spark)
    assert json.loads(spark.text), "every metric has rows on every data set"


@pytest.mark.parametrize(
    ("dataset", "metric", "since", "until"),
    [(dataset, *case) for dataset, cases in PERIODS.items() for case in cases],
)
async def test_every_metric_over_a_period_on_spark_equals_duckdb(
    twins: dict[str, Twins], dataset: str, metric: str, since: str | None, until: str | None
) -> None:
    params = period_params(since, until)
    duckdb, spark = await twins[dataset].both(f"/mesh/v1/{metric}", params)
    same_answer(duckdb, spark)


async def test_the_scale_periods_change_the_answers(twins: dict[str, Twins]) -> None:
    """At scale 10 each period selects something else than the whole: none is vacuous."""
    client = twins["scale"].duckdb  # the same answers (above): the faster engine here
    for metric, since, until in SCALE_PERIODS:
        whole = (await client.get(f"/mesh/v1/{metric}")).json()
        part = (await client.get(f"/mesh/v1/{metric}", params=period_params(since, until))).json()
        assert part != whole, (metric, since, until)


async def test_concurrent_answers_on_spark_do_not_see_each_others_inputs(
    twins: dict[str, Twins],
) -> None:
    """Each answer has its own temporary views: the same inputs over different periods, at
    once, each equal to its DuckDB twin."""
    pair = twins["alt"]
    asked = [
        ("campaign-roi", {}),
        ("campaign-roi", {"since": "2024-11-20", "until": "2025-01-08"}),
        ("campaign-roi", {"since": "2025-01-01"}),
        ("lead-source-effectiveness", {"until": "2024-11-01"}),
    ]
    spark = await asyncio.gather(*(pair.spark.get(f"/mesh/v1/{m}", params=p) for m, p in asked))
    for (metric, params), answer in zip(asked, spark, strict=True):
        duckdb = await pair.duckdb.get(f"/mesh/v1/{metric}", params=params)
        same_answer(duckdb, answer)
    assert len({a.text for a in spark[:3]}) == 3  # the periods differ, so do the answers


# -- the same grammar and formats ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "params"),
    [
        ("campaign-roi", {"select": "campaign_id,roi_pct"}),
        ("campaign-roi", {"order": "roi_pct.desc.nullslast", "limit": "4"}),
        ("campaign-roi", {"channel": "eq.LinkedIn", "since": "2024-11-20"}),
        ("channel-effectiveness", {"total_spent": "gt.1000", "order": "channel.desc"}),
        ("product-campaign-correlation", {"campaign_id": "eq.1", "select": "product_id,orders"}),
        ("product-campaign-correlation", {"limit": "5", "offset": "5"}),
        ("lead-source-effectiveness", {"revenue": "gte.0", "order": "revenue.desc,lead_source"}),
        ("lead-to-customer-journey", {"company": "is.null"}),
        ("customer-acquisition-cost", {"since": "2024-12-12", "until": "2024-12-20"}),
    ],
)
async def test_the_read_grammar_on_spark_answers_as_on_duckdb(
    twins: dict[str, Twins], metric: str, params: dict[str, str]
) -> None:
    counted = {"Prefer": "count=exact"}
    duckdb, spark = await twins["alt"].both(f"/mesh/v1/{metric}", params, counted)
    same_answer(duckdb, spark)
    for header in ("content-range", "link", "preference-applied"):
        assert spark.headers.get(header) == duckdb.headers.get(header), header


@pytest.mark.parametrize("metric", METRIC_NAMES)
async def test_csv_and_arrow_from_spark_equal_duckdbs(twins: dict[str, Twins], metric: str) -> None:
    pair = twins["alt"]
    duckdb, spark = await pair.both(f"/mesh/v1/{metric}", {"format": "csv"})
    same_answer(duckdb, spark)
    duckdb, spark = await pair.both(f"/mesh/v1/{metric}", {"format": "arrow"})
    assert duckdb.status_code == spark.status_code == 200, spark.text
    assert spark.headers["content-type"] == "application/vnd.apache.arrow.stream"
    from_spark = pa.ipc.open_stream(spark.content).read_all()
    from_duckdb = pa.ipc.open_stream(duckdb.content).read_all()
    assert from_spark.schema.equals(from_duckdb.schema, check_metadata=True)
    assert from_spark.equals(from_duckdb)
    assert from_spark.num_rows > 0


async def test_bad_input_is_the_same_problem_on_spark(twins: dict[str, Twins]) -> None:
    spark = twins["sample"].spark
    assert_problem(
        await spark.get("/mesh/v1/campaign-roi", params={"since": "2024-02-30"}),
        400,
        "invalid_value",
        "since",
    )
    assert_problem(
        await spark.get("/mesh/v1/campaign-roi", params={"select": "campaign_id,roi"}),
        400,
        "unknown_column",
        "roi",
    )


# -- what the answers say of where they came from -----------------------------------------------


async def test_headers_name_the_engine_and_the_snapshots_read(twins: dict[str, Twins]) -> None:
    pair = twins["sample"]
    for metric in METRICS:
        duckdb, spark = await pair.both(f"/mesh/v1/{metric.name}")
        assert duckdb.headers["datamesh-engine"] == "duckdb"
        assert "datamesh-snapshots" not in duckdb.headers
        assert spark.headers["datamesh-engine"] == "spark"
        read = sorted({i.lineage for i in metric.inputs})
        assert spark.headers["datamesh-snapshots"] == ", ".join(
            f"{lineage}/v1={pair.snapshots[lineage]}" for lineage in read
        )
        age = int(spark.headers["datamesh-snapshot-age-seconds"])
        assert 0 <= age < 600
        # the same snapshots read, the same answer: its ETag revalidates
        again = await pair.spark.get(
            f"/mesh/v1/{metric.name}", headers={"If-None-Match": spark.headers["etag"]}
        )
        assert (again.status_code, again.headers["etag"]) == (304, spark.headers["etag"])


async def test_the_metric_catalogue_says_what_each_engine_reads(twins: dict[str, Twins]) -> None:
    pair = twins["sample"]
    duckdb, spark = await pair.both("/mesh/v1/metrics")
    for entry in duckdb.json():
        assert entry["engine"] == "duckdb"
        assert entry["lineage"] == [{"input": i, "read": "http"} for i in entry["inputs"]]
    for entry in spark.json():
        assert entry["engine"] == "spark"
        assert [e["input"] for e in entry["lineage"]] == entry["inputs"]
        for read in entry["lineage"]:
            assert read["read"] == "lake"
            assert read["snapshot"] == pair.snapshots[read["input"]]
            assert read["version"] == 1
            assert read["row_count"] > 0
            assert 0 <= read["age_seconds"] < 600


async def test_an_old_snapshot_says_how_old(
    served_domains: dict[str, dict[str, str]],
    database_urls: dict[str, str],
    sessions: SparkSessions,
    tmp_path: Path,
) -> None:
    domains = served_domains["sample"]
    exported = await export(database_urls, tmp_path)
    day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    for lineage, snapshot in exported.items():  # as if exported a day ago
        manifest = tmp_path / lineage / "v1" / f"snapshot={snapshot}" / "_manifest.json"
        written = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(written | {"created_at": day_ago.isoformat()}))
    async with spark_mesh(domains, tmp_path, sessions) as mesh:
        response = await mesh.get("/mesh/v1/customer-acquisition-cost")
    assert response.status_code == 200, response.text
    assert 86_400 <= int(response.headers["datamesh-snapshot-age-seconds"]) < 86_400 + 600


async def test_the_newest_snapshot_is_read(
    served_domains: dict[str, dict[str, str]],
    database_urls: dict[str, str],
    sessions: SparkSessions,
    tmp_path: Path,
) -> None:
    """A second export moves every pointer; the mesh reads the new snapshots at once."""
    domains = served_domains["sample"]
    old = await export(database_urls, tmp_path)
    async with spark_mesh(domains, tmp_path, sessions) as mesh:
        first = await mesh.get("/mesh/v1/campaign-roi")
        new = await export(database_urls, tmp_path)
        second = await mesh.get("/mesh/v1/campaign-roi")
    assert first.status_code == second.status_code == 200
    assert (
        f"marketing/campaigns/v1={old['marketing/campaigns']}"
        in first.headers["datamesh-snapshots"]
    )
    assert (
        f"marketing/campaigns/v1={new['marketing/campaigns']}"
        in second.headers["datamesh-snapshots"]
    )
    assert first.text == second.text


# -- failures -----------------------------------------------------------------------------------


async def test_a_missing_snapshot_is_a_503_naming_the_input(
    served_domains: dict[str, dict[str, str]],
    database_urls: dict[str, str],
    sessions: SparkSessions,
    tmp_path: Path,
) -> None:
    domains = served_domains["sample"]
    await export(database_urls, tmp_path, skip=("sales/order-items",))
    async with spark_mesh(domains, tmp_path, sessions) as mesh:
        missing = await mesh.get("/mesh/v1/product-campaign-correlation")
        assert_problem(
            missing, 503, "no_snapshot", "sales/order-items", "product-campaign-correlation"
        )
        problem = missing.json()
        assert (problem["domain"], problem["product"], problem["input"]) == (
            "sales",
            "order-items",
            "order_items",
        )
        # the metrics that do not read it answer
        assert (await mesh.get("/mesh/v1/campaign-roi")).status_code == 200
        listed = {e["name"]: e for e in (await mesh.get("/mesh/v1/metrics")).json()}
        [items] = [
            e for e in listed["product-campaign-correlation"]["lineage"]
            if e["input"] == "sales/order-items"
        ]  # fmt: skip
        assert items["snapshot"] is None and "sales/order-items" in items["error"]
    # an empty lake, and one that does not exist: every metric 503, none a 500
    async with spark_mesh(domains, tmp_path / "nowhere", sessions) as mesh:
        for name in METRIC_NAMES:
            assert_problem(await mesh.get(f"/mesh/v1/{name}"), 503, "no_snapshot", name)


async def test_a_pointer_to_a_half_written_snapshot_is_a_503(
    served_domains: dict[str, dict[str, str]],
    database_urls: dict[str, str],
    sessions: SparkSessions,
    tmp_path: Path,
) -> None:
    """A pointer naming a snapshot without its manifest (never done by the exporter, which
    writes the pointer last) is not read."""
    domains = served_domains["sample"]
    exported = await export(database_urls, tmp_path)
    campaigns = tmp_path / "marketing" / "campaigns" / "v1"
    (campaigns / f"snapshot={exported['marketing/campaigns']}" / "_manifest.json").unlink()
    async with spark_mesh(domains, tmp_path, sessions) as mesh:
        response = await mesh.get("/mesh/v1/campaign-roi")
    assert_problem(response, 503, "no_snapshot", "marketing/campaigns", "_manifest.json")


async def test_unreadable_or_broken_snapshots_are_503s_naming_them(
    served_domains: dict[str, dict[str, str]],
    database_urls: dict[str, str],
    sessions: SparkSessions,
    tmp_path: Path,
) -> None:
    domains = served_domains["sample"]
    exported = await export(database_urls, tmp_path)

    def snapshot(lineage: str) -> Path:
        return tmp_path / lineage / "v1" / f"snapshot={exported[lineage]}"

    # a Parquet file that is not one: the snapshot is named
    for part in snapshot("sales/order-items").rglob("*.parquet"):
        part.write_bytes(b"not parquet")
    # an order_date that is no date: Spark's query fails (ANSI casts), the mesh says so
    for part in snapshot("sales/orders").rglob("*.parquet"):
        table = pq.read_table(part)
        index = table.schema.get_field_index("order_date")
        broken = pa.array(["someday"] * table.num_rows, pa.string())
        pq.write_table(table.set_column(index, "order_date", broken), part)
    async with spark_mesh(domains, tmp_path, sessions) as mesh:
        unreadable = await mesh.get("/mesh/v1/product-campaign-correlation")
        assert_problem(
            unreadable, 503, "invalid_snapshot", "sales/order-items", exported["sales/order-items"]
        )
        failed = await mesh.get("/mesh/v1/lead-source-effectiveness")
        assert_problem(failed, 503, "engine_unavailable", "Spark", "lead-source-effectiveness")
        assert failed.json()["engine"] == "spark"
        assert "Traceback" not in failed.text and "at org.apache" not in failed.text
        # the session survives a failed query: a metric reading neither answers
        assert (await mesh.get("/mesh/v1/customer-acquisition-cost")).status_code == 200


async def test_a_spark_that_cannot_start_is_a_503_and_is_tried_again(
    served_domains: dict[str, dict[str, str]], twins: dict[str, Twins], tmp_path: Path
) -> None:
    domains = served_domains["sample"]
    settings = spark_settings(domains, twins["sample"].lake)
    tries: list[int] = []

    class Broken(SparkSessions):
        def _start(self) -> Any:
            tries.append(1)
            raise RuntimeError("Java gateway process exited before sending its port number")

    engine = SparkEngine(settings, Broken("local[2]", {}, str(tmp_path)))
    async with app_client(create_app(settings, engine=engine)) as mesh:
        response = await mesh.get("/mesh/v1/campaign-roi")
        assert_problem(response, 503, "engine_unavailable", "cannot start", "local[2]", "Java")
        assert response.headers["retry-after"] == "30"
        await mesh.get("/mesh/v1/campaign-roi")
    assert len(tries) >= 2  # each answer tries again (and the warm-up at start)


async def test_a_spark_that_died_is_started_again(
    twins: dict[str, Twins], sessions: SparkSessions
) -> None:
    """Spark's JVM killed under the mesh: the next answer starts a new session and answers."""
    before = sessions.get()
    [java] = [c for c in psutil.Process().children(recursive=True) if c.name() == "java"]
    java.kill()
    java.wait(timeout=30)
    pair = twins["sample"]
    duckdb, spark = await pair.both("/mesh/v1/campaign-roi")
    same_answer(duckdb, spark)
    assert sessions.get() is not before


def test_the_session_is_started_once_and_reused(sessions: SparkSessions) -> None:
    assert sessions.get() is sessions.get()
    conf = sessions.get().sparkContext.getConf()
    assert conf.get("spark.master") == "local[2]"
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    assert conf.get("spark.ui.enabled") == "false"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    local = Path(str(conf.get("spark.local.dir")))
    assert local.is_relative_to(Path(str(sessions.local_dir)))


def test_the_settings_refuse_spark_without_a_lake() -> None:
    with pytest.raises(ValueError, match="MESH_LAKE_URL"):
        FederationSettings.model_validate({"engine": "spark"})
    with pytest.raises(ValueError, match="engine"):
        FederationSettings.model_validate({"engine": "trino", "lake_url": "lake"})


def test_a_lake_is_a_local_path_or_an_s3_url(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert Lake("lake").root == str(tmp_path.resolve() / "lake")
    assert Lake(f"file://{tmp_path}/lake").root == f"{tmp_path}/lake"
    # opened as the exporter opens it; Spark reads the files through s3a
    for url in ("s3://bucket/prefix/", "s3a://bucket/prefix"):
        s3 = Lake(url, s3_endpoint="http://127.0.0.1:9")
        assert (s3.root, s3.store.filesystem.type_name) == ("bucket/prefix", "s3")
        assert s3._engine_root == "s3a://bucket/prefix"
    with pytest.raises(ValueError, match="local path or s3"):
        Lake("gs://bucket/prefix")
    with pytest.raises(ValueError, match="has a query"):
        Lake("s3://bucket/prefix?endpoint_override=127.0.0.1:9", s3_endpoint="http://127.0.0.1:9")


def test_an_s3_endpoint_is_s3as_too() -> None:
    assert s3a_conf(None) == {}
    assert s3a_conf("http://127.0.0.1:9000") == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
    }
    settings = FederationSettings.model_validate(
        {
            "engine": "spark",
            "lake_url": "s3://bucket/lake",
            "lake_s3_endpoint": "https://minio.example:9000",
            "spark_conf": {"spark.hadoop.fs.s3a.path.style.access": "false"},
        }
    )
    engine = SparkEngine(settings)
    assert engine.lake.root == "bucket/lake"
    conf = engine.sessions.conf
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://minio.example:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"  # MESH_SPARK_CONF wins


def test_the_lake_follows_the_pointer_to_a_complete_snapshot(tmp_path: Path) -> None:
    """The highest version with a `_latest`; its snapshot only once it has a manifest."""
    product = tmp_path / "d" / "p"
    manifest = {"created_at": "2026-01-01T00:00:00+00:00", "row_count": 3}
    for version, snapshot in (("v1", "20260101T000000Z-aaaaaa"), ("v2", "20260102T000000Z-bbbbbb")):
        (product / version / f"snapshot={snapshot}").mkdir(parents=True)
        (product / version / f"snapshot={snapshot}" / "_manifest.json").write_text(
            json.dumps(manifest)
        )
    (product / "v1" / "_latest").write_text(json.dumps({"snapshot_id": "20260101T000000Z-aaaaaa"}))
    (product / "v3").mkdir()  # a version being written: no pointer yet
    lake = Lake(str(tmp_path))
    latest = lake.latest("d", "p")
    assert (latest.version, latest.id, latest.lineage) == (
        1,
        "20260101T000000Z-aaaaaa",
        "d/p/v1=20260101T000000Z-aaaaaa",
    )
    assert latest.url == f"{tmp_path}/d/p/v1/snapshot=20260101T000000Z-aaaaaa"
    assert latest.age_seconds(dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)) == 60
    pointer = {"snapshot_id": "20260102T000000Z-bbbbbb", "path": "snapshot=20260102T000000Z-bbbbbb"}
    (product / "v2" / "_latest").write_text(json.dumps(pointer))
    assert (lake.latest("d", "p").version, lake.latest("d", "p").id) == (
        2,
        "20260102T000000Z-bbbbbb",
    )
    for bad in ({"snapshot_id": "../../etc"}, ["x"], {"other": 1}, "not json"):
        (product / "v2" / "_latest").write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(NoSnapshot, match="names no snapshot"):
            lake.latest("d", "p")
    (product / "v2" / "_latest").write_text(json.dumps({"snapshot_id": "20260103T000000Z-cccccc"}))
    with pytest.raises(NoSnapshot, match=r"_manifest\.json"):
        lake.latest("d", "p")
    with pytest.raises(NoSnapshot, match="no complete snapshot"):
        lake.latest("d", "other")


async def test_the_docs_spark_snippet_reads_the_lake_as_written(
    database_urls: dict[str, str], served_domains: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """docs/lake.md's Spark block, run as a user runs it: its own Python and Spark, in the
    folder holding ./lake (`datamesh lake export --to ./lake`)."""
    [block] = lake_doc_blocks("test_spark_engine.py")
    await export(database_urls, tmp_path / "lake")
    shown = (
        "\nprint(json.dumps([[r.month, r.orders, str(r.revenue)] for r in revenue.itertuples()]))"
    )
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", block + shown],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    headers = {"Authorization": f"Bearer {token('sales:read')}"}
    async with httpx.AsyncClient(base_url=served_domains["sample"]["sales"]) as sales:
        orders = await sales.get("/sales/v1/orders", headers=headers)
    expected: dict[str, list[Any]] = {}
    for order in orders.json():
        if order["order_status"] != "Cancelled":
            month = expected.setdefault(order["order_date"][:7], [0, Decimal(0)])
            month[0] += 1
            month[1] += Decimal(str(order["total_amount"]))
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == [
        [month, n, f"{total:.2f}"] for month, (n, total) in sorted(expected.items())
    ]
