"""The lake and Spark: `datamesh lake export` at the bench scale (its time, its peak RSS, each
product's rows, files, bytes and time), every mesh metric on both engines (DuckDB in the mesh's
process over HTTP, Spark over the exported lake), and how the in-process mesh's peak RSS grows
with the scale: where it would reach 2 GiB, and Spark at the largest scale measured."""

from __future__ import annotations

import gc
import json
import re
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow as pa

from bench.harness import (
    ARROW,
    AS_OF,
    COLD_MESH,
    DATAMESH,
    BenchError,
    DataMeshUp,
    PeakRss,
    RssSampler,
    Spread,
    bench_data,
    client,
    get_ok,
    load_average,
    run_measured,
    say,
    seconds_text,
    timer,
)
from bench.report import Section, Table, Target

LIMIT_MIB = 2048  # the question: the largest scale at which the in-process mesh fits 2 GiB
SPARK_MASTER = "local[2]"  # the machine's two cores, in the mesh's process (its JVM child)
FIRST = "customer-acquisition-cost"  # the first answer after start: the smallest inputs
# the mesh's settings for this section that differ from `datamesh up`'s: Spark's master given
# (not local[*]), and a read timeout that a large scale's inputs cannot hit (the default, 30 s,
# bounds one HTTP read of an input; here the question is memory, not patience)
MESH_ENV = {"MESH_SPARK_MASTER": SPARK_MASTER, "MESH_READ_TIMEOUT_SECONDS": "900", **COLD_MESH}
REQUEST_TIMEOUT = 1800.0
ROUND_SCALE = 5_000  # the largest scale, chosen by the line, is rounded down to this
DISK_MARGIN = 10 * 1024**3  # free disk left to the machine's other work when seeding it
# the rows a scale N > 1 gives (docs/scale.md), for the tables
SHAPE = "orders and leads 20N each, order items 60N, customers 2N"

# the mesh's own Spark session (services/federation/spark.py), started alone in a process
SESSION_START = """
import sys, time
started = time.perf_counter()
from services.federation.spark import SparkSessions
imported = time.perf_counter()
sessions = SparkSessions(sys.argv[1], {})
sessions.get()
print(f"session-start {imported - started:.3f} {time.perf_counter() - imported:.3f}", flush=True)
sessions.stop()
"""


# --- the export -----------------------------------------------------------------------------


@dataclass
class ProductExport:
    """One product in the lake, over the repetitions of the export."""

    rows: int
    files: int
    bytes: int
    seconds: list[float] = field(default_factory=list)


@dataclass
class ExportRuns:
    """`datamesh lake export` of every product at one scale, repeated."""

    scale: int
    lake: Path
    whole: list[float] = field(default_factory=list)  # the command, start to exit
    peaks: list[float] = field(default_factory=list)  # its process's peak RSS, MiB
    loads: list[str] = field(default_factory=list)  # load average before each
    domains: dict[str, list[float]] = field(default_factory=dict)  # first statement to last file
    products: dict[str, ProductExport] = field(default_factory=dict)  # "sales/orders"

    @property
    def total_bytes(self) -> int:
        return sum(p.bytes for p in self.products.values())


def latest_manifests(lake: Path) -> list[dict[str, object]]:
    """The manifest of each product's latest snapshot (`_latest`, then its folder's
    `_manifest.json`), as a reader finds it (docs/lake.md)."""
    manifests = []
    for pointer in sorted(lake.glob("*/*/v*/_latest")):
        folder = pointer.parent / json.loads(pointer.read_text())["path"]
        manifests.append(json.loads((folder / "_manifest.json").read_text()))
    return manifests


def product_seconds(manifests: Sequence[dict[str, object]]) -> dict[str, float]:
    """Each product's export time, from the manifests: a domain's products are written one
    after the other in one transaction, each ending with its manifest (`created_at`); the first
    starts at the transaction's first statement (`high_water_mark.snapshot_time`). So a
    product's time is from the previous manifest (or that statement) to its own: its count, its
    rows read and written, its manifest."""
    seconds: dict[str, float] = {}
    by_domain: dict[str, list[dict[str, object]]] = {}
    for manifest in manifests:
        by_domain.setdefault(str(manifest["domain"]), []).append(manifest)
    for domain, found in by_domain.items():
        found.sort(key=lambda m: str(m["created_at"]))
        mark = found[0]["high_water_mark"]
        assert isinstance(mark, dict)
        previous = _instant(mark["snapshot_time"])
        for manifest in found:
            created = _instant(manifest["created_at"])
            seconds[f"{domain}/{manifest['product']}"] = created - previous
            previous = created
    return seconds


