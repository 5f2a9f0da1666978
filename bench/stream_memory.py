"""Peak memory of the service while it streams a 1,000,000-row product, per format.

Run on purpose (not a test): `make bench` or `.venv/bin/python bench/stream_memory.py`.
It creates a throwaway embedded PostgreSQL with a 1,000,000-row table, serves it with the
framework in a separate uvicorn process, reads the whole product in each streaming format,
and reports the server's resident memory before each read and its peak during it
(VmHWM, reset before each read).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from shared.declarations.products import Column, ColumnType, Domain, Product
from shared.storage.embedded import EmbeddedPostgres, free_port, wait_for_port

EVENTS = Product(
    name="events",
    source="events",
    description="Synthetic events for the streaming benchmark.",
    key=("event_id",),
    columns=(
        Column("event_id", ColumnType.BIGINT, "Identifier."),
        Column("amount", ColumnType.MONEY, "An amount."),
        Column("happened_at", ColumnType.TIMESTAMP, "When."),
        Column("label", ColumnType.TEXT, "A label."),
    ),
)
BENCH = Domain(
    name="bench",
    title="Bench",
    description="Benchmark domain",
    owner="bench@example.com",
    update_frequency="never",
    data_classification="internal",
    database="bench_db",
    products=(EVENTS,),
)


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def serve(url: str, port: int) -> None:
    """Serve the bench domain (runs in the child process)."""
    import uvicorn

    from shared.serving.app import create_domain_app

    uvicorn.run(
        create_domain_app(BENCH, database_url=url), host="127.0.0.1", port=port, log_level="warning"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--serve", nargs=2, metavar=("URL", "PORT"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedPostgres(Path(tmp), "bench")
        server.start(("bench_db",))
        url = server.url("bench_db")
        try:
            with psycopg.connect(url) as conn:
                conn.execute(
                    "CREATE TABLE events (event_id bigint PRIMARY KEY, amount numeric(14,2) NOT NULL,"
                    " happened_at timestamptz NOT NULL, label text NOT NULL)"
                )
                conn.execute(
                    "INSERT INTO events SELECT g, (g %% 100000) / 100.0, "
                    "timestamptz '2024-01-01' + g * interval '1 second', 'label-' || (g %% 1000) "
                    "FROM generate_series(1, %s) g",
                    (args.rows,),
                )
            port = free_port()
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", url, str(port)],
            )
            try:
                wait_for_port(port, timeout=30)
                print(f"rows: {args.rows:,}")
                print(
                    f"{'format':<8} {'bytes':>14} {'seconds':>8} {'RSS before':>11} {'peak during':>12}"
                )
                for fmt in ("ndjson", "csv", "arrow", "parquet"):
                    before = _rss_kib(child.pid)
                    Path(f"/proc/{child.pid}/clear_refs").write_text("5")  # reset the peak
                    started = time.perf_counter()
                    size = 0
                    with httpx.stream(
                        "GET",
                        f"http://127.0.0.1:{port}/bench/v1/events",
                        params={"format": fmt},
                        timeout=600,
                    ) as response:
                        response.raise_for_status()
                        for chunk in response.iter_raw():
                            size += len(chunk)
                    elapsed = time.perf_counter() - started
                    print(
                        f"{fmt:<8} {size:>14,} {elapsed:>8.2f} {before / 1024:>8.1f} MiB "
                        f"{_peak_kib(child.pid) / 1024:>8.1f} MiB"
                    )
            finally:
                child.terminate()
                child.wait()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
