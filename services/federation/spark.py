"""The Spark engine (MESH_ENGINE=spark): each metric's one statement, translated to Spark SQL
(services/federation/dialect.py), over the latest complete snapshots of its inputs in the lake
(services/federation/lake.py), one temporary view per input holding the rows the HTTP read
would have asked for (its columns, its filters, the period's).

One Spark session is started per process, on first use (or at the mesh's start, in the
background), and reused; each answer runs in a session of its own that shares it
(`newSession()`: its own temporary views, the same SparkContext), so concurrent answers never
see each other's views. Spark's failures are 503 problems: `engine_unavailable` (the session
cannot start, a query fails) and `no_snapshot` (an input has none in the lake).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import operator
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.federation.compute import typed
from services.federation.dialect import parameters, spark_sql
from services.federation.engines import Answer, input_products
from services.federation.fetch import Input, Period
from services.federation.lake import Lake, NoSnapshot, Snapshot
from services.federation.metrics import Metric
from services.federation.settings import FederationSettings
from shared.errors import Problem, ServiceUnavailable

if TYPE_CHECKING:  # pyspark is the `spark` extra: imported when a session starts
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

_log = logging.getLogger("datamesh.mesh.spark")

# pyspark warns on import that it does not yet fully support pandas 3; the engine never
# converts to pandas (Spark's answer goes to Arrow directly)
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)

# Spark's own log: errors only, on stderr, plain lines; a failed query's context is not logged
# there (the mesh answers it as a problem and logs it itself), nor the shell's notice of its level
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.querycontext.name = SQLQueryContextLogger
logger.querycontext.level = off
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


class EngineUnavailable(ServiceUnavailable):
    code = "engine_unavailable"
    title = "Engine unavailable"


class InvalidSnapshot(ServiceUnavailable):
    code = "invalid_snapshot"
    title = "Invalid snapshot"


class SparkSessions:
    """The process's one Spark session: started on first use, reused, started again if it
    died; its scratch and warehouse directories under `local_dir` (else a temporary directory
    removed when it stops)."""

    def __init__(self, master: str, conf: dict[str, str], local_dir: str | None = None):
        self.master = master
        self.conf = conf
        self.local_dir = local_dir
        self._session: SparkSession | None = None
        self._scratch: str | None = None
        self._lock = threading.Lock()

    def get(self) -> SparkSession:
        """The running session (started now if there is none): EngineUnavailable if it
        cannot start."""
        with self._lock:
            if self._session is not None and _alive(self._session):
                return self._session
            if self._session is not None:  # it died (its JVM was killed): start afresh
                _forget(self._session)
            self._session = None
            try:
                self._session = self._start()
            except Exception as exc:
                _log.error(
                    "the Spark session did not start (master %s)", self.master, exc_info=True
                )
                raise EngineUnavailable(
                    f"The Spark engine cannot start its session (master {self.master}): "
                    f"{_summary(exc)}",
                    headers={"Retry-After": "30"},
                    engine="spark",
                ) from None
            return self._session

    def forget_if_dead(self) -> None:
        """After a failure: drop the session if it died, so the next answer starts another."""
        with self._lock:
            if self._session is not None and not _alive(self._session):
                _forget(self._session)
                self._session = None

    def stop(self) -> None:
        """Stop the session and remove the scratch directory the engine made."""
        with self._lock:
            if self._session is not None:
                try:
                    self._session.stop()
                except Exception:  # already dead: nothing to stop
                    _log.debug("the Spark session did not stop cleanly", exc_info=True)
                self._session = None
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def _directory(self) -> Path:
        if self.local_dir is not None:
            folder = Path(self.local_dir)
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="datamesh-spark-")
        return Path(self._scratch)

    def settings(self, folder: Path) -> dict[str, str]:
        """The session's Spark settings: the mesh's, then MESH_SPARK_CONF's (which win)."""
        log_config = folder / "log4j2.properties"
        log_config.write_text(_LOG4J2)
        (folder / "tmp").mkdir(exist_ok=True)  # the JVM's own temporary files, here too
        local = self.master.startswith("local")
        conf = {
            "spark.master": self.master,
            "spark.app.name": "datamesh-mesh",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.log.structuredLogging.enabled": "false",
            # timestamps are instants; a date of one is its UTC day, as in DuckDB and the domains
            "spark.sql.session.timeZone": "UTC",
            "spark.local.dir": str(folder / "scratch"),
            "spark.sql.warehouse.dir": str(folder / "warehouse"),
            "spark.driver.extraJavaOptions": (
                f"-Dlog4j2.configurationFile={log_config.as_uri()} "
                f"-Dderby.system.home={folder / 'derby'} -Djava.io.tmpdir={folder / 'tmp'}"
            ),
        }
        if local:  # one machine: listen on loopback only, and few shuffle partitions
            conf |= {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.shuffle.partitions": "8",
            }
        return conf | self.conf

    def _start(self) -> SparkSession:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise RuntimeError(
                "pyspark is not installed (pip install 'datamesh[spark]'; it needs Java 17+)"
            ) from None

        conf = self.settings(self._directory())
        if self.master.startswith("local"):
            # Spark would otherwise look up this host's address on the network
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session


