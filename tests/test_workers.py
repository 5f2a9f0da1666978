"""Several processes serving one service (`--workers N`, replicas): rate limits that hold across
them (a shared Redis store, or each worker's share of the rate in memory; a store that fails
fails open to that share), and one leader per domain for the background jobs, which another
process takes over when it dies. Real Redis, real PostgreSQL, real processes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import psycopg
import pytest
import typer
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

import shared.serving.rate_limits
from services import cli, domain
from services.cli import DomainDatabase
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from shared.serving.app import create_domain_app
from shared.serving.rate_limits import open_storage
from shared.serving.server import default_workers
from shared.settings import ServiceSettings
from shared.storage.db import connection_capacity, connections_per_process
from shared.storage.leader import election_name, leader_lock_key
from tests.conftest import ADMIN, app_client, owner_url, sample_databases, token
from tests.postgres import PostgresServer
from tests.redis_server import free_port, redis_server

ROOT = Path(__file__).resolve().parent.parent
MESH_APP = "services.federation.app:app"


def bearer(subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('mesh:read', subject=subject)}"}


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def mesh_app(**settings: Any) -> FastAPI:
    """A mesh without domains: its list of metrics is a limited read that needs no domain."""
    return create_app(FederationSettings(domains={}), mesh_settings=ServiceSettings(**settings))


def store_errors(text: str) -> float:
    found = re.search(
        r'^datamesh_rate_limit_store_errors_total\{service="mesh"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def leader_gauge(text: str, service: str) -> float | None:
    found = re.search(rf'^datamesh_leader\{{service="{service}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


# --- rate limits in one process -------------------------------------------------------------


async def test_in_memory_each_worker_allows_its_share_of_a_callers_rate() -> None:
    caller = bearer("share")
    async with client_of(mesh_app(rate_limit_per_minute=10, workers=2)) as mesh:
        answers = [await mesh.get("/mesh/v1/metrics", headers=caller) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["ratelimit-limit"] for a in answers] == ["5"] * 6
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    assert answers[-1].json()["limit"] == 5
    # a rate below the workers still lets each worker serve one request a minute
    async with client_of(mesh_app(rate_limit_per_minute=3, workers=4)) as mesh:
        statuses = [(await mesh.get("/mesh/v1/metrics", headers=caller)).status_code for _ in "ab"]
    assert statuses == [200, 429]


async def test_a_shared_store_counts_every_process_in_one_window(redis_url: str) -> None:
    caller = bearer("replicas")
    # two processes of the mesh (say two replicas, each of two workers): one window in Redis
    settings = {"rate_limit_per_minute": 10, "workers": 2, "rate_limit_storage": redis_url}
    async with client_of(mesh_app(**settings)) as one, client_of(mesh_app(**settings)) as two:
        answers = [
            await (one if n % 2 else two).get("/mesh/v1/metrics", headers=caller) for n in range(12)
        ]
        other = await one.get("/mesh/v1/metrics", headers=bearer("someone-else"))
    assert [a.status_code for a in answers] == [200] * 10 + [429] * 2
    assert {a.headers["ratelimit-limit"] for a in answers} == {"10"}  # the whole rate
    remaining = [a.headers["ratelimit-remaining"] for a in answers]
    assert remaining == ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0", "0", "0"]
    assert 59 <= int(answers[-1].headers["ratelimit-reset"]) <= 61
    assert answers[-1].json()["detail"].startswith("More than 10 requests in a minute from ")
    assert (other.status_code, other.headers["ratelimit-remaining"]) == (200, "9")


async def test_an_unreachable_store_fails_open_to_the_process_share_until_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shared.serving.rate_limits, "RETRY_STORE_SECONDS", 0.3)
    port = free_port()  # nothing listens there yet
    store = f"redis://:not-a-real-password@127.0.0.1:{port}/0"
    caller = bearer("store-down")
    app = mesh_app(rate_limit_per_minute=10, workers=2, rate_limit_storage=store)
    with caplog.at_level(logging.WARNING, logger="datamesh.rate_limits"):
        async with client_of(app) as mesh:
            before = store_errors((await mesh.get("/metrics")).text)
            answers = [await mesh.get("/mesh/v1/metrics", headers=caller) for _ in range(6)]
            after = store_errors((await mesh.get("/metrics")).text)
            with redis_server(tmp_path / "redis", port):
                await asyncio.sleep(0.35)
                recovered = await mesh.get("/mesh/v1/metrics", headers=caller)
    # never a 500: counted in the process at its share, 5 of the 10
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"5"}
    assert after - before == 6
    # once the store answers, the caller counts there again, at the whole rate
    assert recovered.status_code == 200
    assert (recovered.headers["ratelimit-limit"], recovered.headers["ratelimit-remaining"]) == (
        "10",
        "9",
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "datamesh.rate_limits"]
    assert len(messages) == 2, messages  # once down, once back
    assert messages[0].startswith(f"the rate limit store redis://:***@127.0.0.1:{port}/0 failed (")
    assert messages[0].endswith(
        "the mesh service counts each caller in this process (5 a minute) until it answers; "
        "asked again every 0.3s"
    )
    assert messages[1] == (
        f"the rate limit store redis://:***@127.0.0.1:{port}/0 answers again: the mesh service "
        "counts its callers there"
    )
    assert not any("not-a-real-password" in m for m in messages)


def test_a_store_the_service_cannot_use_stops_it_at_start() -> None:
    # the app is built when its module is imported: the process stops before it serves
    schemes = (
        "memory://..., redis://..., rediss://..., redis+unix://..., redis+sentinel://..., "
        "redis+cluster://..., e.g. redis://127.0.0.1:6379/0"
    )
    with pytest.raises(ValueError) as unknown:
        mesh_app(rate_limit_storage="memcached://user:s3cret-pw@127.0.0.1:11211")
    assert str(unknown.value) == (
        "DATAMESH_RATE_LIMIT_STORAGE is not a storage URI the services use (its scheme "
        f"'memcached'): one of {schemes}"
    )
    with pytest.raises(ValueError) as no_scheme:
        mesh_app(rate_limit_storage="127.0.0.1:6379")
    assert str(no_scheme.value) == (
        "DATAMESH_RATE_LIMIT_STORAGE is not a storage URI the services use (it has no "
        f"scheme): one of {schemes}"
    )
    bad = "redis://:s3cret-pw@127.0.0.1:port/0"
    with pytest.raises(ValueError) as unusable:
        mesh_app(rate_limit_storage=bad)
    assert str(unusable.value) == (
        "DATAMESH_RATE_LIMIT_STORAGE 'redis://:***@127.0.0.1:port/0' cannot be used: "
        "ConfigurationError: Unable to parse storage uri redis://:***@127.0.0.1:port/0"
    )
    # the library's own async+ schemes are taken as they are
    assert ServiceSettings(rate_limit_storage=" async+redis://h:1/0 ").rate_limit_storage == (
        "async+redis://h:1/0"
    )
    assert type(open_storage("async+redis://h:1/0")).__name__ == "RedisStorage"
    assert ServiceSettings().rate_limit_storage == "memory://"


# --- rate limits across worker processes ----------------------------------------------------


class Served:
    """`python -m shared.serving.server <app> --workers N` on a free port, its access lines
    collected from its stdout."""

    def __init__(self, app: str, workers: int, env: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "shared.serving.server", app),
                *("--port", str(self.port), "--workers", str(workers)),
            ],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        self.access: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(b"{"):
                self.access.append(json.loads(line))

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}{path}").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)

    def workers(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(timeout=60) == 0
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def served(app: str, workers: int, **env: str) -> Iterator[Served]:
    server = Served(app, workers, env)
    try:
        yield server
    finally:
        if server.process.poll() is None or not server.process.stdout.closed:  # type: ignore[union-attr]
            server.stop()


def fire(base: str, path: str, headers: dict[str, str], count: int) -> list[httpx.Response]:
    """`count` requests from 8 threads, each on a connection of its own, so that the workers
    (which take turns accepting on the one socket) all get some."""

    def one(_: int) -> httpx.Response:
        return httpx.get(f"{base}{path}", headers=headers)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def by_worker(access: list[dict[str, Any]], path: str) -> dict[int, Counter[int]]:
    """The statuses each worker (pid) answered on the path."""
    answered: dict[int, Counter[int]] = {}
    for entry in access:
        if entry["path"] == path:
            answered.setdefault(entry["pid"], Counter())[entry["status"]] += 1
    return answered


@pytest.mark.slow
def test_with_two_workers_and_a_shared_store_a_callers_rate_holds(redis_url: str) -> None:
    path = "/mesh/v1/metrics"
    env = {
        "MESH_DOMAINS": "{}",
        "DATAMESH_RATE_LIMIT_PER_MINUTE": "60",
        "DATAMESH_RATE_LIMIT_STORAGE": redis_url,
    }
    with served(MESH_APP, 2, **env) as server:
        server.wait_ready("/mesh/healthz")
        workers = server.workers()
        answers = fire(server.base, path, bearer("two-workers-redis"), 120)
        server.stop()
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 60, 429: 60}  # exactly the rate: one window in Redis
    assert {a.headers["ratelimit-limit"] for a in answers} == {"60"}
    answered = by_worker(server.access, path)
    assert sorted(answered) == sorted(workers)  # both workers answered
    assert sum(c[200] for c in answered.values()) == 60


@pytest.mark.slow
def test_with_two_workers_in_memory_each_allows_half_a_callers_rate() -> None:
    path = "/mesh/v1/metrics"
    env = {"MESH_DOMAINS": "{}", "DATAMESH_RATE_LIMIT_PER_MINUTE": "60"}
    with served(MESH_APP, 2, **env) as server:
        server.wait_ready("/mesh/healthz")
        workers = server.workers()
        answers = fire(server.base, path, bearer("two-workers-memory"), 120)
        server.stop()
    assert {a.headers["ratelimit-limit"] for a in answers} == {"30"}
    answered = by_worker(server.access, path)
    assert sorted(answered) == sorted(workers)
    for statuses in answered.values():  # each worker: its first 30 allowed, the rest refused
        assert statuses[200] == min(30, statuses.total())
    allowed = sum(a.status_code == 200 for a in answers)
    assert allowed == sum(min(30, s.total()) for s in answered.values())
    assert allowed <= 60


# --- the leader of a domain's background jobs -----------------------------------------------


@pytest.fixture(scope="module")
def databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Databases of their own with the sample rows: these tests write."""
    return sample_databases(postgres_servers, "workers")


