"""A whole product into a pandas DataFrame on the client, in every format: JSON pages
followed by their `Link` cursor, and the streamed exports (NDJSON, CSV, Arrow, Parquet), with
the service's peak RSS during each (bench/stream_memory.py's question, on the real service)."""

from __future__ import annotations

import gc
import io
import time
from collections.abc import Callable
from urllib.parse import urljoin

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import (
    MIB,
    DataMeshUp,
    RssSampler,
    Spread,
    client,
    get_ok,
    say,
    seconds_text,
    timer,
)
from bench.report import Section, Table, Target

MAX_PAGE = 10_000
RSS_LIMIT_MB = 400


def json_pages(base: str, token: str) -> tuple[pd.DataFrame, int, float]:
    """JSON pages of the largest size, following `Link: rel="next"` to the end."""
    frames, size, download = [], 0, 0.0
    url: str | None = f"{base}?limit={MAX_PAGE}"
    with client(token) as http:
        while url:
            started = time.perf_counter()
            response = get_ok(http, url)
            download += time.perf_counter() - started
            size += len(response.content)
            frames.append(pd.DataFrame(orjson.loads(response.content)))
            following = response.links.get("next", {}).get("url")
            # the link is relative unless DATAMESH_PUBLIC_URL is set (docs/reading.md)
            url = urljoin(str(response.url), following) if following else None
    return pd.concat(frames, ignore_index=True), size, download


def streamed(
    base: str, token: str, fmt: str, read: Callable[[io.BytesIO], pd.DataFrame]
) -> tuple[pd.DataFrame, int, float]:
    with client(token) as http:
        started = time.perf_counter()
        body = get_ok(http, f"{base}?format={fmt}").content
        download = time.perf_counter() - started
    return read(io.BytesIO(body)), len(body), download


READERS: dict[str, Callable[[io.BytesIO], pd.DataFrame]] = {
    "ndjson": lambda body: pd.read_json(body, lines=True),
    "csv": lambda body: pd.read_csv(body),
    "arrow": lambda body: pa.ipc.open_stream(body).read_all().to_pandas(),
    "parquet": lambda body: pq.read_table(body).to_pandas(),
}
CLIENT_CODE = {
    "json": "`limit=10000` pages, `Link` followed, `pd.DataFrame(page)`, `pd.concat`",
    "ndjson": "`format=ndjson`, `pd.read_json(lines=True)`",
    "csv": "`format=csv`, `pd.read_csv`",
    "arrow": "`format=arrow`, `pa.ipc.open_stream(...).read_all().to_pandas()`",
    "parquet": "`format=parquet`, `pq.read_table(...).to_pandas()`",
}


def run(mesh: DataMeshUp, token: str, *, reps: int, product: str = "orders") -> Section:
    base = f"{mesh.url('sales')}/sales/v1/{product}"
    section = Section(
        "export",
        f"The whole `{product}` product into a pandas DataFrame",
        "Every row of the product into a DataFrame on the client, from the first request to "
        f"the DataFrame, in each format; the formats in turn, their order rotating, {reps} "
        "repetitions, median (min-max); `of which HTTP` is the time from the request to the "
        "body's last byte (the service's share, for JSON pages their sum), the rest is the "
        "client's parsing. The service's RSS is sampled every 50 ms (psutil) during each read; "
        "its peak is the largest over the repetitions.",
    )
    ways: dict[str, Callable[[], tuple[pd.DataFrame, int, float]]] = {
        "json": lambda: json_pages(base, token)
    }
    for fmt, reader in READERS.items():
        ways[fmt] = lambda fmt=fmt, reader=reader: streamed(base, token, fmt, reader)  # type: ignore[misc]
    names = list(ways)
    times: dict[str, list[float]] = {fmt: [] for fmt in names}
    downloads: dict[str, list[float]] = {fmt: [] for fmt in names}
    sizes: dict[str, int] = {}
    rows: dict[str, int] = {}
    peaks: dict[str, float] = {}
    with client(token) as http:  # warm the table's pages into the database's cache
        get_ok(http, f"{base}?format=csv")
    for rep in range(reps):
        say(f"export: repetition {rep + 1} of {reps}")
        for fmt in names[rep % len(names) :] + names[: rep % len(names)]:
            gc.collect()
            with RssSampler({"sales": mesh.pids["sales"]}) as rss, timer() as elapsed:
                frame, size, download = ways[fmt]()
            times[fmt].append(elapsed[0])
            downloads[fmt].append(download)
            sizes[fmt], rows[fmt] = size, len(frame)
            peaks[fmt] = max(peaks.get(fmt, 0.0), rss.peaks_mib()["sales"])
            del frame
    table = Table(
        [
            "format",
            "client code",
            "rows",
            "bytes",
            "time to DataFrame",
            "of which HTTP",
            "vs JSON pages",
            "service peak RSS",
        ]
    )
    json_time = Spread.of(times["json"])
    for fmt in names:
        speedup = Spread.of([j / t for j, t in zip(times["json"], times[fmt], strict=True)])
        table.rows.append(
            [
                fmt,
                CLIENT_CODE[fmt],
                f"{rows[fmt]:,}",
                f"{sizes[fmt]:,}",
                seconds_text(Spread.of(times[fmt])),
                seconds_text(Spread.of(downloads[fmt])),
                "1x" if fmt == "json" else speedup.text("x", 1),
                f"{peaks[fmt]:.0f} MiB",
            ]
        )
    section.tables.append(table)
    arrow = Spread.of(times["arrow"])
    speedup = json_time.median / arrow.median
    section.targets.append(
        Target(
            f"whole `{product}` ({rows['arrow']:,} rows) as Arrow into a DataFrame",
            f"{seconds_text(arrow)}, {speedup:.1f}x faster than JSON pages ({seconds_text(json_time)})",
            "< 3 s and >= 3x faster than JSON",
            arrow.median < 3 and speedup >= 3,
        )
    )
    worst = max(peaks, key=lambda f: peaks[f])
    worst_mb = peaks[worst] * MIB / 1e6
    section.targets.append(
        Target(
            "service peak RSS during any export",
            f"{worst_mb:.0f} MB = {peaks[worst]:.0f} MiB ({worst})",
            f"< {RSS_LIMIT_MB} MB",
            worst_mb < RSS_LIMIT_MB,
        )
    )
    return section