def _instant(text: object) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(str(text)).timestamp()


def export(data: Path, lake: Path, scale: int, *, reps: int) -> ExportRuns:
    """`datamesh lake export --to <lake> --data-dir <data>`, each repetition into an empty lake
    (no `datamesh up` running: the command starts the databases, exports, stops them)."""
    runs = ExportRuns(scale, lake)
    command = [DATAMESH, "lake", "export", "--to", str(lake), "--data-dir", str(data)]
    command += ["--as-of", AS_OF]
    for rep in range(reps):
        say(f"lake: export at scale {scale:,}, repetition {rep + 1} of {reps}")
        shutil.rmtree(lake, ignore_errors=True)
        runs.loads.append(load_average())
        done = run_measured(command)
        runs.whole.append(done.seconds)
        runs.peaks.append(done.peak_mib)
        manifests = latest_manifests(lake)
        if not manifests:
            raise BenchError(f"the export wrote no snapshot:\n{done.output[-2000:]}")
        times = product_seconds(manifests)
        for manifest in manifests:
            name = f"{manifest['domain']}/{manifest['product']}"
            partitions = manifest["partitions"]
            assert isinstance(partitions, list)
            product = runs.products.setdefault(
                name,
                ProductExport(int(str(manifest["row_count"])), len(partitions), 0),
            )
            product.bytes = int(str(manifest["bytes"]))
            product.seconds.append(times[name])
        for domain in {name.split("/")[0] for name in times}:
            runs.domains.setdefault(domain, []).append(
                sum(t for name, t in times.items() if name.startswith(f"{domain}/"))
            )
    return runs


# --- the metrics on an engine ----------------------------------------------------------------


@dataclass
class EngineRun:
    """Every metric on one engine at one scale: the first answer after start, then each
    metric's first request (cold) and `reps` more (warm), and the processes' peak RSS."""

    engine: str
    scale: int
    load: str = ""
    ready: float = float("nan")  # `datamesh up` to its ready line
    idle_mib: float = float("nan")  # the mesh (and its JVM) once ready, before any answer
    first: float = float("nan")  # the first answer after ready (FIRST)
    cold: dict[str, float] = field(default_factory=dict)
    warm: dict[str, Spread] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    rss: PeakRss = field(default_factory=PeakRss)  # per metric: mesh, sales, marketing
    failed: dict[str, str] = field(default_factory=dict)  # a metric's error, if it failed

    def mesh_peak(self, metric: str) -> float:
        return self.rss.tests[metric]["mesh"]

    @property
    def peak(self) -> tuple[float, str]:
        """The mesh's largest peak over the metrics, and the metric it was reached on."""
        worst = max(self.rss.tests, key=self.mesh_peak)
        return self.mesh_peak(worst), worst


def metric_names(mesh: DataMeshUp, token: str) -> list[str]:
    with client(token) as http:
        listed = get_ok(http, f"{mesh.url('mesh')}/mesh/v1/metrics").json()
    return [str(entry["name"]) for entry in listed]