def lock_holders(url: str, name: str) -> list[str]:
    """The application names of the connections holding the domain's leader lock in the
    database (the server's other databases have their own leaders)."""
    key = leader_lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    with psycopg.connect(owner_url(url)) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchall()
    return [row[0] for row in rows]


def mark_a_view_change(url: str) -> None:
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        conn.execute("UPDATE leads SET lead_score = lead_score WHERE lead_id = 1")


async def pending_views(client: httpx.AsyncClient) -> list[str | None]:
    metadata = (await client.get("/marketing/v1/metadata")).json()
    return [
        t["freshness"]["pending_since"] for t in metadata["tables"].values() if t["kind"] == "view"
    ]


async def test_only_the_leader_runs_the_background_jobs(databases: dict[str, str]) -> None:
    url = databases["marketing"]
    settings = ServiceSettings(view_refresh_seconds=0.05, leader_check_seconds=0.1)
    with psycopg.connect(owner_url(url), autocommit=True) as other:
        # another process leads: it holds the lock
        other.execute("SELECT pg_advisory_lock(%s)", (leader_lock_key("marketing"),))
        app = create_domain_app_for(url, settings)
        async with app_client(app, ADMIN) as client:
            assert (await client.get("/marketing/readyz")).json()["leader"] is False
            assert leader_gauge((await client.get("/metrics")).text, "marketing") == 0
            mark_a_view_change(url)
            await asyncio.sleep(0.5)  # ten turns of the refresher: it skips every one
            assert None not in await pending_views(client)
            # the other process goes: this one takes over at its next turn, and refreshes
            other.execute("SELECT pg_advisory_unlock_all()")
            deadline = time.monotonic() + 5
            while any(await pending_views(client)):
                assert time.monotonic() < deadline, "the views were not refreshed"
                await asyncio.sleep(0.05)
            assert (await client.get("/marketing/readyz")).json()["leader"] is True
            assert leader_gauge((await client.get("/metrics")).text, "marketing") == 1
            assert lock_holders(url, "marketing") == [election_name("marketing")]
        # stopped, it resigned: the lock is free
        assert lock_holders(url, "marketing") == []


