"""The result cache: rows of deterministic reads, dropped when a table they read changes.

Entries live in a :class:`~statekeep.memory.hot.HotTier` (the byte-bounded
LRU + TTL the hot tier uses), keyed by (normalized SQL, typed parameters).
Each entry carries the tables its statement depends on and their
:class:`~statekeep.query.observer.TableGenerations` counters at the moment the
statement started; a lookup whose counters moved since is a miss and drops the
entry. Which tables a statement depends on, which statements qualify, and how
other processes' writes are noticed is decided by the store
(:meth:`statekeep.store.indexes.IndexStore.cached_query`, docs/query.md).

Sizes are what the rows cost in memory (``sys.getsizeof`` of every row and
value, containers included), so ``query_cache_bytes`` bounds real memory, give
or take shared small objects.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from statekeep.memory.hot import HotTier
from statekeep.query.observer import TableGenerations

__all__ = ["CacheStats", "QueryCache", "size_of"]

_getsizeof = sys.getsizeof


def size_of(value: Any) -> int:
    """Bytes ``value`` occupies, counting what its containers hold."""
    if isinstance(value, tuple | list):
        return _getsizeof(value) + sum(size_of(v) for v in value)
    if isinstance(value, dict):
        return _getsizeof(value) + sum(size_of(k) + size_of(v) for k, v in value.items())
    return _getsizeof(value)


@dataclass(frozen=True)
class CacheStats:
    """The result cache's counters (since the store opened)."""

    entries: int
    bytes_used: int
    capacity_bytes: int
    ttl_seconds: float
    hits: int
    misses: int
    #: Lookups that found an entry a write had made stale (counted in misses too).
    stale: int
    #: Calls that could not use the cache: not deterministic, inside a
    #: transaction, unhashable parameters, or a result too large to keep.
    bypassed: int
    evictions: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class QueryCache:
    """Rows by (statement, parameters), valid while their tables' generations hold."""

    def __init__(self, capacity_bytes: int, *, ttl_seconds: float,
                 generations: TableGenerations) -> None:
        self.tier = HotTier(capacity_bytes, ttl_seconds)
        self.generations = generations
        #: One result may take at most this share of the budget, so that a single
        #: large read cannot flush everything else.
        self.max_entry_bytes = max(capacity_bytes // 8, 1)
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.bypassed = 0

    def get(self, key: Hashable) -> tuple[Any, ...] | None:
        """The cached rows, or None (absent, expired, or made stale by a write)."""
        entry = self.tier.get(key)
        if entry is None:
            self.misses += 1
            return None
        deps, stamp, rows = entry
        if self.generations.stamp(deps) != stamp:
            self.tier.discard(key)
            self.stale += 1
            self.misses += 1
            return None
        self.hits += 1
        rows_: tuple[Any, ...] = rows
        return rows_

    def put(self, key: Hashable, deps: tuple[str, ...], stamp: tuple[int, ...],
            rows: tuple[Any, ...]) -> bool:
        """Keep rows read under ``stamp``; False when too large or already stale."""
        size = size_of(rows) + size_of(key)
        if size > self.max_entry_bytes:
            self.bypassed += 1
            return False
        if self.generations.stamp(deps) != stamp:
            return False  # a write committed while the rows were read
        return self.tier.put(key, (deps, stamp, rows), size)

    def clear(self) -> None:
        """Drop every entry (a restore or repair replaced rows under the store)."""
        self.generations.bump_all()
        self.tier.clear()

    def stats(self) -> CacheStats:
        tier = self.tier
        return CacheStats(entries=len(tier), bytes_used=tier.bytes_used,
                          capacity_bytes=tier.capacity_bytes, ttl_seconds=tier.ttl_seconds,
                          hits=self.hits, misses=self.misses, stale=self.stale,
                          bypassed=self.bypassed, evictions=tier.evictions)
