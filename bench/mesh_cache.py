"""What the mesh remembers (docs/mesh.md, "A mesh that remembers"; issue: performance, round
two, items 3 to 5), measured on a mesh with its cache on (`MESH_CACHE_MAX_BYTES`'s default):

- at the bench scale, each metric read whole as Arrow: cold (its first read on a fresh mesh:
  every input read, the orders for the matched customers only) and repeated (the inputs
  revalidated by their ETags, 304s; the answer kept), with the mesh's peak RSS over each;
- on the sample (`datamesh up` on an empty data directory), one metric under wrk at 8
  connections: the cache on, and off (`MESH_CACHE_MAX_BYTES=0`) for comparison, interleaved.

The other sections run the mesh with its cache off, so that the seed's recipes meet a cold mesh
on every repetition."""

from __future__ import annotations

from pathlib import Path

from bench.harness import (
    ARROW,
    DataMeshUp,
    RssSampler,
    Spread,
    bench_data,
    client,
    get_ok,
    run_wrk,
    say,
    seconds_text,
    timer,
)
from bench.report import Section, Table, Target

METRIC_UNDER_LOAD = "campaign-roi"
REPEATED_TARGET = 0.100  # seconds: a repeated metric read at the bench scale (aim: 0.020)
LOAD_TARGET = 500.0  # requests a second on the sample under wrk -c8
RSS_TARGET_MB = 300.0  # the mesh's peak RSS computing any metric at the bench scale


def _metrics(mesh: DataMeshUp, token: str) -> list[str]:
    with client(token) as http:
        listed = get_ok(http, f"{mesh.url('mesh')}/mesh/v1/metrics").json()
    return [entry["name"] for entry in listed]


def _read(mesh: DataMeshUp, token: str, metric: str) -> tuple[float, int]:
    """One whole read of the metric as Arrow: seconds, and bytes."""
    with client(token) as http, timer() as elapsed:
        response = get_ok(http, f"{mesh.url('mesh')}/mesh/v1/{metric}", headers={"Accept": ARROW})
    return elapsed[0], len(response.content)


def at_scale(section: Section, root: Path, scale: int, reps: int) -> None:
    data = bench_data(root, scale)
    say(f"cache: scale {scale}, a fresh mesh with its cache on")
    table = Table(
        [
            "metric",
            "first read",
            f"repeated (median of {reps})",
            "first / repeated",
            "mesh peak RSS",
        ],
        title=f"Each metric at scale {scale:,}, whole as Arrow",
    )
    worst_repeated = 0.0
    worst_rss = 0.0
    with DataMeshUp(data).start() as mesh:
        token = mesh.token()
        for metric in _metrics(mesh, token):
            with RssSampler({"mesh": mesh.pids["mesh"]}) as rss:
                cold, _ = _read(mesh, token, metric)
                repeated = Spread.of([_read(mesh, token, metric)[0] for _ in range(reps)])
            peak = rss.peaks_mib()["mesh"]
            section.rss.add(f"scale {scale:,}: {metric}", rss.peaks_mib())
            worst_repeated = max(worst_repeated, repeated.median)
            worst_rss = max(worst_rss, peak * 1.048576)  # MiB to MB
            table.rows.append(
                [
                    metric,
                    seconds_text(Spread.of([cold])),
                    seconds_text(repeated),
                    f"{cold / repeated.median:.0f}x",
                    f"{peak:.0f} MiB",
                ]
            )
    section.tables.append(table)
    section.targets.append(
        Target(
            f"repeated metric read at scale {scale:,} (the slowest metric)",
            f"{worst_repeated * 1000:.0f} ms",
            f"< {REPEATED_TARGET * 1000:.0f} ms",
            worst_repeated < REPEATED_TARGET,
        )
    )
    section.targets.append(
        Target(
            f"mesh peak RSS over every metric at scale {scale:,}",
            f"{worst_rss:.0f} MB",
            f"< {RSS_TARGET_MB:.0f} MB",
            worst_rss < RSS_TARGET_MB,
        )
    )


def on_the_sample(section: Section, root: Path, reps: int, seconds: float) -> None:
    table = Table(
        ["mesh", "requests/s (median)", "p50", "p99"],
        title=f"`/mesh/v1/{METRIC_UNDER_LOAD}` on the sample under wrk, 8 connections, "
        f"{seconds:g} s runs, {reps} each, interleaved",
    )
    results: dict[str, list[tuple[float, float, float]]] = {"cache on": [], "cache off": []}
    meshes = {
        "cache on": DataMeshUp(root / "sample-cache-on"),
        "cache off": DataMeshUp(root / "sample-cache-off", env={"MESH_CACHE_MAX_BYTES": "0"}),
    }
    for mesh in meshes.values():
        mesh.start()
    try:
        tokens = {label: mesh.token() for label, mesh in meshes.items()}
        for label, mesh in meshes.items():  # warm: discovery, the first computation
            _read(mesh, tokens[label], METRIC_UNDER_LOAD)
        for rep in range(reps):
            for label in meshes if rep % 2 == 0 else reversed(list(meshes)):
                say(f"cache: the sample under load, {label}, run {rep + 1} of {reps}")
                url = f"{meshes[label].url('mesh')}/mesh/v1/{METRIC_UNDER_LOAD}"
                with RssSampler(meshes[label].pids) as rss:
                    result = run_wrk(url, tokens[label], connections=8, seconds=seconds)
                section.rss.add(f"sample under load: {label}", rss.peaks_mib())
                results[label].append((result.requests_per_second, result.p50, result.p99))
    finally:
        for mesh in meshes.values():
            mesh.stop()
    for label, runs in results.items():
        table.rows.append(
            [
                label,
                f"{Spread.of([r[0] for r in runs]).median:,.0f}",
                f"{Spread.of([r[1] for r in runs]).median * 1000:.1f} ms",
                f"{Spread.of([r[2] for r in runs]).median * 1000:.1f} ms",
            ]
        )
    section.tables.append(table)
    served = Spread.of([r[0] for r in results["cache on"]]).median
    section.targets.append(
        Target(
            f"`{METRIC_UNDER_LOAD}` on the sample under wrk -c8",
            f"{served:,.0f} requests/s",
            f">= {LOAD_TARGET:,.0f} requests/s",
            served >= LOAD_TARGET,
        )
    )


def run(root: Path, scale: int, *, reps: int, seconds: float) -> Section:
    section = Section(
        "cache",
        "A mesh that remembers",
        'The mesh with its cache on (docs/mesh.md, "A mesh that remembers"). At the bench '
        "scale, the metrics read whole as Arrow one after another on a fresh mesh, each: its "
        "first read (cold for the first metric: every input read, the orders of the matched "
        "customers only, through a POST read; a later metric finds the inputs it shares with "
        "those before it kept, and revalidates them), then "
        f"{reps} repeated reads (each input revalidated by its ETag, a 304; the answer kept), "
        "median; the mesh's peak RSS over both. On the sample, one metric under wrk with 8 "
        "connections, the cache on against off (`MESH_CACHE_MAX_BYTES=0`), interleaved. "
        "That a write shows in the next read is tested (tests/test_mesh_cache.py), not "
        "measured here.",
    )
    at_scale(section, root, scale, reps)
    on_the_sample(section, root, reps, seconds)
    return section