def create_domain_app_for(url: str, settings: ServiceSettings) -> FastAPI:
    return create_domain_app(domain("marketing"), database_url=url, settings=settings)


async def test_without_metrics_the_state_is_not_read(databases: dict[str, str]) -> None:
    url = databases["marketing"]
    for enabled, read in ((True, True), (False, False)):
        settings = ServiceSettings(metrics_enabled=enabled, metrics_state_seconds=0)
        app = create_domain_app_for(url, settings)
        async with app_client(app, ADMIN):
            assert bool(app.state.product_states.products) is read


@pytest.mark.slow
def test_with_two_workers_one_leads_and_another_takes_over_when_it_dies(
    databases: dict[str, str],
) -> None:
    url = databases["marketing"]
    env = {
        "MARKETING_DATABASE_URL": url,
        "DATAMESH_VIEW_REFRESH_SECONDS": "0.1",
        "DATAMESH_LEADER_CHECK_SECONDS": "0.2",
    }
    with served("services.marketing.app:app", 2, **env) as server:
        server.wait_ready("/marketing/readyz")
        workers = server.workers()
        assert len(workers) == 2

        def leader() -> int:
            deadline = time.monotonic() + 10
            while True:
                holders = lock_holders(url, "marketing")
                if holders:
                    assert len(holders) == 1, holders  # never two
                    return int(holders[0].rpartition("-")[2])
                assert time.monotonic() < deadline, "no leader"
                time.sleep(0.05)

        first = leader()
        assert first in workers
        # both contend, one leads: the gauge summed over the workers is 1 whichever answers
        for _ in range(6):
            scraped = httpx.get(f"{server.base}/metrics").text
            assert leader_gauge(scraped, "marketing") == 1
        os.kill(first, signal.SIGKILL)  # serve_workers starts another in its place
        deadline = time.monotonic() + 10
        while (second := leader()) == first:
            assert time.monotonic() < deadline, "no process took over"
            time.sleep(0.05)
        assert second in server.workers()
        # the new leader refreshes the views
        mark_a_view_change(url)
        deadline = time.monotonic() + 5
        with httpx.Client(base_url=server.base, headers=ADMIN) as client:
            while True:
                metadata = client.get("/marketing/v1/metadata").json()
                views = [t for t in metadata["tables"].values() if t["kind"] == "view"]
                if all(v["freshness"]["pending_since"] is None for v in views):
                    break
                assert time.monotonic() < deadline, "the views were not refreshed"
                time.sleep(0.05)
            scraped = client.get("/metrics").text
        assert leader_gauge(scraped, "marketing") == 1


