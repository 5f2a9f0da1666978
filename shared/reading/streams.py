"""Streamed reads (CSV, NDJSON, Arrow, Parquet) that no client can use to hold the database:
a bound on the streams served at once, per caller and in all, and a send timeout after which a
stream whose client takes nothing is aborted and gives its connection back (docs/operations.md,
"Slow and stalled clients")."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from shared.errors import Problem, ServiceUnavailable, StreamAborted
from shared.security.auth import caller_of, verified_principal

_log = logging.getLogger("datamesh")


class TooManyStreams(Problem):
    status = 429
    code = "too_many_streams"
    title = "Too many streamed reads"


class StreamsBusy(ServiceUnavailable):
    code = "streams_busy"
    title = "Streamed reads busy"


class StreamSlots:
    """How many streams are served at once, per caller and in all. A stream over a bound waits
    up to `wait` seconds for a slot, then is refused: a 429 `too_many_streams` when its caller
    holds its bound, else a 503 `streams_busy`, each with Retry-After and naming the bound."""

    def __init__(
        self,
        *,
        per_caller: int,
        total: int,
        wait: float,
        mesh_subjects: frozenset[str] = frozenset(),
    ):
        self.per_caller = per_caller
        self.mesh_subjects = mesh_subjects
        self.total = total
        self.wait = wait
        self._held: Counter[str] = Counter()
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def open(self) -> int:
        """Streams holding a slot now."""
        return sum(self._held.values())

    def _free(self, caller: str) -> bool:
        return self._held[caller] < self.per_caller and self.open < self.total

    async def acquire(self, request: Request) -> Callable[[], None]:
        """A slot for the request's caller; the function that gives it back (idempotent)."""
        client = request.client.host if request.client else None
        counted = caller_of(
            verified_principal(request.scope), request.headers, client, self.mesh_subjects
        )
        caller, who = counted.key, counted.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not self._free(caller):
            left = deadline - loop.time()
            if left <= 0:
                raise self._refusal(caller, who)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
        self._held[caller] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._held[caller] -= 1
            if self._held[caller] <= 0:
                del self._held[caller]
            for waiting in self._waiters:
                if not waiting.done():
                    waiting.set_result(None)

        return release

    def _refusal(self, caller: str, who: str) -> Problem:
        retry = {"Retry-After": "1"}
        if self._held[caller] >= self.per_caller:
            return TooManyStreams(
                f"{who[0].upper()}{who[1:]} already has {self._held[caller]} streamed reads open, "
                f"the most one caller may have at once ({self.per_caller}, "
                "DATAMESH_MAX_STREAMS_PER_CALLER); let one finish, or read JSON pages.",
                headers=retry,
                limit=self.per_caller,
                bound="per_caller",
            )
        return StreamsBusy(
            f"The service is serving {self.open} streamed reads, the most it serves at once "
            f"({self.total}, DATAMESH_MAX_STREAMS); retry shortly, or read JSON pages.",
            headers=retry,
            limit=self.total,
            bound="service",
        )


class Primed:
    """The rest of a stream whose first chunk was read already (shared.reading.routes._primed): an async
    iterable whose `aclose` ends the source too, even if iteration never began (its database
    connection given back). A Problem raised mid-stream aborts it (StreamAborted)."""

    def __init__(self, first: bytes, chunks: AsyncGenerator[bytes, None]):
        self._first = first
        self._chunks = chunks
        self._rest = self._iterate()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._rest

    async def aclose(self) -> None:
        try:
            await self._rest.aclose()
        finally:
            await self._chunks.aclose()

    async def _iterate(self) -> AsyncGenerator[bytes, None]:
        sent = len(self._first)
        async with aclosing(self._chunks):
            yield self._first
            try:
                async for chunk in self._chunks:
                    sent += len(chunk)
                    yield chunk
            except Problem as problem:
                _log.warning("stream aborted after %d bytes: %s", sent, problem.detail)
                raise StreamAborted(problem.detail) from None


class GuardedStream(StreamingResponse):
    """A streamed response that gives back its slot when it ends, however it ends, and is
    aborted when the client takes none of it for `send_timeout` seconds: the body's generator
    is closed at once (its database connection given back) and the connection closes without
    the body's end, so the client sees an incomplete read, never a short answer that looks
    whole."""

    def __init__(
        self,
        content: Primed,
        *,
        release: Callable[[], None],
        send_timeout: float,
        media_type: str,
        headers: Mapping[str, str],
    ):
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._release = release
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()

    async def stream_response(self, send: Send) -> None:
        sent = 0

        async def timed(message: Message) -> None:
            nonlocal sent
            if not self._send_timeout:
                await send(message)
                return
            try:
                with anyio.fail_after(self._send_timeout):
                    await send(message)
            except TimeoutError:
                detail = (
                    f"the client took none of the stream for {self._send_timeout:g} s "
                    "(DATAMESH_STREAM_SEND_TIMEOUT_SECONDS)"
                )
                _log.warning("stream aborted after %d bytes: %s", sent, detail)
                raise StreamAborted(detail) from None
            sent += len(message.get("body", b""))

        async with aclosing(self._content):
            await super().stream_response(timed)
