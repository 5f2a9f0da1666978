"""How every DataMesh service is served: uvicorn with the connection-level defences uvicorn
lacks (docs/security.md, "Connections").

- **Stalled requests.** A request line and headers must arrive within
  `DATAMESH_HEADER_TIMEOUT_SECONDS` of the connection opening (or of the first byte of the
  next request on a kept-alive connection); else the connection gets a 408 problem and is
  closed. A body the app reads and that stops arriving is cut by the body timeout of
  shared.serving.hygiene; the rest of a body the app answered without reading must arrive within
  `DATAMESH_BODY_TIMEOUT_SECONDS` of the answer, else the same.
- **Connections per client address** are capped at `DATAMESH_MAX_CONNECTIONS_PER_ADDRESS`: one
  more is answered 429 and closed before anything is read.
- **A client that stops reading.** A response whose bytes the client has not taken for
  `DATAMESH_STREAM_SEND_TIMEOUT_SECONDS` (the server's write buffer stays full) is aborted: the
  connection is reset, never left open on a full buffer. (The stream itself gives back its
  database connection at the same deadline: shared.reading.streams.)
- **Forwarded headers** (`X-Forwarded-For`, `X-Forwarded-Proto`) are trusted only from the
  addresses in `DATAMESH_FORWARDED_ALLOW_IPS` (default: none), so a client cannot choose the
  address its rate limit counts against.

`datamesh up`, the containers and the tests all serve through `server_config`; from a shell,
`python -m shared.serving.server services.<domain>.app:app --host 127.0.0.1 --port <port>`
(`--workers N`: N processes sharing the port, serve_workers).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any, cast

import h11
import orjson
import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.errors import PROBLEM_JSON
from shared.settings import ServiceSettings
from shared.telemetry.metrics import MULTIPROCESS_DIR

WORKERS = "DATAMESH_WORKERS"  # ServiceSettings.workers, in the environment of each worker


def _problem(status: int, reason: str, code: str, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes the connection, written before (or
    instead of) any request being read."""
    body = orjson.dumps(
        {
            "type": f"https://datamesh.dev/problems/{code}",
            "title": title,
            "status": status,
            "code": code,
            "detail": detail,
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
        "x-content-type-options: nosniff\r\ncache-control: no-store\r\n"
    )
    if status == 429:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _Guarded:
    """What both of uvicorn's HTTP/1.1 protocols get: the header timeout (and the one for the
    rest of a body answered unread), the cap of connections per client address and the
    send-stall abort. Subclasses say when a request is owed and when it came
    (`_awaiting_headers`, `_awaiting_rest_of_body`, `_headers_done`)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    send_timeout: float = 30.0
    per_address: int = 0
    open_per_address: Counter[str]  # one per served app (protocol_class)

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        transport = cast(asyncio.Transport, transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._owed = ""
        self._send_timer: asyncio.TimerHandle | None = None
        self._address: str | None = self.client[0] if self.client else None
        if self._address is not None and self.per_address:
            if self.open_per_address[self._address] >= self.per_address:
                self._address = None  # not counted
                transport.write(
                    _problem(
                        429,
                        "Too Many Requests",
                        "too_many_connections",
                        "Too many connections",
                        f"More than {self.per_address} connections at once from this client "
                        "address (DATAMESH_MAX_CONNECTIONS_PER_ADDRESS); close some and retry.",
                    )
                )
                transport.close()
                return
            self.open_per_address[self._address] += 1
        self._awaiting_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._address is not None and self.per_address:
            self.open_per_address[self._address] -= 1
            if self.open_per_address[self._address] <= 0:
                del self.open_per_address[self._address]
            self._address = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _awaiting_headers(self) -> None:
        """A request has begun (or the connection opened): its headers must come in time."""
        self._awaiting("request line and headers", self.header_timeout, "HEADER")

    def _awaiting_rest_of_body(self) -> None:
        """A request was answered before its body was read whole: the rest must come in time
        (the connection cannot serve the next request until it has)."""
        self._awaiting("rest of the request body", self.body_timeout, "BODY")

    def _awaiting(self, what: str, seconds: float, setting: str) -> None:
        if self._header_timer is None and seconds:
            self._owed = (
                f"The {what} did not arrive within {seconds:g} s "
                f"(DATAMESH_{setting}_TIMEOUT_SECONDS)."
            )
            self._header_timer = self.loop.call_later(seconds, self._request_late)

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _request_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.transport.write(
            _problem(408, "Request Timeout", "request_timeout", "Request timeout", self._owed)
        )
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._send_timer is None and self.send_timeout:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()  # type: ignore[misc]

    def _send_stalled(self) -> None:
        """The client took nothing for the send timeout: reset the connection (a graceful
        close would wait for a buffer it never reads)."""
        self._send_timer = None
        self.transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (getattr(self, "_header_timer", None), getattr(self, "_send_timer", None)):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._send_timer = None


class GuardedH11Protocol(_Guarded, H11Protocol):
    """uvicorn's h11 protocol, guarded."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._headers_done()  # a request is being served
        elif self.conn.their_state is h11.IDLE:
            if self.conn.trailing_data[0]:
                self._awaiting_headers()  # part of a request is waiting for the rest
            else:
                self._headers_done()  # nothing owed: uvicorn's keep-alive timeout governs
        else:
            self._awaiting_rest_of_body()  # answered; its body still coming


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    if importlib.util.find_spec("httptools") is None:
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default where httptools is installed), guarded."""

        _message_whole = True

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers()

        def on_headers_complete(self) -> None:
            self._headers_done()
            self._message_whole = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._message_whole = True
            self._headers_done()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self._message_whole and not self.transport.is_closing():
                self._awaiting_rest_of_body()

    return GuardedHttpToolsProtocol


def protocol_class(settings: ServiceSettings, *, http: str = "auto") -> type[asyncio.Protocol]:
    """The guarded HTTP protocol for one server: httptools where installed (uvicorn's own
    choice), else h11; its own count of connections per address."""
    base = _httptools_protocol() if http in ("auto", "httptools") else None
    chosen: type[Any] = base or GuardedH11Protocol
    return type(
        chosen.__name__,
        (chosen,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "send_timeout": settings.stream_send_timeout_seconds,
            "per_address": settings.max_connections_per_address,
            "open_per_address": Counter(),
        },
    )


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: ServiceSettings | None = None,
    http: str = "auto",
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of a service: the guarded protocol, forwarded headers trusted
    from the configured proxies only, no uvicorn access log (its lines carry query values;
    the services log their own), the graceful shutdown period."""
    settings = settings or ServiceSettings()
    trusted = settings.forwarded_allow_ips
    defaults: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": protocol_class(settings, http=http),
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "access_log": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "ws": "none",
    }
    return uvicorn.Config(app, **(defaults | options))