# --- how many workers ----------------------------------------------------------------------


def test_the_default_workers_are_half_the_cores_from_1_to_4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cores, workers in ((1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (8, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cores: set(range(n)))
        assert default_workers() == workers


@pytest.mark.skipif(
    os.environ.get("DATAMESH_TEST_POSTGRES", "embedded") != "embedded",
    reason="the embedded server's connections",
)
async def test_the_workers_of_datamesh_up_fit_the_embedded_servers_connections(
    databases: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    conn = await asyncpg.connect(owner_url(databases["sales"]))
    try:
        capacity = await connection_capacity(conn)
    finally:
        await conn.close()
    assert capacity == 97  # PostgreSQL's default 100, 3 reserved for superusers
    settings = ServiceSettings()
    assert connections_per_process(settings) == 13
    # 4 workers, the most `datamesh up` starts unless told, fit with room for the CLI (5)
    sales = DomainDatabase("sales", databases["sales"], None, owner_url(databases["sales"]))
    await asyncio.to_thread(cli._refuse_too_many_connections, [sales], 4, settings)
    # 8 of them would not: `datamesh up --workers 8` stops before starting any
    with pytest.raises(typer.Exit):
        await asyncio.to_thread(cli._refuse_too_many_connections, [sales], 8, settings)
    assert capsys.readouterr().err == (
        "The sales service's 8 workers could open 104 connections to its database (13 each: "
        "DATAMESH_POOL_SIZE=10 and 3 more), more than the 92 it accepts (max_connections less "
        "those reserved, less 5 kept for the command line): fewer --workers, or a smaller "
        "DATAMESH_POOL_SIZE.\n"
    )
