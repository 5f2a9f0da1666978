"""A Redis server of the tests' own (Debian's `redis-server`, which .ci/run installs): started
on a free loopback port in a temporary folder, nothing saved to disk, stopped at the end;
never a system service."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(folder: Path, port: int | None = None) -> Iterator[str]:
    """A redis-server on 127.0.0.1 (a free port unless one is given); yields its redis:// URL."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (.ci/run does)")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            program,
            *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--logfile", str(folder / "redis.log")),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert server.poll() is None, (
                f"redis-server exited: {(folder / 'redis.log').read_text()}"
            )
            assert time.monotonic() < deadline, "redis-server did not answer in 10 s"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)
