"""The mesh under faults: a domain that is down or hangs gives a clear 503/504, never a 500,
a hang or a partial answer; the mesh recovers by itself when the domain returns."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services import domain
from services.federation.resilience import CircuitBreaker, CircuitOpen, CircuitState
from shared.serving.app import create_domain_app
from shared.storage.embedded import free_port
from tests.conftest import mesh_client
from tests.servers import served

MARKETING_METRICS = (
    "lead-to-customer-journey",
    "campaign-roi",
    "customer-acquisition-cost",
    "channel-effectiveness",
    "product-campaign-correlation",
    "lead-source-effectiveness",
)


@dataclass
class Hanging:
    url: str
    accepted: list[socket.socket]


@contextmanager
def hanging_server() -> Iterator[Hanging]:
    """A server that accepts connections and never answers: its base URL and connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Hanging(f"http://127.0.0.1:{listener.getsockname()[1]}", accepted)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


async def test_stopped_domain_gives_503_naming_it_and_the_mesh_recovers(
    domain_urls: dict[str, str], database_urls: dict[str, str]
) -> None:
    port = free_port()
    marketing = create_domain_app(domain("marketing"), database_url=database_urls["marketing"])
    domains = {"sales": domain_urls["sales"], "marketing": f"http://127.0.0.1:{port}"}
    # the circuit is tested on its own below: here every read reaches the stopped domain
    async with mesh_client(
        domains,
        connect_timeout_seconds=2.0,
        read_timeout_seconds=5.0,
        circuit_failure_threshold=1000,
    ) as mesh:
        with served(marketing, port=port):
            assert (await mesh.get("/mesh/v1/campaign-roi")).status_code == 200

        for metric in MARKETING_METRICS:
            started = time.monotonic()
            response = await mesh.get(f"/mesh/v1/{metric}")
            # refused at once, tried three times with backoff (0.1 s, 0.2 s, jitter 0.2 s)
            assert time.monotonic() - started < 2.0 + 1.0
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["code"] == "service_unavailable"
            assert problem["domain"] == "marketing"
            assert "marketing" in problem["detail"]
            assert response.headers["retry-after"] == "5"
        ready = await mesh.get("/mesh/readyz")
        assert ready.status_code == 503
        assert ready.json()["domains"]["sales"] == "ready"
        assert ready.json()["domains"]["marketing"].startswith("unreachable")

        with served(marketing, port=port):
            recovered = await mesh.get("/mesh/v1/campaign-roi", params={"select": "campaign_id"})
            assert recovered.status_code == 200
            assert [row["campaign_id"] for row in recovered.json()] == [1, 2, 3, 4, 5, 6, 7, 8]
            assert (await mesh.get("/mesh/readyz")).status_code == 200


async def test_hanging_domain_gives_504_within_the_timeout(
    domain_urls: dict[str, str],
) -> None:
    with hanging_server() as hanging:
        domains = {"sales": domain_urls["sales"], "marketing": hanging.url}
        async with mesh_client(
            domains, read_timeout_seconds=1.0, retry_attempts=3, circuit_failure_threshold=1000
        ) as mesh:
            started = time.monotonic()
            # reads one marketing product: its discovery (the product list) hangs
            response = await mesh.get("/mesh/v1/lead-source-effectiveness")
            elapsed = time.monotonic() - started
        # a read timeout is tried again: three tries of 1 s each, and the backoff between
        assert 3 * 1.0 <= elapsed < 3 * 1.0 + 2.0
        assert len(hanging.accepted) == 3
    assert response.status_code == 504
    problem = response.json()
    assert problem["code"] == "gateway_timeout"
    assert problem["domain"] == "marketing"
    assert "did not answer" in problem["detail"]
    assert "1s" in problem["detail"]


async def test_domain_answering_an_error_gives_503_with_its_status(
    domain_urls: dict[str, str],
) -> None:
    # a marketing service whose database cannot be reached answers 503 itself
    broken = create_domain_app(
        domain("marketing"),
        database_url=f"postgresql://nobody:wrong@127.0.0.1:{free_port()}/marketing_db",
    )
    with served(broken) as marketing_url:
        domains = {"sales": domain_urls["sales"], "marketing": marketing_url}
        async with mesh_client(domains) as mesh:
            # the product list answers (no database needed); the read of leads does not
            response = await mesh.get("/mesh/v1/lead-source-effectiveness")
    assert response.status_code == 503
    problem = response.json()
    assert problem["domain"] == "marketing"
    assert problem["upstream_status"] == 503
    assert problem["product"] == "leads"


