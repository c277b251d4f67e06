"""The hot tier: an in-process LRU with a TTL, bounded by encoded bytes.

A hit is the hottest path in statekeep, so :meth:`HotTier.get` takes no lock
and does no I/O: one dict lookup, one clock read, one ``move_to_end``. Races
with a concurrent writer surface as ``KeyError`` (the entry vanished between
lookup and ``move_to_end``) and are treated as a miss, which is always safe
because the store behind the tier holds every committed value. Writes and
evictions take a lock so that the byte count stays exact.

Size is what the caller says the value costs -- the length of its encoded
form -- not ``sys.getsizeof``, which counts only the outer container and would
let a tier "of 128 MB" hold gigabytes.

Values are shared, not copied: callers must treat what :meth:`get` returns as
read-only (copying on every hit would cost more than the hit itself).

Counters are plain integers bumped without a lock; under threads they may
lose an occasional increment, which is acceptable for statistics.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from itertools import islice
from typing import Any

__all__ = ["HotTier"]

_monotonic = time.monotonic


class HotTier:
    """LRU + TTL cache of decoded values, bounded by the bytes callers declare."""

    __slots__ = ("_capacity", "_data", "_lock", "_ttl", "_used", "evictions",
                 "expirations", "hits", "misses")

    def __init__(self, capacity_bytes: int, ttl_seconds: float) -> None:
        if capacity_bytes < 0 or ttl_seconds <= 0:
            raise ValueError("capacity_bytes must be >= 0 and ttl_seconds > 0")
        self._capacity = capacity_bytes
        self._ttl = ttl_seconds
        #: key -> (value, size, expires_at); oldest (least recently used) first.
        self._data: OrderedDict[Hashable, tuple[Any, int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._used = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    # -- the lock-free read path ---------------------------------------------

    def get(self, key: Hashable) -> Any | None:
        """The value, or None when absent or expired (a miss)."""
        try:
            entry = self._data[key]
            if entry[2] < _monotonic():
                self._expire(key, entry)
                self.misses += 1
                return None
            self._data.move_to_end(key)
        except KeyError:
            self.misses += 1
            return None
        self.hits += 1
        return entry[0]

    def peek(self, key: Hashable) -> Any | None:
        """Like :meth:`get` but touches neither the LRU order nor the counters."""
        entry = self._data.get(key)
        if entry is None or entry[2] < _monotonic():
            return None
        return entry[0]

    def __contains__(self, key: object) -> bool:
        entry = self._data.get(key)
        return entry is not None and entry[2] >= _monotonic()

    # -- writes (locked) ---------------------------------------------------------

    def put(self, key: Hashable, value: Any, size: int, *,
            ttl_seconds: float | None = None) -> bool:
        """Insert or replace; False (and any old copy dropped) if it can never fit.

        Dropping the old copy on refusal matters: the caller is about to place
        the new value in a lower tier, and a stale copy here would shadow it.
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        expires = _monotonic() + (self._ttl if ttl_seconds is None else ttl_seconds)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._used -= old[1]
            if size > self._capacity:
                return False
            self._data[key] = (value, size, expires)
            self._used += size
            while self._used > self._capacity:
                _, (_, evicted, _) = self._data.popitem(last=False)
                self._used -= evicted
                self.evictions += 1
        return True

    def discard(self, key: Hashable) -> bool:
        """Drop one key; True if it was present."""
        with self._lock:
            old = self._data.pop(key, None)
            if old is None:
                return False
            self._used -= old[1]
            return True

    def discard_where(self, predicate: Callable[[Hashable, Any], bool]) -> int:
        """Drop every entry for which ``predicate(key, value)`` is true.

        Bulk invalidation (a deleted session takes its tasks and context with
        it): O(n) under the lock, so meant for rare events only.
        """
        with self._lock:
            doomed = [k for k, e in list(self._data.items()) if predicate(k, e[0])]
            for key in doomed:
                self._used -= self._data.pop(key)[1]
        return len(doomed)

    def clear(self) -> None:
        """Drop everything (counters are kept)."""
        with self._lock:
            self._data.clear()
            self._used = 0

    def _expire(self, key: Hashable, entry: tuple[Any, int, float]) -> None:
        with self._lock:
            # Only the entry we saw: a concurrent put may have refreshed the key.
            if self._data.get(key) is entry:
                del self._data[key]
                self._used -= entry[1]
                self.expirations += 1

    # -- inspection ------------------------------------------------------------

    def oldest(self, n: int) -> list[Hashable]:
        """Up to ``n`` keys, least recently used first (eviction candidates)."""
        with self._lock:
            for _ in range(8):
                try:  # a lock-free get may reorder the dict while we walk it
                    return list(islice(self._data, max(n, 0)))
                except RuntimeError:
                    continue
            return list(islice(list(self._data), max(n, 0)))

    def size_of(self, key: Hashable) -> int | None:
        """The declared size of a present entry, else None."""
        entry = self._data.get(key)
        return None if entry is None else entry[1]

    @property
    def bytes_used(self) -> int:
        """Sum of the declared sizes of the entries held (expired ones included
        until they are next touched or evicted)."""
        return self._used

    @property
    def capacity_bytes(self) -> int:
        return self._capacity

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (f"HotTier({len(self._data)} entries, {self._used}/{self._capacity} bytes,"
                f" hits={self.hits} misses={self.misses})")