def _alive(session: SparkSession) -> bool:
    try:
        context = session.sparkContext
        return context._jsc is not None and not context._jsc.sc().isStopped()
    except Exception:  # the JVM is gone
        return False


def _forget(session: SparkSession) -> None:
    """Let pyspark start a new session and JVM: it keeps the dead ones otherwise."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with contextlib.suppress(Exception):
        session.stop()
    # the JVM pyspark started (gone, or going): reaped, its pipe closed
    process = getattr(SparkContext._gateway, "proc", None)
    if process is not None:
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(timeout=30)
        if process.stdin is not None:
            process.stdin.close()
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None


def _summary(exc: BaseException) -> str:
    """The first line of a Spark error (its class and message, never a JVM stack trace)."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), type(exc).__name__)
    return first[:300]


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _literal(kind: str, text: str) -> Any:
    """A filter's value as the Python value of the column's Spark type (as the domain parses
    it: a timestamp without an offset is UTC)."""
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind in ("timestamp", "timestamp_ntz"):
        value = dt.datetime.fromisoformat(text)
        if kind == "timestamp_ntz":
            return value.replace(tzinfo=None)
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if kind in ("tinyint", "smallint", "int", "bigint"):
        return int(text)
    if kind.startswith("decimal"):
        return Decimal(text)
    if kind == "boolean":
        return text.lower() == "true"
    return text


def _condition(frame: DataFrame, column: str, expression: str) -> SparkColumn:
    """A PostgREST filter (`op.value`) as a Spark condition on the column."""
    from pyspark.sql import functions

    name, _, text = expression.partition(".")
    compare = _OPERATORS.get(name)
    if compare is None:  # a metric's declaration uses an operator this engine does not read
        raise ValueError(f"the filter {column}={expression} has no Spark form")
    kind = frame.schema[column].dataType.simpleString()
    return compare(functions.col(column), functions.lit(_literal(kind, text)))


def s3a_conf(endpoint: str | None) -> dict[str, str]:
    """Hadoop s3a's settings for an S3-compatible store at `endpoint` (path-style addresses;
    TLS as its scheme says); none for AWS. s3a needs the hadoop-aws package on Spark's class
    path (docs/mesh.md); its credentials come from AWS's standard variables."""
    if not endpoint:
        return {}
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower(),
    }


