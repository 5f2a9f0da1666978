"""A client that goes away in the middle of a stream leaves the service healthy: the aborted
read's connection never goes back to the pool with its transaction open."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN


@pytest.mark.parametrize("fmt", ["arrow", "ndjson", "parquet", "csv"])
async def test_reads_after_an_aborted_stream_succeed(domain_urls: dict[str, str], fmt: str) -> None:
    base = domain_urls["marketing"]
    async with httpx.AsyncClient(headers=ADMIN) as client:
        for _ in range(3):  # more aborted reads than a single pooled connection
            async with client.stream(
                "GET", f"{base}/marketing/v1/website-traffic", params={"format": fmt}
            ) as response:
                assert response.status_code == 200
                async for _chunk in response.aiter_raw():
                    break  # go away after the first chunk
        for _ in range(12):  # more than the pool holds: every pooled connection is used
            page = await client.get(
                f"{base}/marketing/v1/website-traffic",
                params={"limit": "2", "select": "traffic_id"},
                headers={"Prefer": "count=exact"},
            )
            assert page.status_code == 200
            assert page.json() == [{"traffic_id": 1}, {"traffic_id": 2}]
            assert page.headers["content-range"] == "0-1/3660"
