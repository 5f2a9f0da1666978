"""B0, the floor: the least a service can do to answer the same reads.

One Starlette route per benchmarked query, an asyncpg pool per domain database (the same
server, the same role, the same pool size and session settings as the domain services), and
the statement our endpoint runs wrapped the way PostgREST does, so that PostgreSQL builds the
whole JSON body: `SELECT coalesce(json_agg(t), '[]')::text FROM (<the select>) t`. No token
check, no rate limit, no access log, no transaction: what is left is HTTP, the pool and the
query.

Served by `python -m uvicorn bench.b0:app` (one worker) from the repository root, with
`B0_SPEC` naming a JSON file written by the suite:
`{"databases": {"sales": "postgresql://..."}, "pool_size": 10, "statement_timeout_ms": 30000,
  "routes": {"/clv": {"domain": "sales", "sql": "SELECT ...", "args": [100]}}}`
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SPEC: dict[str, Any] = json.loads(Path(os.environ["B0_SPEC"]).read_text())
POOLS: dict[str, asyncpg.Pool] = {}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    size = int(SPEC.get("pool_size", 10))
    for name, url in SPEC["databases"].items():
        POOLS[name] = await asyncpg.create_pool(
            url,
            min_size=size,
            max_size=size,
            server_settings={
                "timezone": "UTC",
                "application_name": "datamesh-bench-b0",
                "statement_timeout": str(SPEC.get("statement_timeout_ms", 30000)),
            },
        )
    try:
        yield
    finally:
        for pool in POOLS.values():
            await pool.close()


def endpoint(domain: str, sql: str, args: list[Any]) -> Callable[[Request], Awaitable[Response]]:
    async def read(request: Request) -> Response:
        async with POOLS[domain].acquire() as conn:
            body = await conn.fetchval(sql, *args)
        return Response(body, media_type="application/json")

    return read


app = Starlette(
    routes=[
        Route(path, endpoint(route["domain"], route["sql"], route["args"]))
        for path, route in SPEC["routes"].items()
    ],
    lifespan=lifespan,
)
