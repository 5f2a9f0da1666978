"""A domain service under database faults, and its shutdown (docs/operations.md): a database
that is down, unreachable or frozen is a 503 with Retry-After within the pool timeout (plus
one second), never a 500 or a hang; a statement over the timeout is a 504; the service
recovers by itself when the database returns; a stream that loses its database ends without
its end; acknowledged writes survive a crash of PostgreSQL; SIGTERM lets in-flight requests
finish and refuses new ones."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import pyarrow as pa
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services import domain, sample
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage import migrations
from shared.storage.db import Database, durability_problems, grant_service_role, service_role
from shared.storage.embedded import EmbeddedPostgres, free_port
from shared.storage.sample_data import load_if_empty
from tests.conftest import ADMIN, AS_OF, create_database, owner_url, token
from tests.postgres import PostgresServer
from tests.servers import served
from tests.test_mesh_faults import hanging_server

ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # the end-of-stream marker of an Arrow stream
PACED_ROWS = 1000  # a paced read of website-traffic: about 2 ms a row, so about 2 s


@dataclass
class OwnServer:
    """An embedded PostgreSQL of the tests' own (not the session's), with the marketing
    domain migrated and loaded; its website_traffic made slow to read (paced, ~1 ms a row)."""

    server: EmbeddedPostgres
    url: str  # the service role's
    owner: str

    def postmaster(self) -> psutil.Process:
        pid = self.server.postmaster_pid()
        assert pid is not None
        return psutil.Process(pid)


@pytest.fixture(scope="module")
def own() -> Iterator[OwnServer]:
    # a directory of its own, outside pytest's numbered ones (which another pytest run on the
    # same machine may clean up while this one runs)
    with tempfile.TemporaryDirectory(prefix="datamesh-own-postgres-") as root:
        yield from _own_server(Path(root))


def _own_server(root: Path) -> Iterator[OwnServer]:
    server = EmbeddedPostgres(root, "marketing")
    database = domain("marketing").database
    server.start((database,))
    try:
        owner = server.url(database)
        migrations.upgrade("marketing", owner)
        asyncio.run(load_if_empty(domain("marketing"), owner, sample("marketing")(AS_OF)))
        with psycopg.connect(owner, autocommit=True) as conn:
            # a throwaway database: the product's source becomes a paced view of its rows
            conn.execute("ALTER TABLE website_traffic RENAME TO website_traffic_rows")
            conn.execute(
                "CREATE FUNCTION pace() RETURNS boolean VOLATILE LANGUAGE sql "
                "AS $$ SELECT true FROM pg_sleep(0.001) $$"
            )
            conn.execute(
                "CREATE VIEW website_traffic AS SELECT * FROM website_traffic_rows WHERE pace()"
            )
        role = service_role("marketing")
        asyncio.run(
            grant_service_role(
                owner,
                role,
                domain="marketing",
                password=server.role_password(role),
                set_password=True,
            )
        )
        with psycopg.connect(owner, autocommit=True) as conn:
            # read in key order through the index, so each row is paced as it is read (a sort
            # would pace every row before the first one is answered)
            conn.execute(f"ALTER ROLE {role} IN DATABASE {database} SET enable_sort = off")
        yield OwnServer(server, server.url(database, role), owner)
    finally:
        server.stop(mode="immediate")


def fault_settings(**changes: object) -> ServiceSettings:
    values: dict[str, object] = {
        "pool_size": 2,
        "pool_timeout_seconds": 1.0,
        "stream_batch_rows": 100,
        "statement_timeout_ms": 10_000,
    }
    return ServiceSettings.model_validate(values | changes)


@asynccontextmanager
async def service(
    url: str, settings: ServiceSettings
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The marketing service over ASGI: its app (started) and a client."""
    app = create_domain_app(domain("marketing"), database_url=url, settings=settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:
            yield app, client


def assert_unavailable(response: httpx.Response, settings: ServiceSettings) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "service_unavailable"
    assert "marketing database" in response.json()["detail"]
    assert "Traceback" not in response.text
    assert response.headers["retry-after"] == str(math.ceil(settings.pool_timeout_seconds) + 1)


# ---- durability ---------------------------------------------------------------------------


def test_the_embedded_servers_run_with_fsync_and_synchronous_commit_on(
    postgres_servers: dict[str, PostgresServer], database_urls: dict[str, str], own: OwnServer
) -> None:
    if os.environ.get("DATAMESH_TEST_POSTGRES", "embedded") != "embedded":
        pytest.skip("the settings of an external server are its operator's")
    for owner in (owner_url(database_urls["sales"]), own.owner):
        with psycopg.connect(owner) as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                row = conn.execute(f"SHOW {name}").fetchone()
                assert row == ("on",), name
    command_line = " ".join(own.postmaster().cmdline())
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert f"-c {name}=on" in command_line


def test_durability_settings_that_could_lose_writes_are_named() -> None:
    good = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    assert durability_problems(good) == []
    assert durability_problems(good | {"synchronous_commit": "local"}) == []
    assert durability_problems(good | {"synchronous_commit": "remote_apply"}) == []
    assert durability_problems(good | {"fsync": "off"}) == ["fsync is 'off' (must be on)"]
    assert durability_problems(good | {"full_page_writes": "off"}) == [
        "full_page_writes is 'off' (must be on)"
    ]
    assert durability_problems(good | {"synchronous_commit": "off"}) == [
        "synchronous_commit is 'off' (must not be off)"
    ]


async def test_a_service_refuses_to_start_on_a_database_that_could_lose_writes(
    postgres_servers: dict[str, PostgresServer],
) -> None:
    url = await asyncio.to_thread(
        create_database,
        postgres_servers,
        "marketing",
        "marketing_not_durable",
        sample("marketing")(AS_OF),
    )
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        conn.execute("ALTER DATABASE marketing_not_durable SET synchronous_commit = off")
    app = create_domain_app(domain("marketing"), database_url=url, settings=fault_settings())
    with pytest.raises(RuntimeError, match="synchronous_commit is 'off'"):
        async with LifespanManager(app):
            pass


async def test_acknowledged_writes_survive_a_crash_of_postgresql(own: OwnServer) -> None:
    settings = fault_settings()
    async with service(own.url, settings) as (_, client):
        assert (await client.get("/marketing/v1/campaigns?select=campaign_id")).status_code == 200
        acknowledged = []
        with psycopg.connect(own.url, autocommit=True) as conn:
            for i in range(50):  # each its own transaction, acknowledged by its commit
                row = conn.execute(
                    "INSERT INTO website_traffic_rows (visit_date, page_url, source, visitors, "
                    "page_views, bounce_rate, avg_time_on_page) "
                    "VALUES ('2024-10-18', %s, 'Organic', 1, 1, 0, 0) RETURNING traffic_id",
                    (f"/crash/{i}",),
                ).fetchone()
                assert row is not None
                acknowledged.append(row[0])
        pending = psycopg.connect(own.url)  # a write in flight, never committed
        pending.execute(
            "INSERT INTO website_traffic_rows (visit_date, page_url, source, visitors, "
            "page_views, bounce_rate, avg_time_on_page) "
            "VALUES ('2024-10-18', '/crash/pending', 'Organic', 1, 1, 0, 0)"
        )
        postmaster = own.postmaster()
        postmaster.send_signal(signal.SIGKILL)
        postmaster.wait(timeout=10)
        assert (own.server.pgdata / "postmaster.pid").exists()  # left behind, stale
        with pytest.raises(psycopg.OperationalError):
            pending.commit()
        pending.close()

        await asyncio.to_thread(own.server.start)  # recovers from the WAL
        with psycopg.connect(own.owner) as conn:
            rows = conn.execute(
                "SELECT traffic_id FROM website_traffic_rows WHERE page_url LIKE '/crash/%' "
                "ORDER BY traffic_id"
            ).fetchall()
        assert [r[0] for r in rows] == acknowledged
        # the service, never restarted, answers again
        read = await client.get("/marketing/v1/campaigns?select=campaign_id")
        assert read.status_code == 200
        with psycopg.connect(own.owner, autocommit=True) as conn:
            conn.execute("DELETE FROM website_traffic_rows WHERE page_url LIKE '/crash/%'")


# ---- database down, unreachable, frozen, slow ----------------------------------------------


async def test_an_exhausted_pool_is_a_503_within_the_pool_timeout(
    database_urls: dict[str, str],
) -> None:
    settings = fault_settings(pool_size=1)
    async with service(database_urls["marketing"], settings) as (app, client):
        database: Database = app.state.database
        async with database.connection():  # the pool's only connection, held
            started = time.monotonic()
            response = await client.get("/marketing/v1/campaigns")
            elapsed = time.monotonic() - started
        assert_unavailable(response, settings)
        assert settings.pool_timeout_seconds <= elapsed <= settings.pool_timeout_seconds + 1
        assert (await client.get("/marketing/v1/campaigns")).status_code == 200


async def test_a_database_that_never_answers_is_a_503_within_the_pool_timeout() -> None:
    settings = fault_settings()
    with hanging_server() as hanging:  # accepts connections, never speaks
        port = hanging.url.rsplit(":", 1)[1]
        url = f"postgresql://nobody:secret@127.0.0.1:{port}/marketing_db"
        async with service(url, settings) as (_, client):  # starts: checked when it answers
            for path in ("/marketing/v1/campaigns", "/marketing/v1/campaigns?format=arrow"):
                started = time.monotonic()
                response = await client.get(path)
                assert time.monotonic() - started <= settings.pool_timeout_seconds + 1
                assert_unavailable(response, settings)
            ready = await client.get("/marketing/readyz")
            assert ready.status_code == 503
            assert ready.headers["retry-after"] == "1"


@contextmanager
def frozen(own: OwnServer) -> Iterator[None]:
    """Every process of the server stopped (SIGSTOP): it keeps its sockets and answers none."""
    postmaster = own.postmaster()
    processes = [postmaster, *postmaster.children()]
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            process.resume()


async def test_a_frozen_database_is_a_503_within_the_pool_timeout_and_the_service_recovers(
    own: OwnServer,
) -> None:
    settings = fault_settings()
    async with service(own.url, settings) as (_, client):
        assert (await client.get("/marketing/v1/campaigns")).status_code == 200
        with frozen(own):
            for path in ("/marketing/v1/campaigns", "/marketing/readyz"):
                started = time.monotonic()
                response = await client.get(path)
                assert time.monotonic() - started <= settings.pool_timeout_seconds + 1
                assert response.status_code == 503
                assert "retry-after" in response.headers
            assert_unavailable(await client.get("/marketing/v1/campaigns"), settings)
        for _ in range(3):  # more reads than the pool holds connections
            assert (await client.get("/marketing/v1/campaigns")).status_code == 200
        assert (await client.get("/marketing/readyz")).status_code == 200


async def test_readyz_is_503_while_the_postmaster_is_stopped(own: OwnServer) -> None:
    # only the postmaster stopped: pooled connections (their backends) still answer, but the
    # server takes no new connection; readyz must not call that ready
    settings = fault_settings(readiness_timeout_seconds=1.0)
    async with service(own.url, settings) as (_, client):
        assert (await client.get("/marketing/readyz")).status_code == 200
        postmaster = own.postmaster()
        postmaster.suspend()
        try:
            started = time.monotonic()
            response = await client.get("/marketing/readyz")
            elapsed = time.monotonic() - started
        finally:
            postmaster.resume()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "service_unavailable"
        assert "no new connection and statement within 1 s" in response.json()["detail"]
        assert elapsed < settings.readiness_timeout_seconds + 1
        assert (await client.get("/marketing/readyz")).status_code == 200


async def test_a_statement_over_the_timeout_is_a_504_and_its_connection_stays_pooled(
    postgres_servers: dict[str, PostgresServer],
) -> None:
    url = await asyncio.to_thread(
        create_database, postgres_servers, "sales", "sales_slow", sample("sales")(AS_OF)
    )
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        # a throwaway database: one of its views made slow (the product schema is untouched)
        conn.execute("ALTER MATERIALIZED VIEW sales_summary RENAME TO sales_summary_rows")
        conn.execute(
            "CREATE VIEW sales_summary AS SELECT * FROM sales_summary_rows "
            "WHERE (SELECT true FROM pg_sleep(1))"
        )
        conn.execute("GRANT SELECT ON sales_summary TO sales_service")
    settings = fault_settings(statement_timeout_ms=200, pool_size=1)
    app = create_domain_app(domain("sales"), database_url=url, settings=settings)
    async with LifespanManager(app) as manager:
        database: Database = app.state.database
        async with database.connection() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ADMIN
        ) as client:
            for fmt in ("json", "csv", "arrow", "ndjson", "parquet"):
                started = time.monotonic()
                response = await client.get("/sales/v1/sales-summary", params={"format": fmt})
                assert time.monotonic() - started < 1.0  # cut at 0.2 s, not after the 1 s sleep
                assert response.status_code == 504, fmt
                assert response.headers["content-type"] == "application/problem+json"
                problem = response.json()
                assert problem["code"] == "statement_timeout"
                assert "statement timeout (200 ms)" in problem["detail"]
                assert problem["timeout_ms"] == 200
            counted = await client.get("/sales/v1/sales-summary", headers={"Prefer": "count=exact"})
            assert (counted.status_code, counted.json()["code"]) == (504, "statement_timeout")
            # the pool's one connection came back healthy: reads go on, on the same backend
            for _ in range(3):
                assert (await client.get("/sales/v1/customers?limit=1")).status_code == 200
        async with database.connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert not conn.is_in_transaction()
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# ---- outage under load, and a stream that loses its database --------------------------------