def on_engine(
    data: Path, scale: int, *, engine: str, reps: int, lake: Path | None = None
) -> EngineRun:
    """`datamesh up` on the data (the mesh on `engine`), then every metric whole as Arrow: one
    request after another over one connection, the mesh's RSS (with its children: Spark's JVM)
    and the domain services' sampled during each metric's requests."""
    run = EngineRun(engine, scale, load=load_average())
    say(f"lake: every metric on {engine} at scale {scale:,}")
    with DataMeshUp(data, engine=engine, lake=lake, env=MESH_ENV).start() as mesh:
        run.ready = mesh.ready_seconds
        token = mesh.token()
        names = metric_names(mesh, token)
        base = f"{mesh.url('mesh')}/mesh/v1"
        with RssSampler({"mesh": mesh.pids["mesh"]}, tree=True) as idle:
            pass
        run.idle_mib = idle.peaks_mib()["mesh"]
        with client(token, timeout=REQUEST_TIMEOUT) as http:
            with timer() as elapsed:  # on Spark: waits for the session the mesh is starting
                get_ok(http, f"{base}/{FIRST}", headers={"Accept": ARROW})
            run.first = elapsed[0]
            for name in names:
                gc.collect()
                latencies = []
                with RssSampler(mesh.pids, tree=True) as rss:
                    try:
                        for _ in range(1 + reps):
                            with timer() as elapsed:
                                response = get_ok(http, f"{base}/{name}", headers={"Accept": ARROW})
                            latencies.append(elapsed[0])
                    except BenchError as error:  # reported in the tables; the others go on
                        run.failed[name] = str(error).splitlines()[0][:200]
                run.rss.add(name, rss.peaks_mib())
                if name in run.failed:
                    say(f"  {name}: failed: {run.failed[name]}")
                    continue
                if response.headers.get("datamesh-engine") != engine:
                    raise BenchError(
                        f"{name} answered from {response.headers.get('datamesh-engine')}"
                    )
                run.cold[name] = latencies[0]
                run.warm[name] = Spread.of(latencies[1:])
                run.bodies[name] = response.content
                run.rows[name] = pa.ipc.open_stream(response.content).read_all().num_rows
                say(f"  {name}: {latencies[0]:.2f} s cold, {run.warm[name].median:.2f} s warm")
    return run


def same_answer(duckdb: bytes, spark: bytes) -> str:
    """Whether both engines answered the same: the same Arrow bytes, else the same table."""
    if duckdb == spark:
        return "same bytes"
    left = pa.ipc.open_stream(duckdb).read_all()
    right = pa.ipc.open_stream(spark).read_all()
    if left.equals(right):
        return "same rows and types (bytes differ)"
    if left.num_rows != right.num_rows:
        return f"**differ**: {left.num_rows:,} rows against {right.num_rows:,}"
    return "**differ**"


def session_start(*, reps: int) -> tuple[Spread, Spread, float]:
    """The mesh's Spark session (services/federation/spark.py) started alone, in a process of
    its own: pyspark's import, the session's start (the JVM, the SparkContext), and the peak
    RSS of the process and its JVM."""
    imports, starts, peak = [], [], 0.0
    for rep in range(reps):
        say(f"lake: Spark session start, repetition {rep + 1} of {reps}")
        done = run_measured([sys.executable, "-c", SESSION_START, SPARK_MASTER], tree=True)
        found = re.search(r"session-start ([0-9.]+) ([0-9.]+)", done.output)
        if not found:
            raise BenchError(f"the Spark session did not start:\n{done.output[-2000:]}")
        imports.append(float(found.group(1)))
        starts.append(float(found.group(2)))
        peak = max(peak, done.peak_mib)
    return Spread.of(imports), Spread.of(starts), peak


# --- the 2 GiB question ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """peak RSS (MiB) = intercept + slope x scale, least squares."""

    intercept: float
    slope: float  # MiB per unit of scale

    @classmethod
    def of(cls, points: dict[int, float]) -> Fit:
        scales = sorted(points)
        slope, intercept = statistics.linear_regression(scales, [points[s] for s in scales])
        return cls(intercept, slope)

    def at(self, scale: int) -> float:
        return self.intercept + self.slope * scale

    def scale_at(self, mib: float) -> int:
        return int((mib - self.intercept) / self.slope)

    def text(self) -> str:
        return (
            f"peak RSS ≈ {self.intercept:.0f} MiB + {self.slope * 1000:.2f} MiB per 1,000 of scale"
        )


# --- the section ------------------------------------------------------------------------------


