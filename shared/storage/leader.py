"""Which process leads a domain's background jobs (docs/operations.md, "Workers").

Several processes may serve one domain: the workers of one server (`--workers N`) and replicas
on other hosts. The jobs that work on the whole database (the view refresher, the scheduled
quality runs, the lake export) run in one of them, the leader, elected by the database itself:
the leader holds a session-level advisory lock (`pg_try_advisory_lock`) on a connection of its
own, outside the pool, for as long as it leads. Every process contends every
DATAMESH_LEADER_CHECK_SECONDS: one that does not lead tries the lock; the leader checks that
its connection still answers, and steps down if not. PostgreSQL releases the lock when that
connection ends: the leader stopping (its lifespan closes the connection), dying (the kernel
closes its socket and the server sees it at once), or its host vanishing (the server's TCP
keepalives on the connection, about 25 s). Another process takes over at its next turn.

A leader cut off from its database may run a job for up to one turn after another took over;
the jobs tolerate it: a view refresh and a lake export each take their own transaction-level
lock besides, and a quality run is one more run. Which process leads is in `pg_stat_activity`
(the connection holding the lock is named `datamesh-<domain>-election-<pid>`), in the gauge
`datamesh_leader` and in the `leader` field of `GET /<domain>/readyz`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg

from shared.schedule import every
from shared.settings import ServiceSettings, asyncpg_url
from shared.telemetry import metrics

_log = logging.getLogger("datamesh.leader")

# the server notices a leader whose host vanished (no RST) after idle + interval x count seconds
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


def leader_lock_key(domain: str) -> int:
    """The advisory lock the leader of the domain's background jobs holds (a 64-bit key)."""
    digest = hashlib.sha256(f"datamesh leader {domain}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def election_name(domain: str, pid: int | None = None) -> str:
    """The application_name of a process's election connection (pg_stat_activity)."""
    return f"datamesh-{domain}-election-{pid if pid is not None else os.getpid()}"


class Leadership:
    """This process's part in the election of the domain's leader: `leading` says whether it
    leads now; `contend` is one turn."""

    def __init__(self, domain: str, url: str, settings: ServiceSettings):
        self.domain = domain
        self.url = asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)
        self.key = leader_lock_key(domain)
        self.timeout = settings.pool_timeout_seconds
        self.leading = False
        self._conn: asyncpg.Connection | None = None
        self._gauge = metrics.LEADER.labels(domain)
        self._gauge.set(0)

    def leads(self) -> bool:
        """Whether this process leads the domain's background jobs now."""
        return self.leading

    async def contend(self) -> None:
        """One turn: the leader checks that its lock's connection still answers (else it steps
        down); a process that does not lead tries to take the lock (on the connection it keeps
        for that, opened again if it was lost)."""
        if self.leading:
            try:
                with anyio.fail_after(self.timeout):
                    assert self._conn is not None
                    await self._conn.fetchval("SELECT 1")
            except Exception as exc:
                await self._step_down(f"its connection to the database failed ({exc!r})")
            return
        try:
            with anyio.fail_after(self.timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self.url,
                        timeout=self.timeout,
                        server_settings={
                            "application_name": election_name(self.domain),
                            **_KEEPALIVES,
                        },
                    )
                locked = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
        except Exception as exc:  # the database is down: try again next turn
            _log.debug("the %s leader election could not reach the database: %r", self.domain, exc)
            await self._close()
            return
        if locked:
            self.leading = True
            self._gauge.set(1)
            _log.info(
                "process %d leads the background jobs of the %s domain", os.getpid(), self.domain
            )

    async def _step_down(self, why: str) -> None:
        self.leading = False
        self._gauge.set(0)
        _log.warning(
            "process %d stops leading the background jobs of the %s domain: %s",
            os.getpid(),
            self.domain,
            why,
        )
        await self._close()

    async def _close(self) -> None:
        """End the election connection: the server releases the lock it held."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # at once: a graceful close would wait on a server that stalls

    async def resign(self) -> None:
        """Stop leading and contending (the service stops): another process takes over at its
        next turn."""
        self.leading = False
        self._gauge.set(0)
        await self._close()


@asynccontextmanager
async def leadership(domain: str, url: str, settings: ServiceSettings) -> AsyncIterator[Leadership]:
    """While inside, contend for the lead of the domain's background jobs: once at once (so
    that the jobs the leader runs at start run at start), then every
    DATAMESH_LEADER_CHECK_SECONDS; leaving resigns."""
    leader = Leadership(domain, url, settings)
    await leader.contend()
    interval = settings.leader_check_seconds
    try:
        async with every(
            f"leader election of the {domain} domain",
            interval,
            leader.contend,
            _log,
            first_after=interval,
        ):
            yield leader
    finally:
        await leader.resign()
