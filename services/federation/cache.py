"""What the mesh remembers between answers (docs/mesh.md, "A mesh that remembers").

- **Inputs**, by the request that read them (domain, path, parameters), with the ETag the domain
  answered: the domain's data version (shared.storage.data_versions) and a digest of the read.
  The next read of the same input asks with `If-None-Match`; `304 Not Modified` means the rows
  kept are the current ones, so nothing is sent again.
- **Answers**, by the metric, its period and the ETags of every input read: an answer whose
  inputs all revalidated is the one computed from them, so it is not computed again; and each
  answer as sent (a JSON page, a CSV...), by its own ETag, so it is not rendered again.
- **Rounds**: requests for the same metric and period share one revalidation. A request never
  joins a round already under way (it may have read its inputs before the request's own write
  committed): it waits for the next, which starts as soon as the one under way ends and answers
  everyone who arrived meanwhile. So a write is always in the next read, and under load the
  domains see one revalidation per round instead of one per request.

Both caches share one bound in bytes (MESH_CACHE_MAX_BYTES), least recently used out first; the
bytes and entries held are in /metrics.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa

from services.federation.settings import SERVICE
from shared.telemetry import metrics

T = TypeVar("T")


@dataclass(frozen=True)
class Kept:
    """A value kept (an Arrow table, or a rendered answer), the tag it is valid for (an
    input's ETag, an answer's inputs' tags) and its size in bytes."""

    tag: Any
    value: Any
    size: int


@dataclass(frozen=True)
class Rendered:
    """An answer as sent: its body, media type and headers (for the same ETag, the same)."""

    body: bytes
    media_type: str
    headers: dict[str, str]


def _size(value: Any) -> int:
    if isinstance(value, pa.Table):
        return int(value.get_total_buffer_size())
    if isinstance(value, Rendered):
        return len(value.body) + sum(len(k) + len(v) for k, v in value.headers.items())
    raise TypeError(f"cannot size a {type(value).__name__}")


class TableCache:
    """Arrow tables and rendered answers by key, bounded in bytes, least recently used out
    first."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._kept: OrderedDict[Hashable, Kept] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable) -> Kept | None:
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
        return kept

    def put(self, key: Hashable, tag: Any, value: pa.Table | Rendered) -> None:
        """Keep the value (replacing the key's), unless it alone is over the bound."""
        self.discard(key)
        size = _size(value)
        if size > self.max_bytes:
            self._measure()
            return
        self._kept[key] = Kept(tag, value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, oldest = self._kept.popitem(last=False)
            self.bytes -= oldest.size
        self._measure()

    def discard(self, key: Hashable) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self.bytes -= kept.size

    def __len__(self) -> int:
        return len(self._kept)

    def _measure(self) -> None:
        metrics.MESH_CACHE_BYTES.labels(SERVICE).set(self.bytes)
        metrics.MESH_CACHE_ENTRIES.labels(SERVICE).set(len(self._kept))


class Rounds(Generic[T]):
    """Calls of one key grouped in rounds: a caller joins the next round to start, never one
    under way; a round starts when the one before it ends (or at once if none runs)."""

    def __init__(self) -> None:
        self._running: asyncio.Future[T] | None = None
        self._next: asyncio.Future[T] | None = None
        self._starter: asyncio.Task[None] | None = None  # starts the next round

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        if self._running is None:
            return await asyncio.shield(self._start(work))
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            _quiet(self._next)
            self._starter = asyncio.create_task(self._after(self._running, self._next, work))
        return await asyncio.shield(self._next)

    def _start(self, work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(work())
        _quiet(task)
        self._running = task

        def ended(_: asyncio.Future[T]) -> None:
            if self._running is task:
                self._running = None

        task.add_done_callback(ended)
        return task

    async def _after(
        self,
        running: asyncio.Future[T],
        chained: asyncio.Future[T],
        work: Callable[[], Awaitable[T]],
    ) -> None:
        await asyncio.wait([running])
        self._next = None  # callers from now on wait for the round after this one
        task = self._start(work)
        try:
            chained.set_result(await task)
        except asyncio.CancelledError:
            chained.cancel()
            raise
        except Exception as failure:  # every waiter of the round gets it
            chained.set_exception(failure)


class RoundsByKey(Generic[T]):
    """A Rounds per key, forgotten once idle."""

    def __init__(self) -> None:
        self._rounds: dict[Hashable, Rounds[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        rounds = self._rounds.setdefault(key, Rounds())
        try:
            return await rounds.run(work)
        finally:
            if rounds._running is None and rounds._next is None:
                self._rounds.pop(key, None)


def _quiet(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen even if every waiter went away (no 'never retrieved' warning)."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
