"""HotTier: byte-bounded LRU with lazy TTL; no timing assertions."""

from __future__ import annotations

import threading

import pytest

from statekeep.memory import hot as hot_module
from statekeep.memory.hot import HotTier


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ticker(monkeypatch: pytest.MonkeyPatch) -> Ticker:
    t = Ticker()
    monkeypatch.setattr(hot_module, "_monotonic", t)
    return t


def test_get_put_and_counters() -> None:
    tier = HotTier(1000, 60)
    assert tier.get("a") is None
    assert tier.put("a", {"x": 1}, 10)
    assert tier.get("a") == {"x": 1}
    assert (tier.hits, tier.misses, len(tier), tier.bytes_used) == (1, 1, 1, 10)
    assert tier.put("a", [2], 30)  # replace: the byte count follows
    assert (tier.get("a"), tier.bytes_used, len(tier)) == ([2], 30, 1)


def test_bounded_by_declared_bytes_evicting_lru_first() -> None:
    tier = HotTier(100, 60)
    for key in "abcd":
        assert tier.put(key, key, 25)
    tier.get("a")  # a becomes most recent; b is now the oldest
    assert tier.oldest(2) == ["b", "c"]
    assert tier.put("e", "e", 30)  # needs 30 more: b and c go
    assert [k for k in "abcde" if k in tier] == ["a", "d", "e"]
    assert tier.evictions == 2
    assert tier.bytes_used == 80 <= tier.capacity_bytes


def test_too_large_is_refused_and_drops_the_stale_copy() -> None:
    tier = HotTier(100, 60)
    tier.put("k", "old", 10)
    assert tier.put("k", "new", 101) is False
    assert tier.get("k") is None  # the caller will place "new" lower; no stale shadow
    assert tier.bytes_used == 0
    assert tier.put("exact", "fits", 100)


def test_ttl_is_checked_lazily_on_read(ticker: Ticker) -> None:
    tier = HotTier(100, ttl_seconds=5)
    tier.put("a", 1, 10)
    tier.put("b", 2, 10, ttl_seconds=50)
    ticker.t += 6
    assert tier.get("a") is None
    assert tier.get("b") == 2
    assert (tier.expirations, tier.bytes_used, "a" in tier) == (1, 10, False)
    assert tier.peek("b") == 2


def test_discard_discard_where_clear() -> None:
    tier = HotTier(1000, 60)
    for i in range(10):
        tier.put(("task", f"t{i}"), {"session_id": "s1" if i % 2 else "s2"}, 10)
    assert tier.discard(("task", "t0")) and not tier.discard(("task", "t0"))
    gone = tier.discard_where(lambda _k, v: v["session_id"] == "s1")
    assert gone == 5 and len(tier) == 4 and tier.bytes_used == 40
    tier.clear()
    assert (len(tier), tier.bytes_used) == (0, 0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        HotTier(-1, 60)
    with pytest.raises(ValueError):
        HotTier(10, 0)
    with pytest.raises(ValueError):
        HotTier(10, 1).put("k", 1, -5)
    with pytest.raises(TypeError):
        HotTier(10, 1).get(["unhashable"])  # type: ignore[arg-type]


def test_concurrent_readers_and_writers_keep_the_byte_count_exact() -> None:
    tier = HotTier(5_000, 60)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for i in range(20_000):
                tier.get(i % 300)
                if i % 500 == 0:
                    tier.oldest(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer(offset: int) -> None:
        try:
            for i in range(5_000):
                key = (i + offset) % 300
                if i % 7 == 0:
                    tier.discard(key)
                else:
                    tier.put(key, i, 1 + i % 50)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    threads += [threading.Thread(target=writer, args=(o,)) for o in (0, 150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert tier.bytes_used == sum(tier.size_of(k) or 0 for k in tier.oldest(10_000))
    assert tier.bytes_used <= tier.capacity_bytes