def default_workers() -> int:
    """Worker processes per service when `datamesh up` is not told: half the cores this process
    may run on, at least 1 and at most 4. `datamesh up` serves every domain and the mesh on one
    machine, beside their PostgreSQL servers: half the cores each leaves the others room (a
    laptop of 2 cores gets 1 worker each, one of 8 or more 4), and 4 bounds the memory (each
    worker is a whole process: its imports, caches, pool) and the connections (each worker's
    pool, docs/operations.md)."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (a container's)
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


def serve_workers(app: str, *, host: str, port: int, workers: int) -> int:
    """Serve `app` from `workers` processes sharing one listening socket: this process binds
    it, starts the workers (each `python -m shared.serving.server <app> --fd N`, the app
    imported and its lifespan run in each), restarts one that dies (unless it exited by itself
    in its first 10 s: the app cannot start, and the others stop too), and on SIGTERM or SIGINT
    stops them all, each with its graceful shutdown. The workers keep their metrics in a
    directory of this run (prometheus-client's multiprocess mode), so that a scrape answered
    by any of them counts all of them. The exit status: 0, or a worker's failure at start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    metrics_dir = tempfile.mkdtemp(prefix="datamesh-metrics-")
    # each worker knows how many share the socket: the memory store of the rate limits gives
    # each its share of a caller's rate (shared.serving.rate_limits)
    env = {**os.environ, MULTIPROCESS_DIR: metrics_dir, WORKERS: str(workers)}
    command = [sys.executable, "-m", "shared.serving.server", app, "--fd", str(listener.fileno())]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, pass_fds=[listener.fileno()])

    running = [start() for _ in range(workers)]
    started = time.monotonic()
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for n, worker in enumerate(running):
                code = worker.poll()
                if code is None or stopping:
                    continue
                mark_process_dead(worker.pid, metrics_dir)  # its live gauges leave the sums
                # one that exited by itself early failed at start: so will the others; one
                # killed by a signal (the OOM killer, an operator) is started again
                if code >= 0 and time.monotonic() - started < 10:
                    status, stopping = code or 1, True
                    break
                running[n] = start()
    finally:
        for worker in running:
            if worker.poll() is None:
                worker.terminate()
        for worker in running:
            try:
                worker.wait(timeout=ServiceSettings().shutdown_grace_seconds + 5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> None:
    """`python -m shared.serving.server <module:app> --host H --port P [--workers N]`: serve one
    service."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.serving.server", description=main.__doc__
    )
    parser.add_argument("app", help="the app to serve, e.g. services.<domain>.app:app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default 1)"
    )
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    arguments = parser.parse_args(argv)
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    if arguments.fd is not None:
        config = server_config(arguments.app)
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=arguments.fd)])
    elif arguments.workers > 1:
        sys.exit(
            serve_workers(
                arguments.app, host=arguments.host, port=arguments.port, workers=arguments.workers
            )
        )
    else:
        config = server_config(arguments.app, host=arguments.host, port=arguments.port)
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
