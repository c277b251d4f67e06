"""The Redis warm tier against real redis-servers: budget, isolation, outages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from statekeep.errors import ConfigError, InvalidIdError, ValidationError
from statekeep.memory.warm import WarmTier
from statekeep.retry import ExponentialBackoff

pytestmark = pytest.mark.redis

FAST = ExponentialBackoff(base=0.01, cap=0.1)


@pytest.fixture
def make_tier(private_redis: Any) -> Iterator[Any]:
    """Build tiers on the private server; all are closed at teardown."""
    tiers: list[WarmTier] = []

    def factory(namespace: str = "ns", **kw: Any) -> WarmTier:
        kw.setdefault("ttl_seconds", 60)
        kw.setdefault("max_bytes", 1 << 20)
        kw.setdefault("backoff", FAST)
        tier = WarmTier(private_redis.url, namespace, **kw)
        tiers.append(tier)
        return tier

    yield factory
    for tier in tiers:
        tier.close()


def ledger_matches(tier: WarmTier, raw: redis.Redis) -> None:
    """The ledger's total equals the live values' bytes, and every value is in it."""
    prefix = f"sk:{tier.namespace}:"
    live = {k.decode()[len(prefix) + 2:]: raw.strlen(k)
            for k in raw.scan_iter(match=prefix + "k:*")}
    sizes = {k.decode(): int(v) for k, v in raw.hgetall(prefix + "size").items()}
    assert sizes == live
    assert tier.bytes_used == sum(live.values())
    assert set(raw.zrange(prefix + "lru", 0, -1)) == {k.encode() for k in live}


def test_round_trip_and_counters(make_tier: Any) -> None:
    tier = make_tier()
    assert tier.available
    assert tier.get("a") is None
    assert tier.put("a", b"alpha") and tier.put("b", b"beta")
    assert tier.get("a") == b"alpha"
    assert tier.get_many(["a", "b", "zz", "a"]) == {"a": b"alpha", "b": b"beta"}
    assert tier.get_many([]) == {}
    tier.delete("a", "nope")
    assert tier.get("a") is None
    assert (tier.hits, tier.misses, tier.errors) == (3, 3, 0)
    assert tier.bytes_used == len(b"beta")


def test_namespaces_are_isolated_and_clear_touches_only_its_own(
        make_tier: Any, private_redis: Any) -> None:
    one, two = make_tier("one"), make_tier("two")
    raw = redis.Redis.from_url(private_redis.url)
    raw.set("unrelated", b"x")
    one.put("k", b"from-one")
    two.put("k", b"from-two")
    assert one.get("k") == b"from-one" and two.get("k") == b"from-two"
    one.clear()
    assert one.get("k") is None and one.bytes_used == 0
    assert two.get("k") == b"from-two" and two.bytes_used == len(b"from-two")
    assert raw.get("unrelated") == b"x"
    assert all(k.startswith((b"sk:two:", b"unrelated")) for k in raw.scan_iter())
    raw.close()


def test_budget_evicts_least_recently_used(make_tier: Any, private_redis: Any) -> None:
    tier = make_tier(max_bytes=1000, touch_interval=0.0)
    for i in range(5):
        assert tier.put(f"k{i}", bytes(200))
        time.sleep(0.002)  # distinct millisecond scores
    assert tier.get("k0") is not None  # touch k0: now k1 is the oldest
    time.sleep(0.002)
    assert tier.oldest(2) == ["k1", "k2"]
    assert tier.put("k5", bytes(300))  # 1300 bytes -> evict k1, k2
    assert tier.get("k1") is None and tier.get("k2") is None
    assert tier.get("k0") is not None and tier.get("k5") is not None
    assert tier.bytes_used <= 1000
    raw = redis.Redis.from_url(private_redis.url)
    ledger_matches(tier, raw)
    raw.close()


def test_value_over_budget_is_refused(make_tier: Any) -> None:
    tier = make_tier(max_bytes=100)
    assert tier.put("small", bytes(100))
    assert not tier.put("big", bytes(101))
    assert tier.get("big") is None and tier.get("small") is not None


def test_replacing_a_value_recounts_its_size(make_tier: Any, private_redis: Any) -> None:
    tier = make_tier()
    tier.put("k", bytes(500))
    tier.put("k", bytes(20))
    assert tier.bytes_used == 20
    raw = redis.Redis.from_url(private_redis.url)
    ledger_matches(tier, raw)
    raw.close()


def test_expired_entries_leave_the_ledger_lazily(make_tier: Any, private_redis: Any) -> None:
    tier = make_tier(ttl_seconds=0.2)
    tier.put("old", bytes(100))
    time.sleep(0.35)
    assert tier.get("old") is None  # Redis expired the value itself
    assert tier.bytes_used == 100  # ...but the ledger only learns on the next put
    tier.put("new", bytes(7))
    assert tier.bytes_used == 7
    raw = redis.Redis.from_url(private_redis.url)
    ledger_matches(tier, raw)
    raw.close()


def test_delete_blocks_a_stale_refill_for_a_while(make_tier: Any) -> None:
    tier = make_tier(tombstone_seconds=0.2)
    tier.put("k", b"v1")
    tier.delete("k")  # a writer committed v2 and invalidated
    assert not tier.put("k", b"v1")  # a reader's fill that started before: refused
    assert tier.get("k") is None
    time.sleep(0.3)
    assert tier.put("k", b"v2")
    assert tier.get("k") == b"v2"


def test_shared_budget_stays_exact_under_concurrent_clients(
        make_tier: Any, private_redis: Any) -> None:
    # separate WarmTier objects = separate connection pools, as in separate processes
    tiers = [make_tier(max_bytes=20_000) for _ in range(4)]

    def work(n: int) -> None:
        tier = tiers[n]
        for i in range(300):
            key = f"k{(i * 7 + n) % 120}"
            if i % 5 == 0:
                tier.delete(key)
            else:
                tier.put(key, bytes(50 + (i * 13 + n) % 400))
            tier.get(f"k{i % 120}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(t.errors == 0 for t in tiers)
    assert tiers[0].bytes_used <= 20_000
    raw = redis.Redis.from_url(private_redis.url)
    ledger_matches(tiers[0], raw)
    raw.close()


def test_outage_falls_through_warns_once_and_recovers(
        make_tier: Any, private_redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    tier = make_tier()
    assert tier.put("k", b"v")
    private_redis.kill()
    caplog.set_level(logging.WARNING, logger="statekeep.memory.warm")
    for _ in range(20):
        assert tier.get("k") is None
        assert tier.get_many(["k"]) == {}
        assert tier.put("k", b"v") is False
        tier.delete("k")
        assert tier.oldest(3) == []
        time.sleep(0.01)
    assert not tier.available
    assert tier.errors >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()

    private_redis.start()  # same port, empty
    deadline = time.monotonic() + 5
    while not tier.put("fresh", b"back") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tier.available
    assert tier.get("fresh") == b"back"

    caplog.clear()
    private_redis.kill()  # a second outage warns again
    for _ in range(5):
        assert tier.get("k") is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_deletes_missed_during_an_outage_are_replayed(make_tier: Any, private_redis: Any) -> None:
    # The server keeps its data but this client cannot reach it for a moment
    # (CLIENT PAUSE): the invalidation must not be lost.
    tier = make_tier(timeout=0.1)
    tier.put("k", b"stale")
    raw = redis.Redis.from_url(private_redis.url)
    raw.client_pause(700)
    tier.delete("k")
    assert not tier.available
    time.sleep(0.8)
    assert raw.get("sk:ns:k:k") == b"stale"  # still there: the delete was owed
    deadline = time.monotonic() + 5
    while not tier.available and time.monotonic() < deadline:
        tier.get("other")
        time.sleep(0.02)
    assert raw.get("sk:ns:k:k") is None  # replayed on recovery
    assert not tier.put("k", b"stale")  # and it left its tombstone like any delete
    raw.close()


def test_bad_input_is_refused_clearly(private_redis: Any) -> None:
    with pytest.raises(InvalidIdError):
        WarmTier(private_redis.url, "a:b", ttl_seconds=1, max_bytes=1)
    with pytest.raises(ConfigError):
        WarmTier(private_redis.url, "ns", ttl_seconds=0, max_bytes=1)
    with pytest.raises(ConfigError):
        WarmTier("http://example", "ns", ttl_seconds=1, max_bytes=1)
    tier = WarmTier(private_redis.url, "ns", ttl_seconds=1, max_bytes=10)
    with pytest.raises(ValidationError):
        tier.put("k", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        tier.get(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        tier.put("", b"x")
    tier.close()
