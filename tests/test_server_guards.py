"""The connection-level defences every service is served with (shared.serving.server, and the body
timeout of shared.serving.hygiene), over real HTTP with raw sockets: forwarded headers trusted only
from configured proxies, health endpoints never rate-limited, stalled request lines, headers
and bodies closed with a 408, connections per client address capped."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from shared.settings import ServiceSettings
from tests.servers import served
from tests.test_hygiene import client_of, defaults, mesh_app, probe_app

PROTOCOLS = ["h11", "httptools"]


@contextmanager
def raw(base: str) -> Iterator[socket.socket]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as client:
        yield client


def answer(client: socket.socket) -> tuple[bytes, dict[str, str], dict[str, object]]:
    """Read a whole answer up to the server's close: its status line, headers and JSON body."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status.encode(), headers, json.loads(body)


# --- forwarded headers and health ---------------------------------------------------------


def test_x_forwarded_for_does_not_escape_the_per_address_rate_limit() -> None:
    settings = defaults(rate_limit_per_minute=3)
    with served(mesh_app(settings), settings=settings) as base, httpx.Client(base_url=base) as c:
        statuses = [
            c.get("/mesh/v1/metrics", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(4)
        ]
    assert statuses == [401, 401, 401, 429]


def test_x_forwarded_for_is_trusted_from_a_configured_proxy() -> None:
    settings = defaults(rate_limit_per_minute=3, forwarded_allow_ips="127.0.0.1")
    assert ServiceSettings().forwarded_allow_ips is None  # trusted from nobody by default
    with served(mesh_app(settings), settings=settings) as base, httpx.Client(base_url=base) as c:
        # behind the proxy each client has its own quota, the address the proxy says
        rotated = [
            c.get("/mesh/v1/metrics", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(4)
        ]
        same = [
            c.get("/mesh/v1/metrics", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
            for _ in range(4)
        ]
    assert rotated == [401, 401, 401, 401]
    assert same == [401, 401, 401, 429]


async def test_health_endpoints_are_never_rate_limited() -> None:
    async with client_of(mesh_app(defaults(rate_limit_per_minute=2))) as mesh:
        limited = [(await mesh.get("/mesh/v1/metrics")).status_code for _ in range(3)]
        health = [(await mesh.get(path)).status_code for path in ["/mesh/healthz"] * 3]
        ready = [(await mesh.get(path)).status_code for path in ["/mesh/readyz"] * 3]
        still = await mesh.get("/mesh/v1/metrics")
    assert limited == [401, 401, 429]
    assert health == [200, 200, 200]
    assert ready == [200, 200, 200]
    assert still.status_code == 429


# --- stalled requests ----------------------------------------------------------------------


def guarded(**changes: object) -> ServiceSettings:
    return defaults(**{"header_timeout_seconds": 1.0, "body_timeout_seconds": 1.0, **changes})


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /probe/fail HT", b"GET /probe/fail HTTP/1.1\r\nHost: x\r\nAccept: */"],
    ids=["nothing", "part-of-the-request-line", "part-of-the-headers"],
)
def test_a_request_whose_headers_stall_is_closed_with_a_408(http: str, sent: bytes) -> None:
    settings = guarded()
    with served(probe_app(settings), settings=settings, http=http) as base, raw(base) as client:
        started = time.monotonic()
        client.sendall(sent)
        status, headers, problem = answer(client)
        waited = time.monotonic() - started
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert problem["code"] == "request_timeout"
    assert problem["detail"] == (
        "The request line and headers did not arrive within 1 s (DATAMESH_HEADER_TIMEOUT_SECONDS)."
    )
    assert waited < 4  # 1 s, then closed: not held open


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_kept_alive_connection_whose_next_request_stalls_is_closed(http: str) -> None:
    settings = guarded(header_timeout_seconds=2.0)
    with served(probe_app(settings), settings=settings, http=http) as base, raw(base) as client:
        client.sendall(b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        first = b""
        while not first.endswith(b'{"bytes":2}'):
            first += client.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        client.sendall(b"GET /probe/fail HTTP/1.1\r\nHo")
        status, _, problem = answer(client)
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert problem["code"] == "request_timeout"


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_body_shorter_than_its_content_length_is_a_408(http: str) -> None:
    settings = guarded()
    with served(probe_app(settings), settings=settings, http=http) as base, raw(base) as client:
        started = time.monotonic()
        client.sendall(
            b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 100\r\n\r\nonly ten b"
        )
        status, headers, problem = answer(client)
        waited = time.monotonic() - started
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "request_timeout"
    assert problem["detail"] == (
        "The request body stopped arriving: nothing came for 1 s (DATAMESH_BODY_TIMEOUT_SECONDS)."
    )
    assert waited < 4


@pytest.mark.parametrize("http", PROTOCOLS)
def test_the_unread_rest_of_an_answered_body_must_arrive_in_time(http: str) -> None:
    settings = guarded()
    with served(probe_app(settings), settings=settings, http=http) as base, raw(base) as client:
        # answered without its body being read; the rest then drips in, a byte at a time
        client.sendall(b"GET /probe/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        started = time.monotonic()
        try:
            for _ in range(20):
                time.sleep(0.3)
                client.sendall(b"c")
        except OSError:  # closed by the server
            pass
        data = b""
        while chunk := client.recv(65536):
            data += chunk
        waited = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 200 ")
    late = data[data.index(b"HTTP/1.1 408 Request Timeout") :]
    problem = json.loads(late.partition(b"\r\n\r\n")[2])
    assert problem["detail"] == (
        "The rest of the request body did not arrive within 1 s (DATAMESH_BODY_TIMEOUT_SECONDS)."
    )
    assert waited < 4


@pytest.mark.parametrize("http", PROTOCOLS)
def test_connections_per_client_address_are_capped(http: str) -> None:
    settings = guarded(max_connections_per_address=2, header_timeout_seconds=10.0)
    with served(probe_app(settings), settings=settings, http=http) as base:
        with raw(base), raw(base), raw(base) as third:
            status, headers, problem = answer(third)
        assert status == b"HTTP/1.1 429 Too Many Requests"
        assert headers["retry-after"] == "1"
        assert problem["code"] == "too_many_connections"
        assert problem["detail"] == (
            "More than 2 connections at once from this client address "
            "(DATAMESH_MAX_CONNECTIONS_PER_ADDRESS); close some and retry."
        )
        # the first two closed: a new connection is served
        deadline = time.monotonic() + 5
        while True:
            with httpx.Client(base_url=base) as client:
                response = client.post("/probe/echo", content=b"hello")
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.json() == {"bytes": 5}
