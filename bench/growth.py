"""How the cost of the same reads grows with the data: single requests at scale 1 (the
sample), 10 and the bench scale."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from bench.floor import DEEP, PAGE, VIEWS, deep_position
from bench.harness import ARROW, DataMeshUp, Spread, client, get_ok, seconds_text
from bench.report import Section, Table


def measure(mesh: DataMeshUp, token: str, *, reps: int) -> tuple[dict[str, Spread], dict[str, int]]:
    """Each read's latency (one warm-up, then `reps` requests one at a time), and the table
    sizes the scale gives."""
    reads: list[tuple[str, str, dict[str, str]]] = []
    for dom, product, order in VIEWS:
        params = urlencode([("order", order), ("limit", str(PAGE))], safe=".,")
        reads.append(
            (f"{product} (limit {PAGE})", f"{mesh.url(dom)}/{dom}/v1/{product}?{params}", {})
        )
    orders = f"{mesh.url('sales')}/sales/v1/orders"
    reads.append((f"orders, first page (limit {PAGE})", f"{orders}?limit={PAGE}", {}))
    key, cursor = deep_position(mesh, token, DEEP)
    reads.append(
        (
            f"orders, keyset page at min({DEEP:,}, half the rows)",
            f"{orders}?limit={PAGE}&cursor={cursor}",
            {},
        )
    )
    for metric in ("lead-to-customer-journey", "campaign-roi"):
        reads.append(
            (
                f"mesh {metric} (Arrow, whole)",
                f"{mesh.url('mesh')}/mesh/v1/{metric}",
                {"Accept": ARROW},
            )
        )
    results: dict[str, Spread] = {}
    with client(token) as http:
        sizes = {
            table: int(
                get_ok(
                    http,
                    f"{mesh.url(dom)}/{dom}/v1/{table}?limit=1",
                    headers={"Prefer": "count=exact"},
                )
                .headers["content-range"]
                .split("/")[1]
            )
            for dom, table in (("sales", "orders"), ("sales", "customers"), ("marketing", "leads"))
        }
        sizes["orders: the keyset page starts after order_id"] = key
        for name, url, headers in reads:
            get_ok(http, url, headers=headers)
            latencies = []
            for _ in range(reps):
                started = time.perf_counter()
                get_ok(http, url, headers=headers)
                latencies.append(time.perf_counter() - started)
            results[name] = Spread.of(latencies)
    return results, sizes


def section(
    by_scale: dict[int, dict[str, Spread]], sizes: dict[int, dict[str, int]], *, reps: int
) -> Section:
    result = Section(
        "growth",
        "Growth: the same reads at scale 1, 10 and the bench scale",
        "Single requests (httpx, one connection, after one warm-up), one at a time, "
        f"{reps} repetitions, median (min-max); JSON pages unless said.",
    )
    scales = sorted(by_scale)
    table = Table(["read", *(f"scale {s:,}" for s in scales)])
    for name in by_scale[scales[0]]:
        table.rows.append([name, *(seconds_text(by_scale[s][name]) for s in scales)])
    shape = Table(["rows", *(f"scale {s:,}" for s in scales)], title="Data at each scale")
    for name in sizes[scales[0]]:
        shape.rows.append([name, *(f"{sizes[s][name]:,}" for s in scales)])
    result.tables += [table, shape]
    return result