@dataclass
class Outcome:
    kind: str  # "json" or "arrow"
    status: int | None
    seconds: float
    response: httpx.Response | None = None
    error: str = ""


async def test_outage_under_a_stream_of_reads_every_answer_is_200_or_503(
    own: OwnServer,
) -> None:
    settings = fault_settings()
    app = create_domain_app(domain("marketing"), database_url=own.url, settings=settings)
    timeout = httpx.Timeout(5.0)
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def reader(client: httpx.AsyncClient, kind: str) -> None:
        params = {"select": "campaign_id,campaign_name", "format": kind}
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await client.get("/marketing/v1/campaigns", params=params)
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(kind, None, time.monotonic() - started, error=repr(exc)))
            else:
                outcomes.append(
                    Outcome(kind, response.status_code, time.monotonic() - started, response)
                )
            await asyncio.sleep(0.02)

    async def until(condition: str, check: object, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"no {condition} within {limit}s"
            await asyncio.sleep(0.05)

    def count(status: int, since: int = 0) -> int:
        return sum(o.status == status for o in outcomes[since:])

    with served(app) as base:
        async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=timeout) as client:
            readers = [asyncio.create_task(reader(client, k)) for k in ("json", "arrow", "json")]
            try:
                await until("reads", lambda: count(200) >= 6, 10)
                await asyncio.to_thread(own.server.stop, "immediate")
                down = len(outcomes)
                await until("503s", lambda: count(503, down) >= 6, 10)
                ready = await client.get("/marketing/readyz")
                assert (ready.status_code, ready.headers["retry-after"]) == (503, "1")
                await asyncio.to_thread(own.server.start)
                up = len(outcomes)
                await until("reads after the restart", lambda: count(200, up) >= 6, 15)
            finally:
                stop.set()
                await asyncio.gather(*readers)
            assert (await client.get("/marketing/readyz")).status_code == 200

    assert [o for o in outcomes if o.status not in (200, 503)] == []  # no 500, no error
    assert max(o.seconds for o in outcomes) < settings.pool_timeout_seconds + 1
    for outcome in outcomes:
        assert outcome.response is not None
        if outcome.status == 503:
            assert_unavailable(outcome.response, settings)
        elif outcome.kind == "arrow":  # whole: the end-of-stream marker read
            table = pa.ipc.open_stream(outcome.response.content).read_all()
            assert table.num_rows == 8
        else:
            assert len(outcome.response.json()) == 8


