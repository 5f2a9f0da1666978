"""The mesh under faults: a domain that is down or hangs gives a clear 503/504, never a 500,
a hang or a partial answer; the mesh recovers by itself when the domain returns."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from services import domain
from shared.app import create_domain_app
from shared.embedded import free_port
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


@contextmanager
def hanging_server() -> Iterator[str]:
    """A server that accepts connections and never answers; its base URL."""
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
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
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
    async with mesh_client(domains, connect_timeout_seconds=2.0, read_timeout_seconds=5.0) as mesh:
        with served(marketing, port=port):
            assert (await mesh.get("/mesh/v1/campaign-roi")).status_code == 200

        for metric in MARKETING_METRICS:
            started = time.monotonic()
            response = await mesh.get(f"/mesh/v1/{metric}")
            assert time.monotonic() - started < 2.0 + 1.0  # within the connect timeout
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


async def test_hanging_domain_gives_504_within_the_timeout(domain_urls: dict[str, str]) -> None:
    with hanging_server() as hanging:
        domains = {"sales": domain_urls["sales"], "marketing": hanging}
        async with mesh_client(domains, read_timeout_seconds=1.0) as mesh:
            started = time.monotonic()
            response = await mesh.get("/mesh/v1/campaign-roi")
            assert time.monotonic() - started < 1.0 + 2.0
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