def run(
    root: Path, scale: int, *, reps: int, scales: Sequence[int], largest: int | None
) -> Section:
    """The whole section: the export and both engines at `scale` (the bench scale); the DuckDB
    mesh at every scale of `scales`, then at `largest` (None: where the line through the others
    reaches 2 GiB, as the disk allows; 0: none), and Spark at the largest of them all."""
    section = Section(
        "lake",
        "The lake and Spark",
        "`datamesh lake export` of every product, then every mesh metric on both engines: "
        "DuckDB in the mesh's process reading the domains over HTTP (`datamesh up`), and Spark "
        f"(`datamesh up --engine spark`, `MESH_SPARK_MASTER={SPARK_MASTER}`) over the lake "
        "that export wrote, one engine after the other (a data directory serves one "
        "`datamesh up` at a time). Each metric is read whole as Arrow, over one connection: its "
        f"first request (cold), then {reps} more (warm: median (min-max)). RSS is sampled every "
        "50 ms (psutil) with each process's descendants: the mesh on Spark is the mesh's "
        "process plus its JVM. The machine is shared: the load average (1, 5, 15 min) before "
        "each measurement is in the notes.",
    )
    data = bench_data(root, scale)
    lakes = root / "lake"
    exported = export(data, lakes / f"scale-{scale}", scale, reps=reps)
    imported, started, session_mib = session_start(reps=reps)
    duckdb = on_engine(data, scale, engine="duckdb", reps=reps)
    spark = on_engine(data, scale, engine="spark", reps=reps, lake=exported.lake)
    section.tables += [
        export_table(exported),
        export_products_table(exported),
        engines_table(
            duckdb, spark, f"Every metric on both engines, scale {scale:,} (whole, as Arrow)"
        ),
        session_table(imported, started, session_mib, duckdb, spark),
    ]
    for metric, peaks in duckdb.rss.tests.items():
        section.rss.add(metric, {n: v for n, v in peaks.items() if n != "mesh"})
    section.rss_title = (
        f"Peak RSS of the domain services while the DuckDB mesh reads them, scale {scale:,} "
        "(MiB, each metric's requests)"
    )
    section.notes.append(
        f"Load average before: the exports {'; '.join(exported.loads)}; the DuckDB mesh "
        f"{duckdb.load}; the Spark mesh {spark.load}."
    )
    differ = [
        m for m in duckdb.bodies if "differ" in same_answer(duckdb.bodies[m], spark.bodies[m])
    ]
    section.targets.append(
        Target(
            f"every metric, Spark against DuckDB, scale {scale:,}",
            "the same answer" if not differ else f"**differ**: {', '.join(differ)}",
            "the same rows (docs/mesh.md: to the cent)",
            not differ,
        )
    )
    by_scale = {scale: duckdb}
    for other in sorted(set(scales) - {scale}):
        by_scale[other] = on_engine(bench_data(root, other), other, engine="duckdb", reps=1)
    if largest is None and len(by_scale) >= 2:  # where the line says 2 GiB: measure it there
        wanted = Fit.of({s: r.peak[0] for s, r in by_scale.items()}).scale_at(LIMIT_MIB)
        wanted -= wanted % ROUND_SCALE
        largest = min(wanted, affordable_scale(root, scale, exported))
        section.notes.append(
            f"The largest scale measured was chosen by the line through the smaller ones: "
            f"{wanted:,} where it reaches {LIMIT_MIB} MiB (rounded down to {ROUND_SCALE:,})"
            + (
                f", capped at {largest:,} by the free disk (the bench data and its lake)."
                if largest < wanted
                else "."
            )
        )
    if largest and largest not in by_scale:
        try:  # what the smaller scales measured is reported whatever happens here
            by_scale[largest] = on_engine(
                bench_data(root, largest), largest, engine="duckdb", reps=1
            )
        except (BenchError, psutil.Error) as error:
            section.notes.append(f"**Scale {largest:,} did not finish:** {error}")
    top = max(by_scale)
    top_export, top_spark = exported, spark
    if top != scale:
        try:
            data = bench_data(root, top)
            top_export = export(data, lakes / f"scale-{top}", top, reps=1)
            top_spark = on_engine(data, top, engine="spark", reps=1, lake=top_export.lake)
        except (BenchError, psutil.Error) as error:
            section.notes.append(f"**Spark at scale {top:,} did not finish:** {error}")
            top_spark = EngineRun("spark", top)
    growth, fit, verdict = memory_growth(by_scale)
    section.tables.append(growth)
    section.notes += verdict
    peak, _ = by_scale[top].peak
    section.targets.append(
        Target(
            "largest scale at which the DuckDB mesh's peak RSS fits 2 GiB",
            f"about {fit.scale_at(LIMIT_MIB):,} ({fit.text()}); measured at scale {top:,}: "
            f"{peak:.0f} MiB",
            "measured, not a goal",
            None,
        )
    )
    if top != scale and top_spark.rss.tests:
        lake_mib = top_export.total_bytes / 1024**2
        section.tables.append(
            engines_table(
                by_scale[top],
                top_spark,
                f"Both engines at scale {top:,}, the largest measured (one warm request; "
                f"the lake {lake_mib:,.0f} MiB, exported in "
                f"{seconds_text(Spread.of(top_export.whole))}, the command's peak RSS "
                f"{max(top_export.peaks):.0f} MiB)",
            )
        )
        section.notes.append(
            f"Load average before, scale {top:,}: the DuckDB mesh {by_scale[top].load}; "
            f"the export {top_export.loads[0]}; the Spark mesh {top_spark.load}."
        )
    return section


