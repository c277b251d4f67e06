"""Hierarchical memory (seed 5.1): working, short-term and long-term tiers.

* **long-term** is the store's ``memory_entries`` table -- the source of
  truth. Every :meth:`HierarchicalMemory.store` writes through to it and
  commits before returning; values are compressed, large ones deduplicated
  (:class:`~statekeep.memory.optimizer.MemoryOptimizer`).
* **working** is an in-process :class:`~statekeep.memory.hot.HotTier` of
  decoded values (``working_memory_bytes``).
* **short-term** is the Redis warm tier, when there is one: compressed JSON
  bytes shared by every process on the store.

The upper tiers only ever hold copies of committed rows, placed after the
commit (an ``after_commit`` hook), so a rolled-back write never shows. Sizes
are the encoded JSON length, not ``sys.getsizeof``. "Evicting" moves an entry
*down*: a working entry is handed to short-term before it is dropped; a
short-term entry is simply dropped, because long-term already holds it.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from statekeep import codec
from statekeep.errors import ValidationError
from statekeep.ids import validate_key
from statekeep.memory.hot import HotTier
from statekeep.memory.optimizer import MemoryOptimizer
from statekeep.store.protocol import Store

__all__ = ["EvictionReport", "HierarchicalMemory", "ShortTermTier"]

log = logging.getLogger("statekeep.memory")

MB: Final = 1024 * 1024
#: The seed's placement rule: size limits of the working and short-term tiers.
WORKING_MAX_VALUE: Final = 1 * MB
SHORT_TERM_MAX_VALUE: Final = 10 * MB
#: Pressure starts above HIGH_WATER of a tier's capacity; eviction stops at LOW_WATER.
HIGH_WATER: Final = 0.9
LOW_WATER: Final = 0.75
#: The RSS check reads /proc, so store() does it only every this many writes.
RSS_CHECK_EVERY: Final = 256
_PREFIX: Final = "mem:"


class ShortTermTier(Protocol):
    """What HierarchicalMemory needs of the warm tier (``memory.warm.WarmTier``)."""

    @property
    def available(self) -> bool: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> bool: ...

    def delete(self, *keys: str) -> None: ...

    def oldest(self, n: int) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class EvictionReport:
    """What one :meth:`HierarchicalMemory.evict_cold_data` pass did."""

    working_moved: int
    short_term_dropped: int
    rss_bytes: int | None


def process_rss() -> int | None:
    """Current resident set size in bytes (Linux /proc), else the peak from
    getrusage (an over-estimate, which errs toward evicting), else None."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (OSError, ValueError):
        return None


def _check_importance(importance: object) -> float:
    if isinstance(importance, bool) or not isinstance(importance, int | float):
        raise ValidationError(f"importance must be a number in [0, 1], not"
                              f" {type(importance).__name__}", field="importance")
    value = float(importance)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValidationError(f"importance must be in [0, 1], not {importance}",
                              field="importance")
    return value