class Stub:
    """A marketing domain in front of the real one: it proxies every request, except that the
    reads of `product` fail or are spoiled as `mode` says, `failures` times (None: always)."""

    def __init__(self, upstream: str, product: str = "leads"):
        self.upstream = upstream
        self.url = ""  # where it is served
        self.path = f"/marketing/v1/{product}"
        self.mode = "ok"
        self.failures: int | None = None
        self.reads = 0  # the reads of the product it received

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        params: list[tuple[str, str | int | float | bool | None]] = list(
            request.query_params.multi_items()
        )
        spoil = self.mode
        if request.url.path == self.path:
            self.reads += 1
            if self.failures is not None:
                if self.failures == 0:
                    spoil = "ok"
                else:
                    self.failures -= 1
        elif not (request.url.path == "/marketing/v1" and spoil == "bad_product_list"):
            spoil = "ok"
        if spoil in ("503", "502", "504", "400", "500"):
            await Response(b'{"code": "stub"}', int(spoil), media_type="application/problem+json")(
                scope, receive, send
            )
            return
        if spoil == "missing_column":  # the domain drops a column it was asked for
            params = [
                (k, ",".join(c for c in str(v).split(",") if c != "email_key"))
                if k == "select"
                else (k, v)
                for k, v in params
            ]
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            upstream = await client.get(
                request.url.path,
                params=httpx.QueryParams(params),
                headers={
                    k: v for k, v in request.headers.items() if k in ("authorization", "accept")
                },
            )
        body, media = upstream.content, upstream.headers.get("content-type", "")
        if spoil == "html":
            body, media = b"<html>maintenance</html>", "text/html"
        elif spoil == "truncated":  # cut before the end-of-stream marker
            body = body[: len(body) // 2]
        elif spoil == "bad_product_list":
            body = orjson.dumps([{"name": entry["name"]} for entry in upstream.json()])
        await Response(body, upstream.status_code, media_type=media)(scope, receive, send)


@contextmanager
def stub_domain(domain_urls: dict[str, str], mode: str, failures: int | None) -> Iterator[Stub]:
    stub = Stub(domain_urls["marketing"])
    stub.mode, stub.failures = mode, failures
    with served(stub) as url:
        stub.url = url
        yield stub


FAST_RETRIES = {"retry_initial_seconds": 0.01, "retry_jitter_seconds": 0.01}


async def test_a_flaky_domain_is_retried_until_it_answers(
    domain_urls: dict[str, str], mesh: httpx.AsyncClient
) -> None:
    expected = await mesh.get("/mesh/v1/lead-source-effectiveness")
    assert expected.status_code == 200
    with stub_domain(domain_urls, "503", failures=2) as stub:
        domains = {"sales": domain_urls["sales"], "marketing": stub.url}
        async with mesh_client(domains, retry_attempts=3, **FAST_RETRIES) as flaky_mesh:
            response = await flaky_mesh.get("/mesh/v1/lead-source-effectiveness")
    assert response.status_code == 200
    assert response.json() == expected.json()
    assert stub.reads == 3  # two 503s, then the answer


@pytest.mark.parametrize("status", ["502", "504"])
async def test_a_domain_failing_every_try_gives_503_with_its_status(
    domain_urls: dict[str, str], status: str
) -> None:
    with stub_domain(domain_urls, status, failures=None) as stub:
        domains = {"sales": domain_urls["sales"], "marketing": stub.url}
        async with mesh_client(domains, retry_attempts=3, **FAST_RETRIES) as flaky_mesh:
            response = await flaky_mesh.get("/mesh/v1/lead-source-effectiveness")
    assert (response.status_code, response.json()["code"]) == (503, "service_unavailable")
    assert response.json()["upstream_status"] == int(status)
    assert response.json()["domain"] == "marketing"
    assert stub.reads == 3


@pytest.mark.parametrize("status", ["400", "500"])
async def test_a_4xx_or_500_is_not_retried(domain_urls: dict[str, str], status: str) -> None:
    with stub_domain(domain_urls, status, failures=None) as stub:
        domains = {"sales": domain_urls["sales"], "marketing": stub.url}
        async with mesh_client(domains, retry_attempts=3, **FAST_RETRIES) as flaky_mesh:
            response = await flaky_mesh.get("/mesh/v1/lead-source-effectiveness")
    assert response.status_code == 503
    assert response.json()["upstream_status"] == int(status)
    assert stub.reads == 1


async def test_the_circuit_opens_answers_at_once_and_closes_after_a_good_probe(
    domain_urls: dict[str, str],
) -> None:
    with stub_domain(domain_urls, "503", failures=None) as stub:
        domains = {"sales": domain_urls["sales"], "marketing": stub.url}
        async with mesh_client(
            domains,
            retry_attempts=3,
            circuit_failure_threshold=2,
            circuit_cooldown_seconds=0.5,
            **FAST_RETRIES,
        ) as mesh:
            metric = "/mesh/v1/lead-source-effectiveness"
            # two failed tries open the circuit: the third try is refused by it
            first = await mesh.get(metric)
            assert (first.status_code, first.json()["code"]) == (503, "circuit_open")
            assert stub.reads == 2

            # open: answered at once, the domain not called
            started = time.monotonic()
            refused = await mesh.get(metric)
            assert time.monotonic() - started < 0.3
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["code"] == "circuit_open"
            assert problem["domain"] == "marketing"
            assert "circuit is open" in problem["detail"]
            assert "marketing" in problem["detail"]
            assert refused.headers["retry-after"] == "1"  # what is left of 0.5 s, rounded up
            assert stub.reads == 2

            # half-open after the cool-down: one probe, which fails and opens it again
            await asyncio.sleep(0.6)
            probe = await mesh.get(metric)
            assert (probe.status_code, probe.json()["code"]) == (503, "circuit_open")
            assert stub.reads == 3
            assert (await mesh.get(metric)).json()["code"] == "circuit_open"
            assert stub.reads == 3

            # the domain is back: the next probe succeeds and closes the circuit
            stub.mode = "ok"
            await asyncio.sleep(0.6)
            assert (await mesh.get(metric)).status_code == 200
            assert (await mesh.get(metric)).status_code == 200
            assert stub.reads == 5
            # the other domain's circuit was never involved
            assert (await mesh.get("/mesh/v1/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("mode", "product", "why"),
    [
        ("html", "leads", "content type is 'text/html'"),
        ("truncated", "leads", "not an Arrow stream"),
        ("missing_column", "leads", "lacks the columns email_key"),
        ("bad_product_list", "product list", "path"),
    ],
)
async def test_an_invalid_answer_is_a_503_naming_domain_and_product(
    domain_urls: dict[str, str], mode: str, product: str, why: str
) -> None:
    with stub_domain(domain_urls, mode, failures=None) as stub:
        domains = {"sales": domain_urls["sales"], "marketing": stub.url}
        async with mesh_client(domains, retry_attempts=3, **FAST_RETRIES) as mesh:
            response = await mesh.get("/mesh/v1/lead-source-effectiveness")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_upstream"
    assert (problem["domain"], problem["product"]) == ("marketing", product)
    assert why in problem["detail"]
    assert stub.reads == (0 if mode == "bad_product_list" else 1)  # never tried again


def test_the_circuit_breaker_counts_consecutive_failures_only() -> None:
    now = [0.0]
    circuit = CircuitBreaker("sales", threshold=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(2):
        circuit.before_call("orders")
        circuit.failed("ConnectError")
    circuit.before_call("orders")
    circuit.succeeded()  # a success in between starts the count again
    for _ in range(2):
        circuit.before_call("orders")
        circuit.failed("ConnectError")
    assert circuit.state is CircuitState.CLOSED
    circuit.before_call("orders")
    circuit.failed("HTTP 503")
    assert circuit.state is CircuitState.OPEN
    now[0] = 6.4
    with pytest.raises(CircuitOpen) as refused:
        circuit.before_call("orders")
    assert refused.value.headers["Retry-After"] == "4"
    assert "last: HTTP 503" in refused.value.detail
    now[0] = 10.0
    circuit.before_call("orders")  # the probe
    assert circuit.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):  # one probe at a time
        circuit.before_call("customers")
    circuit.abandoned()  # the probe was cancelled: another may go
    circuit.before_call("customers")
    circuit.succeeded()
    assert circuit.state is CircuitState.CLOSED
