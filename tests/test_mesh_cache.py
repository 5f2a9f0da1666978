"""A mesh that remembers (services/federation/cache.py): a repeated metric read revalidates its
inputs (`304`s) and answers the rows it computed before, while a write to any input shows in
the next read, also under concurrent reads; requests share rounds; the cache stays within its
bound and says what it holds in /metrics. Real domain services over HTTP, on databases of
their own."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import domain
from services.federation.app import create_app
from services.federation.cache import Rounds, TableCache
from services.federation.fetch import Input, Keys, key_filter
from services.federation.settings import FederationSettings
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import app_client, owner_url, sample_databases
from tests.mesh_oracle import METRIC_NAMES
from tests.postgres import PostgresServer
from tests.servers import served

ROI = "/mesh/v1/campaign-roi"


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    return sample_databases(postgres_servers, "meshcache")


@pytest.fixture(scope="module")
def domains(databases: dict[str, str], settings: ServiceSettings) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                served(create_domain_app(domain(name), database_url=url, settings=settings))
            )
            for name, url in databases.items()
        }


def mesh(domains: dict[str, str], **settings: Any) -> Any:
    app = create_app(FederationSettings.model_validate({"domains": domains, **settings}))
    return app_client(app)


@pytest.fixture
async def remembering(domains: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with mesh(domains) as client:
        yield client


@pytest.fixture
async def forgetful(domains: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The oracle: a mesh that keeps nothing (every input read whole, every answer computed)."""
    async with mesh(domains, cache_max_bytes=0) as client:
        yield client


async def counters(client: httpx.AsyncClient) -> dict[tuple[str, ...], float]:
    """The mesh's cache counters and gauges from /metrics, by name and labels."""
    text = (await client.get("/metrics")).text
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("datamesh_mesh_input_reads", "datamesh_mesh_answers")):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    what = labels.get("outcome") or labels.get("how", "")
                    name = labels.get("product") or labels.get("metric", "")
                    found[(sample.name, name, what)] = sample.value
        elif family.name.startswith("datamesh_mesh_cache"):
            for sample in family.samples:
                found[(sample.name,)] = sample.value
    return found


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def sql(databases: dict[str, str], name: str, statement: str) -> None:
    with psycopg.connect(owner_url(databases[name]), autocommit=True) as conn:
        conn.execute(statement)


async def test_a_repeated_read_revalidates_and_is_not_computed_again(
    remembering: httpx.AsyncClient, forgetful: httpx.AsyncClient
) -> None:
    first = await remembering.get(ROI)
    assert first.status_code == 200
    before = await counters(remembering)
    again = await remembering.get(ROI)
    assert again.status_code == 200 and again.content == first.content
    after = await counters(remembering)
    assert again.content == (await forgetful.get(ROI)).content
    reads = "datamesh_mesh_input_reads_total"
    assert delta(after, before) == {
        (reads, "leads", "not_modified"): 1,
        (reads, "customers", "not_modified"): 1,
        (reads, "orders", "not_modified"): 1,
        (reads, "campaigns", "not_modified"): 1,
        ("datamesh_mesh_answers_total", "campaign-roi", "kept"): 1,
    }


@pytest.mark.parametrize("metric", METRIC_NAMES)
async def test_every_metric_from_the_cache_equals_the_oracle(
    remembering: httpx.AsyncClient, forgetful: httpx.AsyncClient, metric: str
) -> None:
    path = f"/mesh/v1/{metric}"
    cold, warm = await remembering.get(path), await remembering.get(path)
    oracle = await forgetful.get(path)
    assert cold.status_code == warm.status_code == oracle.status_code == 200
    assert cold.content == warm.content == oracle.content


