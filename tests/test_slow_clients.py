"""Slow and stalled readers of streamed products (docs/operations.md, "Slow and stalled
clients"): a client that stops reading gives back its database connection after the send
timeout, while other callers' reads go on; a caller over its stream bound, and streams over the
service's bound, are refused with a problem naming the bound."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest

from services import domain, sample
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.db import Database
from tests.conftest import AS_OF, create_database, owner_url, token
from tests.postgres import PostgresServer
from tests.servers import served

EXTRA_ROWS = 100_000  # about 15 MB of NDJSON: far more than any socket buffer holds


@pytest.fixture(scope="module")
def big_marketing(postgres_servers: dict[str, PostgresServer]) -> str:
    """A marketing database of its own whose website-traffic is large (the service role's URL)."""
    url = create_database(
        postgres_servers, "marketing", "marketing_slow_readers", sample("marketing")(AS_OF)
    )
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO website_traffic (visit_date, page_url, source, visitors, page_views, "
            "bounce_rate, avg_time_on_page) SELECT DATE '2024-01-01' + (n %% 300), "
            "'/bulk/' || n, 'Organic', 1, 1, 0, 0 FROM generate_series(1, %s) AS n",
            (EXTRA_ROWS,),
        )
    return url


def slow_settings(**changes: object) -> ServiceSettings:
    values: dict[str, object] = {
        "pool_size": 4,
        "pool_timeout_seconds": 0.5,
        "stream_batch_rows": 1000,
        "stream_send_timeout_seconds": 5.0,
        "view_refresh_seconds": 0,
    }
    return ServiceSettings.model_validate(values | changes)


def bearer(subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('marketing:read', subject=subject)}"}


@contextmanager
def stalled_reader(base: str, subject: str, fmt: str = "ndjson") -> Iterator[socket.socket]:
    """A client that asks for the whole of website-traffic as a stream and reads nothing, with
    a tiny receive buffer: the server's sends soon block."""
    host, port = base.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connecting
        client.connect((host, int(port)))
        request = (
            f"GET /marketing/v1/website-traffic?format={fmt} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {bearer(subject)['Authorization']}\r\n\r\n"
        )
        client.sendall(request.encode())
        yield client


def idle_in_transaction(url: str) -> int:
    """Sessions of the service role on the database that sit idle inside a transaction."""
    with psycopg.connect(owner_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'marketing_service' "
            "AND datname = current_database() AND state = 'idle in transaction'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def until(what: str, check: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"no {what} within {limit}s"
        await asyncio.sleep(0.1)


async def test_a_client_that_stops_reading_a_stream_gives_back_its_database_connection(
    big_marketing: str,
) -> None:
    settings = slow_settings(stream_send_timeout_seconds=1.0)
    app = create_domain_app(domain("marketing"), database_url=big_marketing, settings=settings)
    with served(app, settings=settings) as base, stalled_reader(base, "slow") as stalled:
        # the stream holds its cursor's transaction while its sends are blocked
        await until("stalled stream", lambda: idle_in_transaction(big_marketing) == 1, 10)
        async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
            page = await client.get(
                "/marketing/v1/campaigns", params={"limit": "1"}, headers=bearer("other")
            )
            assert (page.status_code, len(page.json())) == (200, 1)
            # within the send timeout (and well before the idle-in-transaction backstop) the
            # stream is aborted and its connection is given back
            await until("release", lambda: idle_in_transaction(big_marketing) == 0, 10)
            database: Database = app.state.database
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            for caller in ("other", "slow"):  # the pool serves everyone again
                again = await client.get(
                    "/marketing/v1/campaigns", params={"limit": "1"}, headers=bearer(caller)
                )
                assert again.status_code == 200
        # the stalled client got a cut answer: no final chunk, never a whole-looking one
        stalled.settimeout(5)
        received = b""
        try:
            while chunk := stalled.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        assert received.startswith(b"HTTP/1.1 200 ")
        assert not received.endswith(b"\r\n0\r\n\r\n")


async def test_a_caller_over_its_stream_bound_gets_a_429_naming_it(big_marketing: str) -> None:
    settings = slow_settings(max_streams_per_caller=1, max_streams=3)
    app = create_domain_app(domain("marketing"), database_url=big_marketing, settings=settings)
    with served(app, settings=settings) as base, stalled_reader(base, "greedy"):
        await until("stalled stream", lambda: idle_in_transaction(big_marketing) == 1, 10)
        async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
            params = {"format": "ndjson", "limit": "5"}
            refused = await client.get(
                "/marketing/v1/website-traffic", params=params, headers=bearer("greedy")
            )
            other = await client.get(
                "/marketing/v1/website-traffic", params=params, headers=bearer("other")
            )
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    problem = refused.json()
    assert (problem["code"], problem["limit"], problem["bound"]) == (
        "too_many_streams",
        1,
        "per_caller",
    )
    assert problem["detail"] == (
        "The token subject 'greedy' already has 1 streamed reads open, the most one caller may "
        "have at once (1, DATAMESH_MAX_STREAMS_PER_CALLER); let one finish, or read JSON pages."
    )
    assert other.status_code == 200
    assert len(other.text.splitlines()) == 5


async def test_streams_over_the_service_bound_get_a_503_while_pages_still_answer(
    big_marketing: str,
) -> None:
    settings = slow_settings(max_streams=1)
    app = create_domain_app(domain("marketing"), database_url=big_marketing, settings=settings)
    with served(app, settings=settings) as base, stalled_reader(base, "first", fmt="csv"):
        await until("stalled stream", lambda: app.state.database.engine.pool.checkedout() == 1, 10)
        async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
            busy = await client.get(
                "/marketing/v1/website-traffic", params={"format": "csv"}, headers=bearer("next")
            )
            page = await client.get(
                "/marketing/v1/website-traffic", params={"limit": "3"}, headers=bearer("next")
            )
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    problem = busy.json()
    assert (problem["code"], problem["limit"], problem["bound"]) == ("streams_busy", 1, "service")
    assert problem["detail"] == (
        "The service is serving 1 streamed reads, the most it serves at once (1, "
        "DATAMESH_MAX_STREAMS); retry shortly, or read JSON pages."
    )
    assert (page.status_code, len(page.json())) == (200, 3)


def test_stream_bounds_default_to_a_fraction_of_the_pool() -> None:
    assert ServiceSettings().stream_slots == 5  # half of the default pool of 10
    assert ServiceSettings(pool_size=3).stream_slots == 1
    assert ServiceSettings(pool_size=1).stream_slots == 1
    assert ServiceSettings(pool_size=10, max_streams=7).stream_slots == 7
    assert ServiceSettings().max_streams_per_caller == 3