def affordable_scale(root: Path, scale: int, exported: ExportRuns) -> int:
    """The largest scale whose bench data and lake fit the free disk, keeping DISK_MARGIN free
    (estimated from the bench scale's data directory and lake, per unit of scale)."""
    directory = root / f"scale-{scale}"
    used = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    per_unit = (used + exported.total_bytes) / scale
    free = shutil.disk_usage(root).free - DISK_MARGIN
    fits = int(free / per_unit) if free > 0 else 0
    return fits - fits % ROUND_SCALE


def export_table(runs: ExportRuns) -> Table:
    table = Table(
        ["", "value"],
        title=f"`datamesh lake export` of every product, scale {runs.scale:,}, "
        f"{len(runs.whole)} repetition{'s' if len(runs.whole) > 1 else ''}",
    )
    table.rows.append(
        [
            "the command, start to exit (databases started and stopped)",
            seconds_text(Spread.of(runs.whole)),
        ]
    )
    for domain, seconds in sorted(runs.domains.items()):
        table.rows.append(
            [
                f"of which {domain}: first statement to last manifest",
                seconds_text(Spread.of(seconds)),
            ]
        )
    table.rows.append(["peak RSS of the command's process", f"{max(runs.peaks):.0f} MiB"])
    table.rows.append(
        [
            "the lake: products, files, bytes",
            f"{len(runs.products)}, {sum(p.files for p in runs.products.values())}, "
            f"{runs.total_bytes:,} ({runs.total_bytes / 1024**2:.1f} MiB)",
        ]
    )
    return table


def export_products_table(runs: ExportRuns) -> Table:
    table = Table(
        ["product", "rows", "files", "bytes", "bytes per row", "time"],
        title="Each product in the lake (time: from the previous product's manifest to its own)",
    )
    for name, product in sorted(runs.products.items(), key=lambda p: -p[1].bytes):
        table.rows.append(
            [
                name,
                f"{product.rows:,}",
                str(product.files),
                f"{product.bytes:,}",
                f"{product.bytes / product.rows:.1f}" if product.rows else "",
                seconds_text(Spread.of(product.seconds)),
            ]
        )
    return table


def engines_table(duckdb: EngineRun, spark: EngineRun, title: str) -> Table:
    """Each metric on both engines at one scale: time, the mesh's peak RSS, the answers."""
    table = Table(
        [
            "metric",
            "rows",
            "DuckDB cold",
            "DuckDB warm",
            "Spark cold",
            "Spark warm",
            "Spark / DuckDB (warm)",
            "DuckDB mesh peak RSS",
            "Spark mesh + JVM peak RSS",
            "answers",
        ],
        title=title,
    )
    for name in duckdb.rss.tests:
        if name in duckdb.failed or name in spark.failed:
            answers = "; ".join(
                f"{run.engine} failed: {run.failed[name]}"
                for run in (duckdb, spark)
                if name in run.failed
            )
        else:
            answers = same_answer(duckdb.bodies[name], spark.bodies[name])
        table.rows.append(
            [
                name,
                f"{duckdb.rows[name]:,}" if name in duckdb.rows else "",
                *_times(duckdb, name),
                *_times(spark, name),
                f"{spark.warm[name].median / duckdb.warm[name].median:.1f}x"
                if name in duckdb.warm and name in spark.warm
                else "",
                f"{duckdb.mesh_peak(name):.0f} MiB",
                f"{spark.mesh_peak(name):.0f} MiB",
                answers,
            ]
        )
    return table


