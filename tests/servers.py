"""Serving an app on a real loopback port (uvicorn in a thread), for tests that need HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from shared.serving.server import server_config
from shared.settings import ServiceSettings


class _Server(uvicorn.Server):
    """uvicorn, telling when it has started."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@contextmanager
def served(
    app: Any, port: int = 0, settings: ServiceSettings | None = None, http: str = "h11"
) -> Iterator[str]:
    """Serve the app on 127.0.0.1 (a free port unless one is given) as every service is served
    (shared.serving.server, with `settings`' server options; h11 unless `http` says httptools); yield
    its base URL."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    bound = listener.getsockname()[1]
    server = _Server(
        server_config(
            app,
            settings=settings,
            http=http,
            lifespan="on",
            loop="asyncio",
            log_level="warning",
            timeout_graceful_shutdown=None,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        assert server.ready.wait(timeout=30), "uvicorn did not start"
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
    assert not thread.is_alive()