async def test_a_stream_that_loses_its_database_midway_ends_without_its_end(
    own: OwnServer,
) -> None:
    settings = fault_settings()
    app = create_domain_app(domain("marketing"), database_url=own.url, settings=settings)
    with served(app) as base:
        async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=10.0) as client:
            received = b""
            try:
                async with client.stream(
                    "GET",
                    "/marketing/v1/website-traffic",
                    params={"format": "arrow", "limit": str(PACED_ROWS)},
                ) as response:
                    assert response.status_code == 200  # started well
                    chunks = response.aiter_raw()
                    received += await anext(chunks)
                    await asyncio.to_thread(own.server.stop, "immediate")
                    with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                        async for chunk in chunks:
                            received += chunk
            finally:
                await asyncio.to_thread(own.server.start)
            # what arrived is an Arrow stream without its end-of-stream marker, and short
            assert not received.endswith(ARROW_EOS)
            assert len(received) > 0
            # a JSON page is read whole before it is answered: a clean 503 or 200, never cut
            for _ in range(2):
                page = await client.get("/marketing/v1/campaigns")
                assert page.status_code in (200, 503)
            assert (await client.get("/marketing/v1/campaigns")).status_code == 200


# ---- graceful shutdown --------------------------------------------------------------------


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextmanager
def uvicorn_service(name: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A domain service as `datamesh up` runs it: uvicorn in a process of its own, with a
    graceful shutdown of 10 s; its process and port (killed at the end if still running)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.serving.server",
            f"services.{name}.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={
            **os.environ,
            "DATAMESH_QUALITY_INTERVAL_SECONDS": "0",
            "DATAMESH_SHUTDOWN_GRACE_SECONDS": "10",
            **env,
        },
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


