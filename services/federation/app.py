"""The mesh service: health and readiness of the federation across the domains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.federation.settings import FederationSettings
from shared.app import service_app
from shared.errors import ServiceUnavailable


def create_app(settings: FederationSettings | None = None) -> FastAPI:
    """The mesh app, federating the domains named in its settings."""
    settings = settings or FederationSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(
            settings.read_timeout_seconds, connect=settings.connect_timeout_seconds
        )
        async with httpx.AsyncClient(timeout=timeout) as client:
            app.state.client = client
            yield

    app = service_app(
        "mesh",
        "DataMesh federation (the mesh)",
        "Cross-domain metrics computed from the domains' published data products only.",
        lifespan=lifespan,
    )

    @app.get("/mesh/readyz", tags=["health"], summary="Readiness")
    async def readyz() -> JSONResponse:
        """Every registered domain answers its readiness check."""
        client: httpx.AsyncClient = app.state.client

        async def probe(name: str, base: str) -> tuple[str, str]:
            try:
                response = await client.get(f"{base}/{name}/readyz", timeout=2.0)
            except httpx.HTTPError as exc:
                return name, f"unreachable: {type(exc).__name__}"
            return (
                name,
                "ready" if response.status_code == 200 else f"not ready ({response.status_code})",
            )

        states = dict(await asyncio.gather(*(probe(n, b) for n, b in settings.domains.items())))
        if any(state != "ready" for state in states.values()):
            raise ServiceUnavailable(
                "Not every domain is ready: " + ", ".join(f"{n}: {s}" for n, s in states.items()),
                headers={"Retry-After": "1"},
                domains=states,
            )
        return JSONResponse({"ready": True, "domains": states})

    return app


app = create_app()
