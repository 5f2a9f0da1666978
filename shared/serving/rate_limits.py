"""Where a service counts its callers' requests: one-minute moving windows (the `limits`
library), in the store DATAMESH_RATE_LIMIT_STORAGE names (docs/security.md, "Rate limits").

- **memory://** (the default): each process counts in its own memory. The workers of one server
  (`--workers N`: serve_workers tells each its N, DATAMESH_WORKERS) divide a caller's rate: each
  allows `per_minute // N` (at least 1), so that N workers together allow at most the rate
  whichever worker a connection lands on. Replicas (containers, pods) cannot know how many of
  them there are: each allows its own share, so a caller gets up to the rate times the replicas.
- **a shared store** (Redis: redis://, rediss://, redis+sentinel://, redis+cluster://,
  redis+unix://): every worker and every replica counts into the same windows, atomically (the
  moving window is one Lua script on the server), so the rate holds across all of them.

A shared store that fails (refused, reset, or slower than STORE_TIMEOUT_SECONDS) fails open to
the process's own count: the request is counted in this process's memory at its share of the
rate, as without a store, never answered 500 nor let through uncounted. The failure is counted
(`datamesh_rate_limit_store_errors_total`), logged once until the store answers again, and the
store is not asked again for RETRY_STORE_SECONDS, so that a store that hangs does not slow
every request. Failing closed (429 or 503 for every caller while the store is down) would let
an outage of a cache take the data down with it; the process's own windows keep each caller
bounded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, RateLimitItemPerMinute, WindowStats
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from shared.settings import ServiceSettings
from shared.telemetry import metrics

STORE_TIMEOUT_SECONDS = 0.5  # one request's counting in the shared store, at most
RETRY_STORE_SECONDS = 5.0  # after a failure, callers are counted in the process this long
KEY_PREFIX = "datamesh"  # the keys of the windows in the store: datamesh:LIMITER/<service>/...
SETTING = "DATAMESH_RATE_LIMIT_STORAGE"
# the stores a rate limit may count in (the `limits` library's storage schemes that need no
# client library beyond redis-py): one process's memory, or Redis
SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")

_log = logging.getLogger("datamesh.rate_limits")


def shared_store(uri: str) -> bool:
    """Whether the storage URI names a store the processes share (not one's memory)."""
    return not uri.lower().removeprefix("async+").startswith("memory://")


def redacted(uri: str) -> str:
    """The URI without its password, to name it in a log line or an error."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _scrubbed(message: str, uri: str) -> str:
    """A message about the URI without its password, however the message quotes the URI."""
    password = urlsplit(uri).password
    return message.replace(password, "***") if password else message


def open_storage(uri: str) -> Storage:
    """The asyncio storage of the `limits` library for a URI of DATAMESH_RATE_LIMIT_STORAGE
    (plain `redis://...`, or the library's `async+redis://...`): Redis through redis-py's
    asyncio client, its errors wrapped as the library's StorageError, each call cut at
    STORE_TIMEOUT_SECONDS. It connects on first use. A URI it cannot use is a ValueError naming
    the setting (the service does not start)."""
    scheme, found, _ = uri.partition("://")
    if not found or scheme.lower().removeprefix("async+") not in SCHEMES:
        given = f"its scheme '{scheme}'" if found else "it has no scheme"
        raise ValueError(
            f"{SETTING} is not a storage URI the services use ({given}): one of "
            f"{', '.join(s + '://...' for s in SCHEMES)}, e.g. redis://127.0.0.1:6379/0"
        )
    if not shared_store(uri):
        return MemoryStorage()
    location = uri if uri.lower().startswith("async+") else f"async+{uri}"
    options: dict[str, Any] = {
        "implementation": "redispy",
        "wrap_exceptions": True,
        "key_prefix": KEY_PREFIX,
        "socket_timeout": STORE_TIMEOUT_SECONDS,
        "socket_connect_timeout": STORE_TIMEOUT_SECONDS,
    }
    try:
        storage = storage_from_string(location, **options)
    except Exception as exc:  # the library's ConfigurationError, redis-py's ValueError, ...
        raise ValueError(
            f"{SETTING} '{redacted(uri)}' cannot be used: {type(exc).__name__}: "
            f"{_scrubbed(str(exc), uri)}"
        ) from None
    if not isinstance(storage, Storage):  # a synchronous storage: not what the URI gives
        raise ValueError(f"{SETTING} '{redacted(uri)}' is not an asyncio storage")
    return storage


@dataclass(frozen=True)
class Counted:
    """One request counted: the rate it was counted against (the whole rate in a shared store,
    the process's share in its memory), whether it is within it, and the window's state."""

    item: RateLimitItem
    allowed: bool
    stats: WindowStats


class CallerLimits:
    """The moving windows of one service's callers, in the configured store, with the process's
    own memory as its share and its fallback."""

    def __init__(self, service: str, per_minute: int, settings: ServiceSettings):
        self.service = service
        self.uri = settings.rate_limit_storage
        self.shared = shared_store(self.uri)
        # a caller's rate divided among the workers of this server: each counts its own
        self.share = RateLimitItemPerMinute(max(1, per_minute // settings.workers))
        self.item = RateLimitItemPerMinute(per_minute) if self.shared else self.share
        open_storage(self.uri)  # a URI it cannot use stops the service at start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: MovingWindowRateLimiter | None = None
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._store_failing = False
        self._store_again_at = 0.0
        self._errors = metrics.RATE_LIMIT_STORE_ERRORS.labels(service)

    def _limiters(self) -> tuple[MovingWindowRateLimiter | None, MovingWindowRateLimiter]:
        """The windows of the running event loop: their locks and the store's connections
        belong to one loop, so an app served again on another (a restarted server) starts
        afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._memory = MovingWindowRateLimiter(MemoryStorage())
            if self.shared:
                self._store = MovingWindowRateLimiter(open_storage(self.uri))
            self._loop = loop
        return self._store, self._memory

    async def hit(self, caller: str) -> Counted:
        """Count one request of `caller`: in the shared store if there is one and it answers,
        else in this process at its share of the rate."""
        store, memory = self._limiters()
        if store is not None:
            if time.monotonic() >= self._store_again_at:
                try:
                    async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                        allowed = await store.hit(self.item, self.service, caller)
                        stats = await store.get_window_stats(self.item, self.service, caller)
                except Exception as exc:  # fail open to this process's count, never a 500
                    self._failed(exc)
                else:
                    if self._store_failing:
                        self._store_failing = False
                        _log.warning(
                            "the rate limit store %s answers again: the %s service counts "
                            "its callers there",
                            redacted(self.uri),
                            self.service,
                        )
                    return Counted(self.item, allowed, stats)
            self._errors.inc()
        allowed = await memory.hit(self.share, self.service, caller)
        stats = await memory.get_window_stats(self.share, self.service, caller)
        return Counted(self.share, allowed, stats)

    def _failed(self, exc: Exception) -> None:
        self._store_again_at = time.monotonic() + RETRY_STORE_SECONDS
        if not self._store_failing:
            self._store_failing = True
            reason = str(exc.__cause__ or exc) or type(exc).__name__
            _log.warning(
                "the rate limit store %s failed (%s): the %s service counts each caller in "
                "this process (%d a minute) until it answers; asked again every %gs",
                redacted(self.uri),
                _scrubbed(reason, self.uri),
                self.service,
                self.share.amount,
                RETRY_STORE_SECONDS,
            )
