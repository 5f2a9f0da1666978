"""The DataMesh benchmark suite: `make bench`, or `.venv/bin/python -m bench [--quick]`.

Builds the bench data once if absent (`datamesh seed`, scales 1, 10 and 50,000, under
`--data-dir`), starts the mesh on it with `datamesh up`, and measures, in one run:

- startup: `datamesh up` on a fresh data directory, to ready;
- reads: our reads against B0, the floor (bench/b0.py), loaded by wrk, interleaved;
- metrics: the same kind of reads with the services' metrics on and off, interleaved, and on
  while /metrics is scraped every second;
- seed: the seed's notebook recipes against the mesh's metrics;
- export: a whole product into a DataFrame, JSON pages against the streamed formats;
- growth: the same reads at scale 1, 10 and the bench scale;
- cache: what the mesh remembers: each metric cold and repeated at the bench scale, and one
  under wrk on the sample, the cache on and off (the other sections run a cold mesh);
- lake: `datamesh lake export` at the bench scale, every mesh metric on DuckDB and on Spark
  over that lake, and the DuckDB mesh's peak RSS by scale (where it reaches 2 GiB);

with the peak RSS of each service during each test. Writes the results as Markdown
(bench/results.md) and prints them. A benchmark, never a test: nothing here runs in pytest.
The method is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench import exports, floor, growth, lake, mesh_cache, metrics_cost, recipes, startup
from bench.harness import (
    COLD_MESH,
    ROOT,
    BenchError,
    DataMeshUp,
    Spread,
    bench_data,
    machine,
    require_wrk,
    say,
)
from bench.report import Section, render

SECTIONS = ("startup", "reads", "metrics", "seed", "export", "growth", "cache", "lake")
GROWTH_SCALES = (1, 10)
LAKE_SCALES = "10,10000"  # besides the bench scale; --quick: 10


def options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, shorter wrk runs (development)"
    )
    parser.add_argument(
        "--reps",
        type=int,
        help="repetitions of every measurement (default 3, the metrics section 6; --quick: 1-2)",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds per wrk run (default 5; --quick: 2)"
    )
    parser.add_argument("--connections", type=int, default=10, help="wrk connections (default 10)")
    parser.add_argument(
        "--slow-threshold",
        type=float,
        default=0.25,
        help="a read whose single request takes longer (seconds) is measured sequentially, not by wrk",
    )
    parser.add_argument(
        "--scale", type=int, default=50_000, help="the bench scale (default 50,000)"
    )
    parser.add_argument(
        "--lake-scales",
        help="the lake section's other scales, where the DuckDB mesh's memory is measured "
        f"(comma-separated; default {LAKE_SCALES}; --quick: 10)",
    )
    parser.add_argument(
        "--lake-largest",
        type=int,
        help="the lake section's largest scale, where Spark runs too (default: where the "
        "DuckDB mesh's peak RSS reaches 2 GiB by the line through the other scales, as the disk "
        "allows, seeded once; 0: none; --quick: 0)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".datamesh" / "bench",
        help="where the bench data sets live, seeded once (default .datamesh/bench)",
    )
    parser.add_argument(
        "--only", help=f"comma-separated sections to run: {', '.join(SECTIONS)} (default all)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results.md", help="the Markdown results file"
    )
    args = parser.parse_args(argv)
    args.sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(
            f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}"
        )
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.read_reps = args.reps or (2 if quick else 3)
    args.metrics_reps = args.reps or (2 if quick else 6)  # small differences: more repetitions
    args.heavy_reps = args.reps or (1 if quick else 3)  # the seed's way, exports, startup
    args.growth_reps = args.reps or (2 if quick else 3)
    if quick and args.lake_largest is None:
        args.lake_largest = 0
    scales = args.lake_scales or ("10" if quick else LAKE_SCALES)
    try:
        args.lake_scales = tuple(int(s.replace("_", "")) for s in scales.split(","))
    except ValueError:
        parser.error(f"--lake-scales: whole numbers separated by commas, not '{scales}'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    wanted = args.sections
    if {"reads", "metrics"} & set(wanted):
        require_wrk()
    root = args.data_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    described = machine()
    started = time.monotonic()
    done: dict[str, Section] = {}
    failure: str | None = None
    try:
        if "startup" in wanted:
            done["startup"] = startup.run(root, reps=args.heavy_reps)
        by_scale: dict[int, dict[str, Spread]] = {}
        sizes: dict[int, dict[str, int]] = {}
        if set(wanted) & {"reads", "seed", "export", "growth"}:
            data = bench_data(root, args.scale)
            say(f"starting the mesh on scale {args.scale}...")
            with DataMeshUp(data, env=COLD_MESH).start() as mesh:
                token = mesh.token()
                if "reads" in wanted:
                    done["reads"] = floor.run(
                        mesh,
                        token,
                        root,
                        reps=args.read_reps,
                        seconds=args.duration,
                        connections=args.connections,
                        slow_threshold=args.slow_threshold,
                    )
                if "seed" in wanted:
                    done["seed"] = recipes.run(mesh, token, reps=args.heavy_reps)
                if "export" in wanted:
                    done["export"] = exports.run(mesh, token, reps=args.heavy_reps)
                if "growth" in wanted:
                    say(f"growth: scale {args.scale}")
                    by_scale[args.scale], sizes[args.scale] = growth.measure(
                        mesh, token, reps=args.growth_reps
                    )
        if "metrics" in wanted:  # starts two meshes of its own, side by side
            done["metrics"] = metrics_cost.run(
                root,
                args.scale,
                reps=args.metrics_reps,
                seconds=args.duration,
                connections=args.connections,
            )
        if "growth" in wanted:
            for scale in GROWTH_SCALES:
                data = bench_data(root, scale)
                say(f"growth: scale {scale}")
                with DataMeshUp(data, env=COLD_MESH).start() as mesh:
                    by_scale[scale], sizes[scale] = growth.measure(
                        mesh, mesh.token(), reps=args.growth_reps
                    )
            done["growth"] = growth.section(by_scale, sizes, reps=args.growth_reps)
        if "cache" in wanted:  # starts meshes of its own, the cache on
            done["cache"] = mesh_cache.run(
                root, args.scale, reps=args.heavy_reps, seconds=args.duration
            )
        if "lake" in wanted:  # starts its meshes, one after another
            done["lake"] = lake.run(
                root,
                args.scale,
                reps=args.heavy_reps,
                scales=args.lake_scales,
                largest=args.lake_largest,
            )
    except BenchError as error:
        failure = str(error)
        say(f"benchmark failed: {error}")
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception as error:  # a bug: report what was measured before it, then the error
        traceback.print_exc()
        failure = f"{type(error).__name__}: {error}"
    sections = [done[name] for name in SECTIONS if name in done]
    given = list(argv if argv is not None else sys.argv[1:])
    if "--out" in given:  # where the results go changes nothing measured
        at = given.index("--out")
        del given[at : at + 2]
    command = "python -m bench " + " ".join(a for a in given if not a.startswith("--out="))
    text = render(described, sections, command.strip())
    text += f"\nWhole run: {time.monotonic() - started:.0f} s.\n"
    if failure:
        text += f"\n**The run did not finish:** {failure}\n"
    args.out.write_text(text)
    print(text)
    say(f"written to {args.out}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
