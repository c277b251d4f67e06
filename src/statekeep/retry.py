"""Backoff for optional services: how long to leave a failed server alone.

The warm tier and the invalidation bus sit in front of the store, which stays
the source of truth. When Redis is down they must neither raise nor hammer
the dead server on every call (each attempt costs a connect timeout), so after
a failure they skip it for a short interval that grows with each consecutive
failure and resets on the first success -- the shape of redis-py's
``ExponentialWithJitterBackoff``, plus the outage bookkeeping that lets a
caller log once per outage instead of once per call.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

__all__ = ["ExponentialBackoff", "Outage"]


class ExponentialBackoff:
    """``min(cap, base * 2**(failures-1))`` seconds, with up to 50% jitter removed.

    Jitter keeps several processes that lost the same server from all coming
    back at the same instant.
    """

    def __init__(self, base: float = 0.05, cap: float = 2.0, *, jitter: bool = True) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.jitter = jitter

    def compute(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (>= 1)."""
        delay: float = min(self.cap, self.base * 2 ** min(max(failures - 1, 0), 30))
        if self.jitter:
            delay *= 1.0 - random.random() / 2
        return delay


class Outage:
    """Tracks whether a service is down and when it may be tried again.

    ``ready()`` is the cheap check callers make before every attempt; while
    it says False the caller serves without the service. ``failed()`` and
    ``succeeded()`` return True exactly at the edges of an outage, which is
    when a caller logs.
    """

    def __init__(self, backoff: ExponentialBackoff | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff or ExponentialBackoff()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """True from the first failure until the next success."""
        return self._failures > 0

    def ready(self) -> bool:
        """True when the service is up or its backoff interval has passed."""
        return self._failures == 0 or self._clock() >= self._retry_at

    def wait_seconds(self) -> float:
        """Seconds until ``ready()`` turns True (0 when it already is)."""
        return 0.0 if self._failures == 0 else max(0.0, self._retry_at - self._clock())

    def failed(self) -> bool:
        """Record a failure; True if it starts a new outage."""
        with self._lock:
            self._failures += 1
            self._retry_at = self._clock() + self.backoff.compute(self._failures)
            return self._failures == 1

    def succeeded(self) -> bool:
        """Record a success; True if it ends an outage."""
        if self._failures == 0:  # the common case stays lock-free
            return False
        with self._lock:
            ended = self._failures > 0
            self._failures = 0
            self._retry_at = 0.0
            return ended
