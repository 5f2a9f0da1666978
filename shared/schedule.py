"""Background jobs of a service: a coroutine run at start and then every few seconds while the
service runs (scheduled quality runs, view refreshes). A failed run is logged and the schedule
goes on; leaving the context stops it, letting a run in progress finish for a grace period. A
job that one of several processes runs (shared.storage.leader) skips its turns in the others
(`only_if`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

STOP_GRACE_SECONDS = 5.0  # shutdown lets a run in progress finish for this long

_log = logging.getLogger("datamesh.schedule")


@asynccontextmanager
async def every(
    name: str,
    interval_seconds: float,
    job: Callable[[], Awaitable[None]],
    log: logging.Logger = _log,
    *,
    first_after: float = 0.0,
    only_if: Callable[[], bool] | None = None,
) -> AsyncIterator[None]:
    """While inside, run `job` at start (or `first_after` seconds after) and every
    `interval_seconds` (0: never), each time `only_if` (if given) says so; the task is called
    `name`, and failures are logged on `log` as "<name> failed; next in <interval>s"."""
    if interval_seconds <= 0:
        yield
        return
    stop = asyncio.Event()
    if only_if is not None:
        job = _when(only_if, job)
    loop = _loop(name, interval_seconds, job, stop, log, first_after)
    task = asyncio.create_task(loop, name=name)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)  # cancels it past the grace
        except TimeoutError:
            log.warning("%s cancelled at shutdown", name)


def _when(
    condition: Callable[[], bool], job: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        if condition():
            await job()

    return run


async def _loop(
    name: str,
    interval: float,
    job: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    log: logging.Logger,
    first_after: float,
) -> None:
    if first_after > 0:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), first_after)
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("%s failed; next in %ss", name, interval)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