def _times(run: EngineRun, metric: str) -> list[str]:
    """A metric's cold and warm times on a run, or that it failed."""
    if metric not in run.cold:
        return ["failed", "failed"]
    return [seconds_text(Spread.of([run.cold[metric]])), seconds_text(run.warm[metric])]


def session_table(
    imported: Spread, started: Spread, session_mib: float, duckdb: EngineRun, spark: EngineRun
) -> Table:
    table = Table(["", "DuckDB", "Spark"], title="Starting")
    table.rows.append(
        [
            "the mesh's Spark session alone: pyspark's import, then the session's start",
            "",
            f"{seconds_text(imported)}, then {seconds_text(started)} "
            f"(peak RSS with its JVM {session_mib:.0f} MiB)",
        ]
    )
    table.rows.append(
        [
            "`datamesh up` to its ready line",
            seconds_text(Spread.of([duckdb.ready])),
            seconds_text(Spread.of([spark.ready])),
        ]
    )
    table.rows.append(
        [
            f"the first answer after ready (`{FIRST}`; on Spark it waits for the session)",
            seconds_text(Spread.of([duckdb.first])),
            seconds_text(Spread.of([spark.first])),
        ]
    )
    table.rows.append(
        [
            "the mesh's RSS once ready (Spark: with its JVM, the session starting)",
            f"{duckdb.idle_mib:.0f} MiB",
            f"{spark.idle_mib:.0f} MiB",
        ]
    )
    return table


def memory_growth(by_scale: dict[int, EngineRun]) -> tuple[Table, Fit, list[str]]:
    """The DuckDB mesh's peak RSS at each scale, a straight line through them, where it
    reaches 2 GiB; the line through all but the largest scale, checked at the largest."""
    scales = sorted(by_scale)
    points = {s: by_scale[s].peak[0] for s in scales}
    fit = Fit.of(points)
    table = Table(
        [
            "scale",
            "orders, leads",
            "mesh RSS once ready",
            "mesh peak RSS (max over the metrics)",
            "on",
            "the line",
            "slowest metric (warm)",
        ],
        title=f"The DuckDB mesh's memory by scale ({SHAPE}); the line: {fit.text()}",
    )
    for s in scales:
        run = by_scale[s]
        peak, on = run.peak
        slowest = max(run.warm, key=lambda m: run.warm[m].median)
        table.rows.append(
            [
                f"{s:,}",
                f"{20 * s:,}" if s > 1 else "the sample",
                f"{run.idle_mib:.0f} MiB",
                f"{peak:.0f} MiB",
                on,
                f"{fit.at(s):.0f} MiB",
                f"{slowest} {seconds_text(run.warm[slowest])}",
            ]
        )
    notes = [
        f"The DuckDB mesh's peak RSS against the scale: {fit.text()} (least squares over scales "
        f"{', '.join(f'{s:,}' for s in scales)}); it reaches {LIMIT_MIB} MiB at scale "
        f"{fit.scale_at(LIMIT_MIB):,} ({20 * fit.scale_at(LIMIT_MIB):,} orders and leads): an "
        "extrapolation beyond the largest scale measured unless that is larger."
    ]
    if len(scales) >= 3:
        largest = scales[-1]
        before = Fit.of({s: points[s] for s in scales[:-1]})
        notes.append(
            f"The line through scales {', '.join(f'{s:,}' for s in scales[:-1])} alone "
            f"({before.text()}) predicts {before.at(largest):.0f} MiB at scale {largest:,}; "
            f"measured {points[largest]:.0f} MiB."
        )
    return table, fit, notes
