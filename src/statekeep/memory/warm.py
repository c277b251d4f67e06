"""The warm tier: a byte-budgeted, TTL-bounded cache in a shared Redis.

The store is the source of truth; this tier only holds copies that are
expensive to rebuild or worth sharing between processes. Three rules follow:

* **Never raise for Redis.** If Redis is down, ``get`` is a miss and
  ``put``/``delete`` do nothing; one warning is logged per outage, and the
  tier leaves the server alone for a short, growing interval
  (:class:`~statekeep.retry.Outage`) instead of paying a connect timeout on
  every call. It comes back by itself.
* **Own accounting.** The tier does not own the server's ``maxmemory``, so it
  keeps its own ledger per namespace -- a hash of value sizes, a sorted set of
  last-access times (the LRU order) and a byte total -- and changes data and
  ledger together inside Lua scripts, which Redis runs atomically. Several
  processes can therefore share one budget without drifting. Entries that
  expired by TTL are dropped from the ledger lazily: an entry whose last
  access is more than one TTL ago has certainly expired.
* **A single GET stays one plain GET.** Hits are remembered locally and their
  LRU scores are sent in one batched ``ZADD XX GT`` that rides in the same
  round trip as a later read, at most once per ``touch_interval`` seconds
  (up to ``max_touches`` distinct keys each time). The LRU order is
  therefore about a second behind, which is plenty for choosing victims.

Read-through fills race with invalidations: process B reads the store, A
commits and deletes the key, then B puts the value it read -- now stale.
``delete`` therefore leaves a short-lived tombstone per key, and ``put``
refuses while it exists, so a fill that started before an invalidation cannot
land after it (as long as the fill takes less than ``tombstone_seconds``).
Writers invalidate; they do not write through.

Key layout for namespace ``ns`` (plain Redis or Sentinel; the scripts touch
keys they compute, so Redis Cluster is not supported)::

    sk:ns:k:<key>   the value (SET ... PX ttl)
    sk:ns:t:<key>   tombstone after a delete
    sk:ns:lru       ZSET key -> last access (ms since the epoch)
    sk:ns:size      HASH key -> value bytes
    sk:ns:used      total bytes of the namespace
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from statekeep.errors import ConfigError, InvalidIdError, ValidationError
from statekeep.retry import ExponentialBackoff, Outage

__all__ = ["WarmTier", "redis_client", "redis_location", "validate_namespace"]

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not usable right now", never a caller bug.
#: Failed deletes remembered during an outage; beyond this, recovery clears all.
MAX_OWED = 100_000

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

_PUT = """
local vkey, tkey, lru, sizes, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local member, data, prefix = ARGV[1], ARGV[2], ARGV[6]
local ttl, maxb, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function forget(m)
  local s = redis.call('HGET', sizes, m)
  if s then
    redis.call('HDEL', sizes, m)
    redis.call('DECRBY', used, s)
  end
  redis.call('ZREM', lru, m)
end
if redis.call('EXISTS', tkey) == 1 then return -1 end
local gone = redis.call('ZRANGEBYSCORE', lru, '-inf', '(' .. (now - ttl), 'LIMIT', 0, 64)
for _, m in ipairs(gone) do
  redis.call('DEL', prefix .. m)
  forget(m)