class HierarchicalMemory:
    """Key/value memory over three tiers; the store is always written first."""

    def __init__(
        self,
        store: Store,
        *,
        short_term: ShortTermTier | None = None,
        working: HotTier | None = None,
        optimizer: MemoryOptimizer | None = None,
        rss_limit_bytes: int | None = None,
    ) -> None:
        cfg = store.config
        self.db = store
        self.short_term = short_term
        self.working = working or HotTier(cfg.working_memory_bytes, cfg.hot_ttl_seconds)
        self.optimizer = optimizer or MemoryOptimizer(store)
        self.rss_limit_bytes = (cfg.memory_rss_limit_bytes if rss_limit_bytes is None
                                else rss_limit_bytes)
        self.promote_after_hits = max(1, cfg.promote_after_hits)
        self._window = cfg.warm_ttl_seconds
        self._lock = threading.Lock()
        #: key -> (hits, first hit at); reads from short- or long-term awaiting promotion.
        self._recent: dict[str, tuple[int, float]] = {}
        #: key -> (reads, last read); long-term access counts not yet written.
        self._accesses: dict[str, tuple[int, Any]] = {}
        self._writes = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("short_term_hits", "short_term_misses", "short_term_errors",
             "long_term_hits", "long_term_misses", "promotions", "working_moved_down",
             "short_term_dropped", "stores", "deletes"), 0)

    # -- writes --------------------------------------------------------------------

    def store(self, key: str, value: Any, importance: float = 0.5) -> None:
        """Write ``value`` durably, then place a copy in the tier the seed's rule picks.

        Returns once the long-term row has committed (inside an outer
        transaction: once that commits, which is also when the copy is placed).
        """
        validate_key(key, "key")
        weight = _check_importance(importance)
        raw = self.optimizer.encode(value)
        st = self.db
        with st.atomic() as conn:
            old = conn.execute(
                f"SELECT blob_hash, importance, size_bytes FROM memory_entries WHERE key = ?"
                f"{st.row_lock}", (key,)).fetchone()
            packed = self.optimizer.pack(conn, raw)
            now = st.ts(st.now())
            conn.execute(
                "INSERT INTO memory_entries (key, value, blob_hash, importance, size_bytes,"
                " access_count, last_accessed, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, blob_hash = excluded.blob_hash,"
                " importance = excluded.importance, size_bytes = excluded.size_bytes,"
                " updated_at = excluded.updated_at",
                (key, packed.inline, packed.blob_hash, weight, len(raw), now, now, now))
            if old is not None:
                self.optimizer.release(conn, old[0])
            # The value goes in too: the audit log is the change log, and
            # point-in-time recovery rebuilds memory entries from it.
            meta = {"importance": weight, "size_bytes": len(raw), "blob_hash": packed.blob_hash,
                    "value": orjson.Fragment(raw)}
            old_meta = None if old is None else {
                "importance": float(old[1]), "size_bytes": int(old[2]), "blob_hash": old[0]}
            st.audit_row(conn, "update" if old else "create", "memory", key, old_meta, meta,
                         user_id=None, session_id=None)
            existed = old is not None
            st.after_commit(lambda: self._placed(key, raw, weight, existed))
        self.counters["stores"] += 1
        self._writes += 1
        if self._under_pressure(check_rss=self._writes % RSS_CHECK_EVERY == 0):
            self.evict_cold_data()

    def delete(self, key: str) -> bool:
        """Remove ``key`` from every tier; True if long-term held it."""
        validate_key(key, "key")
        st = self.db
        with st.atomic() as conn:
            old = conn.execute(
                f"SELECT blob_hash, importance, size_bytes FROM memory_entries WHERE key = ?"
                f"{st.row_lock}", (key,)).fetchone()
            if old is not None:
                conn.execute("DELETE FROM memory_entries WHERE key = ?", (key,))
                self.optimizer.release(conn, old[0])
                st.audit_row(conn, "delete", "memory", key, {
                    "importance": float(old[1]), "size_bytes": int(old[2]),
                    "blob_hash": old[0]}, None, user_id=None, session_id=None)
            st.after_commit(lambda: self._drop_copies(key))
        self.counters["deletes"] += 1
        return old is not None

    # -- reads ---------------------------------------------------------------------

    def retrieve(self, key: str) -> Any | None:
        """The value from the fastest tier that has it, or None if none does."""
        validate_key(key, "key")
        value = self.working.get(key)
        if value is not None:
            return value
        data = self._short_get(key)
        if data is not None:
            self.counters["short_term_hits"] += 1
            raw = codec.decompress(data)
            value = codec.loads(raw)
            if self._count_hit(key):
                self._promote_working(key, raw)
            return value
        return self._long_term_get(key)

    def _long_term_get(self, key: str) -> Any | None:
        row = self.db.query_one(
            "SELECT value, blob_hash, importance FROM memory_entries WHERE key = ?", (key,))
        if row is None:
            self.counters["long_term_misses"] += 1
            return None
        self.counters["long_term_hits"] += 1
        raw = self.optimizer.unpack(row[0], row[1])
        with self._lock:
            count = self._accesses.get(key, (0, None))[0]
            self._accesses[key] = (count + 1, self.db.now())
        importance = float(row[2])
        # Promote by importance at once (the seed's rule), by access otherwise.
        if importance > 0.5 or self._count_hit(key):
            self._promote(key, raw, importance)
        return codec.loads(raw)

    def _count_hit(self, key: str) -> bool:
        """Record a below-working hit; True once it is frequent enough to promote."""
        now = time.monotonic()
        with self._lock:
            hits, since = self._recent.get(key, (0, now))
            if now - since > self._window:
                hits, since = 0, now
            hits += 1
            if hits >= self.promote_after_hits:
                self._recent.pop(key, None)
                return True
            if len(self._recent) > 100_000:  # bound the bookkeeping, not correctness
                self._recent.clear()
            self._recent[key] = (hits, since)
            return False

    # -- placement -----------------------------------------------------------------

    def _placed(self, key: str, raw: bytes, importance: float, existed: bool) -> None:
        """After commit: replace any old copies with the new value's.

        Short-term is overwritten in place when the new value goes there, and
        invalidated otherwise -- but only if the key existed: a delete leaves
        the warm tier's tombstone, which would refuse this key's move down
        for a while, and a new key has no copy to invalidate.
        """
        self.working.discard(key)
        with self._lock:
            self._recent.pop(key, None)
        if self._place(key, raw, importance) != "short_term" and existed:
            self._short_delete(key)

    def _place(self, key: str, raw: bytes, importance: float) -> str:
        """The seed's rule; a value too large for a tier goes one tier down.

        Working memory gets a decoded copy of the committed bytes, never the
        caller's object, which the caller may go on mutating. Returns the tier
        that took the copy ("working", "short_term" or "long_term").
        """
        size = len(raw)
        if importance > 0.8 and size < WORKING_MAX_VALUE and \
                self.working.put(key, codec.loads(raw), size):
            return "working"
        if importance > 0.5 and size < SHORT_TERM_MAX_VALUE and self._short_put(key, raw):
            return "short_term"
        return "long_term"

    def _promote(self, key: str, raw: bytes, importance: float) -> None:
        """Long-term hit: up to short-term, or to working for important values and
        when there is no short-term tier to go to."""
        if importance > 0.8 or not self._short_ok():
            self._promote_working(key, raw)
        elif len(raw) < SHORT_TERM_MAX_VALUE and self._short_put(key, raw):
            self.counters["promotions"] += 1

    def _promote_working(self, key: str, raw: bytes) -> None:
        if len(raw) < WORKING_MAX_VALUE and self.working.put(key, codec.loads(raw), len(raw)):
            self.counters["promotions"] += 1

    def _drop_copies(self, key: str) -> None:
        self.working.discard(key)
        self._short_delete(key)
        with self._lock:
            self._recent.pop(key, None)

    # -- short-term, guarded: a cache failure never fails a read or write -----------

    def _short_ok(self) -> bool:
        return self.short_term is not None and self.short_term.available

    def _short_get(self, key: str) -> bytes | None:
        if not self._short_ok():
            return None
        assert self.short_term is not None
        try:
            data = self.short_term.get(_PREFIX + key)
        except Exception:
            self.counters["short_term_errors"] += 1
            log.warning("short-term get failed; reading long-term", exc_info=True)
            return None
        if data is None:
            self.counters["short_term_misses"] += 1
        return data

    def _short_put(self, key: str, raw: bytes) -> bool:
        if not self._short_ok():
            return False
        assert self.short_term is not None
        try:
            return self.short_term.put(_PREFIX + key, codec.compress(raw))
        except Exception:
            self.counters["short_term_errors"] += 1
            log.warning("short-term put failed", exc_info=True)
            return False

    def _short_delete(self, *keys: str) -> None:
        if self.short_term is None or not keys:
            return
        try:
            self.short_term.delete(*(_PREFIX + k for k in keys))
        except Exception:
            self.counters["short_term_errors"] += 1
            log.warning("short-term delete failed", exc_info=True)

    # -- pressure and eviction -------------------------------------------------------

    def _under_pressure(self, *, check_rss: bool) -> bool:
        if self.working.bytes_used > HIGH_WATER * self.working.capacity_bytes:
            return True
        if check_rss and self.rss_limit_bytes:
            rss = process_rss()
            return rss is not None and rss > self.rss_limit_bytes
        return False

    def evict_cold_data(self, *, batch: int = 64) -> EvictionReport:
        """Move least-recently-used entries down a tier until pressure is gone.

        Working entries are handed to short-term (when there is one) and then
        dropped; long-term holds every value, so nothing is ever lost. Under
        RSS pressure working memory is emptied down to the low-water mark --
        it is the only tier in this process. Short-term is trimmed when it
        reports its byte use (``bytes_used`` against ``max_bytes``) above the
        high-water mark; the warm tier also enforces ``max_bytes`` itself.
        """
        rss = process_rss() if self.rss_limit_bytes else None
        rss_high = rss is not None and rss > self.rss_limit_bytes
        moved = 0
        target = LOW_WATER * self.working.capacity_bytes
        while len(self.working) and (self.working.bytes_used > target or rss_high):
            candidates = self.working.oldest(batch)
            if not candidates:
                break
            for key in candidates:
                value = self.working.peek(key)
                if value is not None and isinstance(key, str):
                    self._short_put(key, codec.dumps_trusted(value))
                self.working.discard(key)
                moved += 1
            if rss_high and self.working.bytes_used <= target:
                break
        dropped = self._trim_short_term(batch)
        self.counters["working_moved_down"] += moved
        self.counters["short_term_dropped"] += dropped
        self.flush_access()
        return EvictionReport(moved, dropped, rss)

    def _trim_short_term(self, batch: int) -> int:
        st = self.short_term
        used = getattr(st, "bytes_used", None)
        capacity = getattr(st, "max_bytes", getattr(st, "capacity_bytes", None))
        if st is None or not isinstance(used, int) or not isinstance(capacity, int) \
                or used <= HIGH_WATER * capacity:
            return 0
        try:
            keys = [k for k in st.oldest(batch) if k.startswith(_PREFIX)]
            st.delete(*keys)
        except Exception:
            self.counters["short_term_errors"] += 1
            log.warning("short-term trim failed", exc_info=True)
            return 0
        return len(keys)

    # -- bookkeeping -----------------------------------------------------------------

    def flush_access(self) -> int:
        """Write the batched long-term read counts (reads never write one by one)."""
        with self._lock:
            pending, self._accesses = self._accesses, {}
        if not pending:
            return 0
        st = self.db
        with st.atomic() as conn:
            conn.executemany(
                "UPDATE memory_entries SET access_count = access_count + ?,"
                " last_accessed = ? WHERE key = ?",
                [(n, st.ts(at), key) for key, (n, at) in pending.items()])
        return len(pending)

    def stats(self) -> dict[str, int]:
        """Counters of every tier, for metrics."""
        w = self.working
        return {**self.counters, "working_hits": w.hits, "working_misses": w.misses,
                "working_evictions": w.evictions, "working_expirations": w.expirations,
                "working_bytes": w.bytes_used, "working_entries": len(w)}

    def keys(self) -> Iterable[str]:
        """Every key long-term holds (for tools and tests; not a hot path)."""
        with self.db.reading() as conn:
            rows = conn.execute("SELECT key FROM memory_entries ORDER BY key").fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        """Write pending access counts; the tiers themselves belong to the caller."""
        self.flush_access()