async def until_ready(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], name: str
) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the service did not start in 30s"
        try:
            if (await client.get(f"/{name}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)


def assert_shut_down_gracefully(process: subprocess.Popen[bytes]) -> None:
    # uvicorn ends by re-raising the signal once it has shut down gracefully
    assert process.wait(timeout=15) == -signal.SIGTERM
    assert process.stderr is not None
    log = process.stderr.read().decode()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


async def test_sigterm_lets_an_in_flight_stream_finish_and_refuses_new_connections(
    own: OwnServer,
) -> None:
    with uvicorn_service(
        "marketing", MARKETING_DATABASE_URL=own.url, DATAMESH_STREAM_BATCH_ROWS="100"
    ) as (process, port):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=10.0) as client:
            await until_ready(client, process, "marketing")

            received = b""
            async with client.stream(
                "GET",
                "/marketing/v1/website-traffic",
                params={"format": "arrow", "limit": str(PACED_ROWS)},
            ) as response:
                assert response.status_code == 200
                chunks = response.aiter_raw()
                received += await anext(chunks)
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # the listener closes at once: a new connection is refused
                while not _refused(port):
                    assert time.monotonic() - signalled < 5, "still accepting after SIGTERM"
                    await asyncio.sleep(0.05)
                with pytest.raises(httpx.ConnectError):
                    await client.get("/marketing/healthz")
                after = len(received)
                async for chunk in chunks:
                    received += chunk
            assert len(received) > after  # it went on after the signal
            assert received.endswith(ARROW_EOS)
            table = pa.ipc.open_stream(received).read_all()  # whole, end marker included
            assert table.num_rows == PACED_ROWS
            assert table.column("traffic_id").to_pylist() == list(range(1, PACED_ROWS + 1))
        assert_shut_down_gracefully(process)


@dataclass(frozen=True)
class Sent:
    """One POST of the stream: the email it created, and its answer (None: no answer)."""

    email: str
    status: int | None
    key: int | None = None


def _post_customers(
    base: str, prefix: str, stop: threading.Event, sent: list[Sent], refused: threading.Event
) -> None:
    """POST customers with unique emails until the service refuses connections (or `stop`)."""
    writer = {"Authorization": f"Bearer {token('sales:read', 'sales:write', 'sales:pii')}"}
    with httpx.Client(base_url=base, headers=writer, timeout=15.0) as client:
        n = 0
        while not stop.is_set():
            n += 1
            email = f"{prefix}-{n}@graceful.example"
            body = {"customer_name": "Graceful", "email": email, "country": "USA",
                    "company_size": "Small"}  # fmt: skip
            try:
                response = client.post("/sales/v1/customers", json=body)
            except httpx.ConnectError:
                sent.append(Sent(email, None))
                refused.set()
                return
            except httpx.TransportError:  # sent, the answer lost: it may or may not be written
                sent.append(Sent(email, None))
                continue
            key = response.json().get("customer_id") if response.status_code == 201 else None
            sent.append(Sent(email, response.status_code, key))


@pytest.fixture
def shutdown_sales(postgres_servers: dict[str, PostgresServer]) -> str:
    """A sales database of its own, loaded, for a service to be stopped under writes."""
    return create_database(postgres_servers, "sales", "sales_shutdown", sample("sales")(AS_OF))


async def test_sigterm_under_a_stream_of_writes_loses_no_acknowledged_write(
    shutdown_sales: str,
) -> None:
    url = shutdown_sales
    with uvicorn_service("sales", SALES_DATABASE_URL=url) as (process, port):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            await until_ready(client, process, "sales")
        sent: list[Sent] = []
        stop, refused = threading.Event(), threading.Event()
        senders = [
            threading.Thread(target=_post_customers, args=(base, f"c{i}", stop, sent, refused))
            for i in range(4)
        ]
        for sender in senders:
            sender.start()
        try:
            deadline = time.monotonic() + 30
            while sum(1 for s in sent if s.status == 201) < 40:
                assert time.monotonic() < deadline, f"too few writes answered: {sent[-5:]}"
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(refused.wait, 15), "still accepting after SIGTERM"
        finally:
            stop.set()
            for sender in senders:
                await asyncio.to_thread(sender.join, 30)
        assert_shut_down_gracefully(process)

    with psycopg.connect(owner_url(url)) as conn:
        rows = conn.execute(
            "SELECT email, customer_id FROM customers WHERE email LIKE '%%@graceful.example'"
        ).fetchall()
    stored = [email for email, _ in rows]
    acknowledged = {s.email: s.key for s in sent if s.status == 201}
    unanswered = {s.email for s in sent if s.status is None}
    assert [s for s in sent if s.status not in (201, None)] == []  # none answered an error
    assert len(acknowledged) >= 40
    assert len(stored) == len(set(stored))  # each once
    # every acknowledged write is there, with the key it was answered with
    assert {email: key for email, key in rows if email in acknowledged} == acknowledged
    # and nothing else but writes whose answer was lost
    assert set(stored) - set(acknowledged) <= unanswered