end
forget(member)
redis.call('SET', vkey, data, 'PX', ttl)
redis.call('HSET', sizes, member, #data)
local total = redis.call('INCRBY', used, #data)
local evicted = 0
while total > maxb do
  local victim = redis.call('ZPOPMIN', lru)
  if #victim == 0 then break end
  redis.call('DEL', prefix .. victim[1])
  local s = redis.call('HGET', sizes, victim[1])
  if s then
    redis.call('HDEL', sizes, victim[1])
    total = redis.call('DECRBY', used, s)
  end
  evicted = evicted + 1
end
redis.call('ZADD', lru, now, member)
return evicted
"""

_DELETE = """
local lru, sizes, used = KEYS[1], KEYS[2], KEYS[3]
local vprefix, tprefix, tomb = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local m = ARGV[i]
  redis.call('DEL', vprefix .. m)
  local s = redis.call('HGET', sizes, m)
  if s then
    redis.call('HDEL', sizes, m)
    redis.call('DECRBY', used, s)
  end
  redis.call('ZREM', lru, m)
  if tomb > 0 then redis.call('SET', tprefix .. m, '1', 'PX', tomb) end
end
return #ARGV - 3
"""

_CLEAR_BATCH = """
local lru, sizes, used = KEYS[1], KEYS[2], KEYS[3]
local popped = redis.call('ZPOPMIN', lru, tonumber(ARGV[2]))
for i = 1, #popped, 2 do
  local m = popped[i]
  redis.call('DEL', ARGV[1] .. m)
  local s = redis.call('HGET', sizes, m)
  if s then
    redis.call('HDEL', sizes, m)
    redis.call('DECRBY', used, s)
  end
end
if redis.call('ZCARD', lru) == 0 then redis.call('DEL', sizes, used) end
return #popped / 2
"""


def validate_namespace(namespace: str) -> str:
    """Namespaces become key prefixes; ':' would let two of them overlap."""
    if (not isinstance(namespace, str) or not namespace or len(namespace) > 200
            or any(c in namespace for c in ": {}*?[]") or not namespace.isprintable()):
        raise InvalidIdError(
            f"namespace must be 1-200 printable characters without ':', spaces, braces"
            f" or glob characters, not {namespace!r}", field="namespace")
    return namespace


def redis_location(url: str) -> str:
    """host:port/db of a Redis URL, for log lines (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def redis_client(url: str, *, timeout: float, health_check_interval: int = 0) -> redis.Redis:
    """A client that fails fast: small timeouts and one immediate retry.

    redis-py's default retry sleeps with backoff inside the call; the tiers do
    their own backoff across calls instead. The single retry absorbs the dead
    pooled connection left behind by a server restart.
    """
    try:
        return redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1), health_check_interval=health_check_interval)
    except ValueError as exc:
        raise ConfigError(f"bad redis URL {redis_location(url)!r}: {exc}") from None


class WarmTier:
    """Shared, byte-budgeted cache of encoded values in Redis (see module docs).

    Thread-safe. ``hits``/``misses``/``errors`` count this instance's calls;
    ``bytes_used`` is the namespace's total across all processes.
    """

    def __init__(self, redis_url: str, namespace: str, *, ttl_seconds: float, max_bytes: int,
                 timeout: float = 0.5, tombstone_seconds: float = 2.0,
                 touch_interval: float = 1.0, max_touches: int = 10_000,
                 backoff: ExponentialBackoff | None = None) -> None:
        validate_namespace(namespace)
        if not ttl_seconds > 0 or not max_bytes > 0:
            raise ConfigError("warm tier needs ttl_seconds > 0 and max_bytes > 0")
        self.namespace = namespace
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.max_bytes = max_bytes
        self.tombstone_ms = int(tombstone_seconds * 1000)
        self.touch_interval = touch_interval
        self.max_touches = max_touches
        self.location = redis_location(redis_url)
        self.hits = 0
        self.misses = 0
        self.errors = 0
        prefix = f"sk:{namespace}:"
        self._vprefix = prefix + "k:"
        self._tprefix = prefix + "t:"
        self._meta = [prefix + "lru", prefix + "size", prefix + "used"]
        self._redis = redis_client(redis_url, timeout=timeout)
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._clear = self._redis.register_script(_CLEAR_BATCH)
        self._outage = Outage(backoff)
        self._touches: dict[str, int] = {}
        self._touched_at = time.monotonic()
        self._owed: set[str] = set()  # deletes that failed, replayed on recovery
        self._owed_overflow = False
        self._owed_lock = threading.Lock()
        self._last_used = 0

    # -- health ---------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False during an outage (from the first failed call to the next success)."""
        return not self._outage.down

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self._outage.failed():
            log.warning("warm tier: Redis at %s is unreachable (%s); reads fall through to"
                        " the store until it is back", self.location, exc)

    def _ok(self) -> None:
        if self._outage.succeeded():
            log.info("warm tier: Redis at %s is back", self.location)

    def _usable(self) -> bool:
        """False while backing off; the first call after an outage settles debts first.

        Deletes that failed during the outage are replayed before anything
        else touches Redis, so a fill after recovery is never undone by an
        older invalidation (or served stale because one was lost).
        """
        if not self._outage.down:
            return True
        if not self._outage.ready():
            return False
        with self._owed_lock:
            owed, self._owed = self._owed, set()
            overflow, self._owed_overflow = self._owed_overflow, False
        try:
            if overflow:
                while int(self._clear(keys=self._meta, args=[self._vprefix, 1000])) > 0:
                    pass
            elif owed:
                self._delete(keys=self._meta,
                             args=[self._vprefix, self._tprefix, self.tombstone_ms, *owed])
            else:
                self._redis.ping()
        except REDIS_ERRORS as exc:
            self._failed(exc)
            if overflow:
                self._owe_all()
            else:
                self._owe(tuple(owed))
            return False
        self._ok()
        return True

    # -- reads ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The cached bytes, or None on a miss or while Redis is unreachable."""
        if type(key) is not str:
            raise InvalidIdError(f"warm tier keys are str, not {type(key).__name__}",
                                 field="key")
        if self._outage.down and not self._usable():
            self.misses += 1
            return None
        try:
            if self._touch_due():
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(self._vprefix + key)
                self._queue_touches(pipe)
                data = pipe.execute()[0]
            else:
                data = self._redis.get(self._vprefix + key)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self.misses += 1
            return None
        self._ok()
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        if len(self._touches) < self.max_touches:
            self._touches[key] = time.time_ns() // 1_000_000
        return data  # type: ignore[no-any-return]

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The cached values among ``keys``, in one round trip (MGET)."""
        wanted = list(dict.fromkeys(keys))
        if not all(type(k) is str for k in wanted):
            raise InvalidIdError("warm tier keys are str", field="keys")
        if not wanted:
            return {}
        if not self._usable():
            self.misses += len(wanted)
            return {}
        prefix = self._vprefix
        try:
            if self._touch_due():
                pipe = self._redis.pipeline(transaction=False)
                pipe.mget([prefix + k for k in wanted])
                self._queue_touches(pipe)
                values = pipe.execute()[0]
            else:
                values = self._redis.mget([prefix + k for k in wanted])
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self.misses += len(wanted)
            return {}
        self._ok()
        found = {k: v for k, v in zip(wanted, values, strict=True) if v is not None}
        if len(self._touches) < self.max_touches:
            self._touches.update(dict.fromkeys(found, time.time_ns() // 1_000_000))
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def _touch_due(self) -> bool:
        return bool(self._touches) and (
            time.monotonic() - self._touched_at >= self.touch_interval)

    def _queue_touches(self, pipe: Any) -> None:
        """Add the batched LRU refresh to ``pipe``; lost touches only age an entry."""
        touches, self._touches = self._touches, {}
        self._touched_at = time.monotonic()
        if touches:
            pipe.zadd(self._meta[0], touches, xx=True, gt=True)

    # -- writes ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> bool:
        """Cache ``data`` under ``key`` for one TTL, evicting LRU entries to fit.

        False when it was not cached: larger than the whole budget, the key
        was invalidated less than ``tombstone_seconds`` ago, or Redis is down.
        """
        if type(key) is not str or not key:
            raise InvalidIdError("warm tier keys are non-empty str", field="key")
        if not isinstance(data, bytes):
            raise ValidationError(f"warm tier values are bytes, not {type(data).__name__}",
                                  field="data")
        if len(data) > self.max_bytes or not self._usable():
            return False
        now_ms = time.time_ns() // 1_000_000
        try:
            evicted = self._put(
                keys=[self._vprefix + key, self._tprefix + key, *self._meta],
                args=[key, data, self.ttl_ms, self.max_bytes, now_ms, self._vprefix])
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return False
        self._ok()
        return int(evicted) >= 0

    def delete(self, *keys: str) -> None:
        """Drop ``keys`` and block stale re-fills of them for ``tombstone_seconds``.

        If Redis is unreachable the keys are remembered and deleted when it
        is back, so an outage between commit and invalidation does not leave
        a stale copy behind once Redis returns with its data.
        """
        if not keys:
            return
        for key in keys:
            if type(key) is not str or not key:
                raise InvalidIdError("warm tier keys are non-empty str", field="keys")
        if not self._usable():
            self._owe(keys)
            return
        try:
            self._delete(keys=self._meta,
                         args=[self._vprefix, self._tprefix, self.tombstone_ms, *keys])
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self._owe(keys)
            return
        self._ok()

    def _owe_all(self) -> None:
        with self._owed_lock:
            self._owed_overflow = True
            self._owed.clear()

    def _owe(self, keys: tuple[str, ...]) -> None:
        with self._owed_lock:
            if self._owed_overflow:
                return
            if len(self._owed) + len(keys) > MAX_OWED:
                self._owed_overflow = True  # clear the namespace on recovery instead
                self._owed.clear()
            else:
                self._owed.update(keys)

    def clear(self) -> None:
        """Drop every entry of this namespace (and only this one; never FLUSHDB).

        While Redis is unreachable the clear is owed and runs on recovery.
        """
        if not self._usable():
            self._owe_all()
            return
        try:
            while int(self._clear(keys=self._meta, args=[self._vprefix, 1000])) > 0:
                pass
            # values whose ledger entry was lost (e.g. a put racing a clear)
            for batch in _batched(self._redis.scan_iter(match=self._vprefix + "*",
                                                        count=1000), 1000):
                self._redis.unlink(*batch)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self._owe_all()
            return
        self._touches = {}
        self._ok()

    # -- inspection -----------------------------------------------------------

    def oldest(self, n: int) -> list[str]:
        """Up to ``n`` least recently used keys: the next eviction candidates."""
        if n <= 0 or not self._usable():
            return []
        try:
            pipe = self._redis.pipeline(transaction=False)
            self._queue_touches(pipe)
            pipe.zrange(self._meta[0], 0, n - 1)
            members = pipe.execute()[-1]
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return []
        self._ok()
        return [m.decode() for m in members]

    @property
    def bytes_used(self) -> int:
        """Bytes the namespace's values take (all processes); last known if down."""
        if self._usable():
            try:
                raw = self._redis.get(self._meta[2])
            except REDIS_ERRORS as exc:
                self._failed(exc)
            else:
                self._ok()
                self._last_used = int(raw or 0)
        return self._last_used

    def close(self) -> None:
        """Release the connection pool."""
        self._redis.close()


def _batched(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
