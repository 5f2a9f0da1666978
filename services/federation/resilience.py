"""How the mesh treats a failing domain: which failures are retried (with stamina: bounded,
exponential backoff with jitter), a circuit breaker per domain, and the problems a caller of
the mesh sees (docs/operations.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

import httpx

from services.federation.settings import SERVICE
from shared.errors import ServiceUnavailable
from shared.telemetry import metrics

# the statuses of a domain worth another try: its gateway or itself is down or overloaded
RETRYABLE_STATUSES = (502, 503, 504)
# the methods that may be sent twice with the effect of once
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS")


class RetryableStatus(Exception):
    """A domain answered 502, 503 or 504 (raised inside the retry loop only)."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retryable(exc: Exception) -> bool:
    """Whether a failed request to a domain is tried again: it could not connect, it timed out
    reading the answer, or the domain answered 502/503/504. Never a 4xx, never an answer that
    was cut or malformed, never an open circuit."""
    return isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ReadTimeout | RetryableStatus
    )


class CircuitOpen(ServiceUnavailable):
    code = "circuit_open"
    title = "Circuit open"


class InvalidUpstream(ServiceUnavailable):
    code = "invalid_upstream"
    title = "Invalid upstream answer"


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One domain's circuit. Closed: calls go through; `threshold` consecutive failures
    (transport errors, timeouts, 5xx answers) open it. Open: calls fail at once with a 503
    (`circuit_open`, Retry-After the cool-down left) and the domain is not called. After the
    cool-down it is half-open: one call goes through as a probe (others still fail at once);
    its success closes the circuit, its failure opens it for another cool-down.

    No lock: every method runs without awaiting, on the event loop's one thread."""

    def __init__(
        self,
        domain: str,
        *,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.domain = domain
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._gauge = metrics.MESH_CIRCUIT_STATE.labels(SERVICE, domain)
        metrics.MESH_FETCH_RETRIES.labels(SERVICE, domain)  # exported from the start, at 0
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.last_failure = ""
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> CircuitState:
        return self._state

    @state.setter
    def state(self, value: CircuitState) -> None:
        self._state = value
        self._gauge.set(metrics.CIRCUIT_STATES[value])

    def remaining(self) -> float:
        """Seconds of cool-down left (0 unless open)."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def before_call(self, product: str) -> None:
        """Let a call through, or raise CircuitOpen."""
        if self.state is CircuitState.OPEN:
            if self.remaining() > 0:
                raise self._refusal(product, self.remaining())
            self.state, self._probing = CircuitState.HALF_OPEN, False
        if self.state is CircuitState.HALF_OPEN:
            if self._probing:  # one probe at a time
                raise self._refusal(product, 1.0)
            self._probing = True

    def succeeded(self) -> None:
        """The domain answered (any status below 500): close the circuit."""
        self.state, self.failures, self._probing = CircuitState.CLOSED, 0, False

    def failed(self, what: str) -> None:
        """A call failed (transport error, timeout or 5xx)."""
        self.last_failure = what
        if self.state is CircuitState.OPEN:
            return  # a call that started before the circuit opened
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self.state, self._opened_at, self._probing = CircuitState.OPEN, self._clock(), False

    def abandoned(self) -> None:
        """A call ended without an outcome (cancelled): a probe lets another one go."""
        if self.state is CircuitState.HALF_OPEN:
            self._probing = False

    def _refusal(self, product: str, remaining: float) -> CircuitOpen:
        seconds = max(1, math.ceil(remaining))
        return CircuitOpen(
            f"The {self.domain} domain's circuit is open after {self.failures} consecutive "
            f"failures (last: {self.last_failure}); the mesh does not call it for "
            f"{seconds}s, then tries it again.",
            headers={"Retry-After": str(seconds)},
            domain=self.domain,
            product=product,
            retry_after=seconds,
        )
