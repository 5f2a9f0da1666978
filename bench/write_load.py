"""Write load on the sales service: orders from concurrent clients, then proof from the
database that every acknowledged order is there exactly once, priced whole, and nothing else.

Run on purpose (not a test): `make bench-writes` or
`.venv/bin/python bench/write_load.py [--seconds 60] [--clients 16]`.
It builds a throwaway embedded PostgreSQL with the sales database exactly as `datamesh up`
does (migrated, sample loaded, the service role granted: the CLI's own helpers), serves it
with one uvicorn worker in a separate process, and for `--seconds` each of `--clients`
asyncio clients (httpx) posts orders of 1 to 3 items, each with an Idempotency-Key of its
own; every `--retry-every`th order is sent again with its key on purpose, and must be replayed
byte for byte without a second order. Prints writes/s, answers by status, latency
percentiles; exits 1 if the database disproves an acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from services.cli import prepare_databases, start_databases, stop_databases, terminate_services
from services.sales.sample import REGION_BY_COUNTRY
from shared.security.auth import ensure_secret, mint_token
from shared.security.pseudonym import ensure_pseudonym_secret
from shared.storage.embedded import free_port

SUBJECT = "write-load"
PAYMENT_METHODS = ("Wire Transfer", "Credit Card")
GRACE_SECONDS = 20


@dataclass
class Tally:
    """What the clients saw."""

    acknowledged: dict[int, str] = field(default_factory=dict)  # order_id -> total_amount
    keys: dict[str, int] = field(default_factory=dict)  # Idempotency-Key -> order_id
    unanswered: set[str] = field(default_factory=set)  # keys whose request got no answer
    statuses: Counter[int | str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, first attempts answered
    replays: int = 0
    bad_replays: list[str] = field(default_factory=list)


def _order(rng: random.Random, customers: list[int], products: list[int]) -> dict[str, Any]:
    return {
        "customer_id": rng.choice(customers),
        "payment_method": rng.choice(PAYMENT_METHODS),
        "sales_rep": "Sarah Mitchell",
        "items": [
            {
                "product_id": product,
                "quantity": rng.randint(1, 5),
                "discount_percent": rng.choice((0, 5, 10, 12.5)),
            }
            for product in rng.sample(products, rng.randint(1, 3))
        ],
    }


async def _client(
    number: int,
    client: httpx.AsyncClient,
    deadline: float,
    customers: list[int],
    products: list[int],
    retry_every: int,
    tally: Tally,
) -> None:
    rng = random.Random(number)
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        key = f"load-{number}-{sent}"
        body = _order(rng, customers, products)
        started = time.perf_counter()
        try:
            response = await client.post(
                "/sales/v1/orders", json=body, headers={"Idempotency-Key": key}
            )
        except httpx.TransportError as exc:
            tally.unanswered.add(key)
            tally.statuses[type(exc).__name__] += 1
            continue
        tally.latencies.append(time.perf_counter() - started)
        tally.statuses[response.status_code] += 1
        if response.status_code != 201:
            continue
        order = response.json()
        tally.acknowledged[order["order_id"]] = str(order["total_amount"])
        tally.keys[key] = order["order_id"]
        if sent % retry_every == 0:  # a client that did not see the answer, retrying
            try:
                again = await client.post(
                    "/sales/v1/orders", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError as exc:
                tally.statuses[f"replay {type(exc).__name__}"] += 1
                continue
            tally.replays += 1
            if (
                again.status_code != 201
                or again.content != response.content
                or again.headers.get("idempotent-replayed") != "true"
            ):
                tally.bad_replays.append(key)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _prove(owner_url: str, first_new: int, tally: Tally) -> list[str]:
    """What the database disproves of the acknowledgements (nothing, if all is well)."""
    failures = []
    with psycopg.connect(owner_url) as conn:
        orders = conn.execute(
            "SELECT o.order_id, count(*) OVER (PARTITION BY o.order_id), o.total_amount::text, "
            "(SELECT coalesce(sum(i.line_total), 0) FROM order_items i "
            " WHERE i.order_id = o.order_id) = o.total_amount, "
            "(SELECT count(*) FROM order_items i WHERE i.order_id = o.order_id) "
            "FROM orders o WHERE o.order_id >= %s",
            (first_new,),
        ).fetchall()
        kept = dict(
            conn.execute(
                "SELECT key, (convert_from(response_body, 'UTF8')::jsonb ->> 'order_id')::bigint "
                "FROM idempotency_keys WHERE subject = %s",
                (SUBJECT,),
            ).fetchall()
        )
    found = {}
    for order_id, copies, total, summed, items in orders:
        found[order_id] = Decimal(total)
        if copies != 1:
            failures.append(f"order {order_id} stored {copies} times")
        if not summed:
            failures.append(f"order {order_id}: total_amount is not the sum of its items")
        if not 1 <= items <= 3:
            failures.append(f"order {order_id} has {items} items")
    for order_id, answered in tally.acknowledged.items():
        if order_id not in found:
            failures.append(f"acknowledged order {order_id} is missing")
        elif found[order_id] != Decimal(answered):
            failures.append(f"order {order_id}: answered {answered}, stored {found[order_id]}")
    extra = set(found) - set(tally.acknowledged)
    by_order = {order_id: key for key, order_id in kept.items()}
    for order_id in sorted(extra):  # only a write whose answer was lost may be there
        if by_order.get(order_id) not in tally.unanswered:
            failures.append(f"order {order_id} was written but never acknowledged")
    for key, order_id in tally.keys.items():
        if kept.get(key) != order_id:
            failures.append(f"key {key}: kept response names order {kept.get(key)}, not {order_id}")
    failures += [
        f"key {key}: the retry was not a byte-identical replay" for key in tally.bad_replays
    ]
    return failures


async def _load(
    base: str, token: str, seconds: float, clients: int, retry_every: int, owner_url: str
) -> Tally:
    with psycopg.connect(owner_url) as conn:
        customers = [
            row[0]
            for row in conn.execute(
                "SELECT customer_id FROM customers WHERE country = ANY(%s) ORDER BY 1",
                (list(REGION_BY_COUNTRY),),
            )
        ]
        products = [row[0] for row in conn.execute("SELECT product_id FROM products ORDER BY 1")]
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
        limits=limits,
    ) as client:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _client(n, client, deadline, customers, products, retry_every, tally)
                for n in range(clients)
            )
        )
    return tally


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sales service exited with code {process.returncode}")
        try:
            if httpx.get(f"{base}/sales/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the sales service did not become ready in 60s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--retry-every", type=int, default=10, help="retry every Nth order")
    args = parser.parse_args()
    for name in ("SALES_DATABASE_URL", "SALES_MIGRATION_DATABASE_URL"):
        os.environ.pop(name, None)  # a database of its own, never one configured
    with tempfile.TemporaryDirectory(prefix="datamesh-write-load-") as tmp:
        root = Path(tmp)
        databases = start_databases(root, ("sales",))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            prepare_databases(databases, dt.date.today())
            (database,) = databases
            with psycopg.connect(database.migration_url) as conn:
                row = conn.execute("SELECT coalesce(max(order_id), 0) + 1 FROM orders").fetchone()
                assert row is not None
                first_new = int(row[0])
            secret = ensure_secret(root)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATAMESH_JWT", "DATAMESH_JWKS"))
            }
            env |= {
                "SALES_DATABASE_URL": database.url,
                "DATAMESH_JWT_SECRET_FILE": str(secret),
                "DATAMESH_PSEUDONYM_SECRET_FILE": str(ensure_pseudonym_secret(root)),
                "DATAMESH_RATE_LIMIT_PER_MINUTE": "0",  # the load is one subject: no limit
                "DATAMESH_QUALITY_INTERVAL_SECONDS": "0",
            }
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            processes["sales"] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "services.sales.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--timeout-graceful-shutdown",
                    str(GRACE_SECONDS),
                ],
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                stdout=subprocess.DEVNULL,  # the service's access log: one line a request
            )
            _wait_ready(base, processes["sales"])
            token = mint_token(
                secret.read_text().strip(),
                ("sales:read", "sales:write"),
                ttl=dt.timedelta(seconds=args.seconds + 600),
                subject=SUBJECT,
            )
            started = time.monotonic()
            tally = asyncio.run(
                _load(base, token, args.seconds, args.clients, args.retry_every, database.url)
            )
            elapsed = time.monotonic() - started
            failures = _prove(database.migration_url, first_new, tally)
        finally:
            terminate_services(processes, grace=GRACE_SECONDS)
            stop_databases(databases)

    answered = sum(n for status, n in tally.statuses.items() if isinstance(status, int))
    print(f"clients: {args.clients}, seconds: {elapsed:.1f}, cpus: {os.cpu_count()}")
    print(
        f"orders acknowledged: {len(tally.acknowledged)} "
        f"({len(tally.acknowledged) / elapsed:.1f} writes/s); replays: {tally.replays}"
    )
    print(
        "answers by status: "
        + ", ".join(f"{status}: {n}" for status, n in sorted(tally.statuses.items(), key=str))
        + f" (answered {answered}, unanswered {len(tally.unanswered)})"
    )
    if tally.latencies:
        ms = [1000 * v for v in tally.latencies]
        print(
            f"latency ms: p50 {_percentile(ms, 0.50):.1f}, p95 {_percentile(ms, 0.95):.1f}, "
            f"p99 {_percentile(ms, 0.99):.1f}, mean {statistics.fmean(ms):.1f}, max {max(ms):.1f}"
        )
    if failures:
        print(f"DISPROVED ({len(failures)}):")
        for failure in failures[:20]:
            print(f"  {failure}")
        return 1
    print(
        f"database: all {len(tally.acknowledged)} acknowledged orders present exactly once, "
        "each total_amount the sum of its items; no order beyond them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