async def test_a_write_to_any_input_is_in_the_next_read(
    remembering: httpx.AsyncClient, forgetful: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    rows = {r["campaign_id"]: r for r in (await remembering.get(ROI)).json()}
    sql(databases, "marketing", "UPDATE campaigns SET spent = spent + 1 WHERE campaign_id = 1")
    after = {r["campaign_id"]: r for r in (await remembering.get(ROI)).json()}
    assert Decimal(str(after[1]["spent"])) == Decimal(str(rows[1]["spent"])) + 1
    assert {k: v for k, v in after.items() if k != 1} == {k: v for k, v in rows.items() if k != 1}
    sql(
        databases,
        "sales",
        "UPDATE orders SET total_amount = total_amount + 10 WHERE order_status <> 'Cancelled'",
    )
    changed = await remembering.get(ROI)
    assert changed.content == (await forgetful.get(ROI)).content
    assert changed.json() != list(after.values())


async def test_concurrent_reads_share_rounds_and_never_miss_a_write(
    remembering: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    """Sixteen readers at once, a write between bursts: every read that began after a write
    committed has it, and the domains saw fewer revalidations than requests."""
    before = await counters(remembering)
    for step in range(1, 6):
        sql(
            databases,
            "marketing",
            f"UPDATE campaigns SET spent = {1000 + step} WHERE campaign_id = 2",
        )
        answers = await asyncio.gather(*(remembering.get(ROI) for _ in range(16)))
        for answer in answers:
            row = next(r for r in answer.json() if r["campaign_id"] == 2)
            assert Decimal(str(row["spent"])) == 1000 + step
    reads = delta(await counters(remembering), before)
    campaigns = sum(
        v for k, v in reads.items() if k[:2] == ("datamesh_mesh_input_reads_total", "campaigns")
    )
    assert 5 <= campaigns < 5 * 16


async def test_the_cache_holds_within_its_bound(domains: dict[str, str]) -> None:
    async with mesh(domains, cache_max_bytes=20_000) as small:
        for metric in METRIC_NAMES:
            assert (await small.get(f"/mesh/v1/{metric}")).status_code == 200
        held = await counters(small)
    assert 0 < held[("datamesh_mesh_cache_bytes",)] <= 20_000
    assert held[("datamesh_mesh_cache_entries",)] >= 1


def test_the_least_recently_used_go_first() -> None:
    import pyarrow as pa

    cache = TableCache(max_bytes=3 * 800)
    tables = {k: pa.table({"x": pa.array(range(100), pa.int64())}) for k in "abcd"}
    for key in "abc":
        cache.put(key, f"tag-{key}", tables[key])
    assert cache.bytes == 2400 and len(cache) == 3
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", "tag-d", tables["d"])
    assert [k for k in "abcd" if cache.get(k) is not None] == ["a", "c", "d"]
    cache.put("big", "tag", pa.table({"x": pa.array(range(1000), pa.int64())}))
    assert cache.get("big") is None and cache.bytes == 2400


async def test_a_round_under_way_is_never_joined() -> None:
    rounds: Rounds[int] = Rounds()
    started: list[int] = []
    gates = [asyncio.Event(), asyncio.Event()]

    async def work() -> int:
        started.append(len(started))
        await gates[len(started) - 1].wait()
        return len(started)

    first = asyncio.create_task(rounds.run(work))
    await asyncio.sleep(0)
    late = [asyncio.create_task(rounds.run(work)) for _ in range(3)]
    await asyncio.sleep(0)
    assert started == [0]  # the late ones wait for the next round
    gates[0].set()
    assert await first == 1
    await asyncio.sleep(0)
    assert started == [0, 1]  # one round for all three
    gates[1].set()
    assert await asyncio.gather(*late) == [2, 2, 2]


async def test_a_failed_round_fails_its_waiters_only() -> None:
    rounds: Rounds[int] = Rounds()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise RuntimeError("the domain is down")
        return calls

    first = asyncio.create_task(rounds.run(work))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(rounds.run(work)) for _ in range(2)]
    assert await first == 1
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [str(r) for r in results] == ["the domain is down"] * 2
    assert await rounds.run(work) == 3


async def test_a_metric_answers_an_etag_and_304_until_an_input_moves(
    remembering: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    first = await remembering.get(ROI, params={"format": "csv"})
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    same = await remembering.get(ROI, params={"format": "csv"}, headers={"If-None-Match": tag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", tag)
    assert same.headers["datamesh-engine"] == "duckdb"
    other = await remembering.get(ROI, headers={"If-None-Match": tag})  # JSON: another tag
    assert other.status_code == 200 and other.headers["etag"] != tag
    sql(databases, "marketing", "UPDATE campaigns SET spent = spent + 2 WHERE campaign_id = 3")
    moved = await remembering.get(ROI, params={"format": "csv"}, headers={"If-None-Match": tag})
    assert moved.status_code == 200 and moved.headers["etag"] != tag
    assert moved.content != first.content


async def test_orders_are_read_for_the_matched_customers_only(
    domains: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The semi-join pushed to sales: the customers Converted leads matched, as a POST read's
    `customer_id=in.(...)`; the answer is the oracle's (the metric tests compare every one)."""
    caplog.set_level(logging.INFO, logger="datamesh.access")
    async with mesh(domains) as fresh:
        assert (await fresh.get(ROI)).status_code == 200
    reads = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "datamesh.access" and '"service":"sales"' in r.getMessage()
    ]
    orders = [(r["method"], r["path"]) for r in reads if r["product"] == "orders"]
    assert orders == [("POST", "/sales/v1/query/orders")]


def test_a_key_list_too_long_for_a_body_reads_every_row() -> None:
    source = Input("orders", "sales", "orders", ("order_id",), keys=Keys("customer_id", "-"))
    assert key_filter(source, [1, 2, 30]) == b"customer_id=in.(1,2,30)"
    assert key_filter(source, ["a,b", 'q"t', "plain", "x y"]) == (
        b"customer_id=in.(%22a,b%22,%22q%5C%22t%22,plain,%22x%20y%22)"
    )
    assert key_filter(source, list(range(200_000))) is None  # over MAX_KEY_BYTES