class SparkEngine:
    """Metrics on Spark over the lake's latest snapshots (MESH_ENGINE=spark)."""

    name = "spark"

    def __init__(self, settings: FederationSettings, sessions: SparkSessions | None = None):
        if not settings.lake_url:
            raise ValueError("the Spark engine reads a lake: set MESH_LAKE_URL")
        self.lake = Lake(settings.lake_url, s3_endpoint=settings.lake_s3_endpoint)
        self._owns_sessions = sessions is None
        self.sessions = sessions or SparkSessions(
            settings.spark_master,
            s3a_conf(settings.lake_s3_endpoint) | settings.spark_conf,
            settings.spark_local_dir,
        )

    async def answer(self, metric: Metric, period: Period, caller: str | None) -> Answer:
        # the lake holds what the mesh's own token reads (PII masked): the same for every caller
        return await asyncio.to_thread(self.compute, metric, period)

    async def lineage(self, metric: Metric) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._lineage, metric)

    def _lineage(self, metric: Metric) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        entries = []
        for lineage in input_products(metric):
            domain, product = lineage.split("/", 1)
            try:
                entry = {"read": "lake", **self.lake.latest(domain, product).describe(now)}
            except NoSnapshot as missing:
                entry = {"input": lineage, "read": "lake", "snapshot": None}
                entry["error"] = missing.detail
            entries.append(entry)
        return entries

    async def start(self) -> None:
        """Start the session in the background: the first answer need not wait ~6 s for it."""

        def warm() -> None:
            with contextlib.suppress(Problem):  # logged by get(); an answer will try again
                self.sessions.get()

        await asyncio.to_thread(warm)

    async def close(self) -> None:
        if self._owns_sessions:
            await asyncio.to_thread(self.sessions.stop)

    def snapshots(self, metric: Metric) -> dict[str, Snapshot]:
        """The latest complete snapshot of each input (NoSnapshot naming the first without)."""
        found: dict[str, Snapshot] = {}
        for source in metric.inputs:
            try:
                found[source.name] = self.lake.latest(source.domain, source.product)
            except NoSnapshot as missing:
                missing.extra["input"] = source.name
                missing.detail = f"The metric '{metric.name}' reads {source.lineage}. " + (
                    missing.detail
                )
                raise
        return found

    def compute(self, metric: Metric, period: Period) -> Answer:
        """The metric's rows over the period: its statement on Spark over the snapshots."""
        snapshots = self.snapshots(metric)
        spark = self.sessions.get().newSession()
        try:
            for source in metric.inputs:
                self._view(spark, source, snapshots[source.name], period)
            values = {"since": period.since, "until": period.until}
            args = {name: values[name] for name in parameters(metric.sql)}
            result = spark.sql(spark_sql(metric.sql), args=args or None).toArrow()
        except Problem:
            raise
        except Exception as exc:
            _log.error("the Spark engine failed computing %s", metric.name, exc_info=True)
            self.sessions.forget_if_dead()
            raise EngineUnavailable(
                f"The Spark engine failed computing '{metric.name}': {_summary(exc)}",
                headers={"Retry-After": "5"},
                engine="spark",
                metric=metric.name,
            ) from None
        finally:
            for source in metric.inputs:
                try:
                    spark.catalog.dropTempView(source.name)
                except Exception:  # the session is gone: so are its views
                    break
        used = {s.lineage: s for s in snapshots.values()}
        read = tuple(used[k] for k in sorted(used))
        # snapshots are immutable: the same ones read, the same answer
        version = hashlib.sha256(repr(sorted(used)).encode()).hexdigest()[:16]
        return Answer(typed(metric, result), self.name, read, version=version)

    @staticmethod
    def _view(spark: SparkSession, source: Input, snapshot: Snapshot, period: Period) -> None:
        """The input's temporary view: the snapshot's rows the HTTP read would have asked for
        (its filters and the period's), its columns."""
        try:
            # every Parquet file of the snapshot, partition folders or not; the partition column
            # (`month=`) is not read: it derives from a column the files hold, and could clash
            frame = spark.read.option("recursiveFileLookup", "true").parquet(snapshot.url)
        except Exception as exc:
            raise _invalid(
                source, snapshot, f"its files cannot be read ({_summary(exc)})"
            ) from None
        filters = source.row_filters(period)
        missing = [c for c in (*source.columns, *(c for c, _ in filters)) if c not in frame.columns]
        if missing:
            raise _invalid(source, snapshot, f"it lacks the columns {', '.join(missing)}")
        for column, expression in filters:
            frame = frame.where(_condition(frame, column, expression))
        frame.select(*source.columns).createOrReplaceTempView(source.name)


def _invalid(source: Input, snapshot: Snapshot, why: str) -> InvalidSnapshot:
    return InvalidSnapshot(
        f"The snapshot {snapshot.id} of {source.lineage} in the lake is not readable: {why}.",
        headers={"Retry-After": "60"},
        domain=source.domain,
        product=source.product,
        snapshot=snapshot.id,
    )
