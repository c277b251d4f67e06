"""HierarchicalMemory over a real store (both backends) and, when reachable, real Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from statekeep import Store
from statekeep.errors import InvalidIdError, NotJSONError, ValidationError
from statekeep.memory.hierarchy import HierarchicalMemory
from statekeep.memory.warm import WarmTier

MB = 1024 * 1024


def _rows(store: Store, table: str, where: str = "") -> int:
    with store.reading() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0])


def _memory_audits(store: Store) -> int:
    return _rows(store, "audit_log", "WHERE entity_type = 'memory'")


def test_store_is_durable_before_return(make_store: Callable[..., Store]) -> None:
    mem = HierarchicalMemory(make_store())
    mem.store("plan", {"steps": ["a", "b"]}, importance=0.9)
    fresh = HierarchicalMemory(make_store())  # another handle: only the database is shared
    assert fresh.retrieve("plan") == {"steps": ["a", "b"]}
    assert fresh.counters["long_term_hits"] == 1


def test_placement_follows_the_seed_rule_without_redis(store: Store) -> None:
    mem = HierarchicalMemory(store)
    mem.store("hot", {"v": 1}, importance=0.9)
    mem.store("warm", {"v": 2}, importance=0.6)
    mem.store("cold", {"v": 3}, importance=0.2)
    mem.store("huge", "x" * (MB + 10), importance=0.95)  # too big for working
    assert [k for k in ("hot", "warm", "cold", "huge") if k in mem.working] == ["hot"]
    assert mem.retrieve("hot") == {"v": 1} and mem.working.hits == 1
    assert mem.retrieve("huge") == "x" * (MB + 10)
    assert set(mem.keys()) == {"hot", "warm", "cold", "huge"}
    assert _memory_audits(store) == 4


def test_long_term_hits_promote_by_importance_or_repeated_access(store: Store) -> None:
    mem = HierarchicalMemory(store)
    mem.store("a", [1], importance=0.2)
    mem.store("b", [2], importance=0.85)
    mem.working.clear()  # as after a restart
    assert mem.retrieve("b") == [2] and "b" in mem.working  # important: at once
    assert mem.retrieve("a") == [1] and "a" not in mem.working
    assert mem.retrieve("a") == [1] and "a" in mem.working  # second hit promotes
    assert mem.retrieve("a") == [1] and mem.counters["long_term_hits"] == 3
    assert mem.retrieve("missing") is None and mem.counters["long_term_misses"] == 1


def test_bad_input_is_refused_and_changes_nothing(store: Store) -> None:
    mem = HierarchicalMemory(store)
    cases: list[tuple[Any, Any, Any, type[Exception]]] = [
        ("", 1, 0.5, InvalidIdError), ("a\nb", 1, 0.5, InvalidIdError),
        (42, 1, 0.5, InvalidIdError), ("k", {1, 2}, 0.5, NotJSONError),
        ("k", float("inf"), 0.5, NotJSONError), ("k", 1, 1.5, ValidationError),
        ("k", 1, -0.1, ValidationError), ("k", 1, float("nan"), ValidationError),
        ("k", 1, True, ValidationError), ("k", 1, "high", ValidationError),
    ]
    for key, value, importance, error in cases:
        with pytest.raises(error):
            mem.store(key, value, importance)
    with pytest.raises(InvalidIdError):
        mem.retrieve("")
    assert _rows(store, "memory_entries") == _rows(store, "content_blobs") == 0
    assert _memory_audits(store) == 0 and len(mem.working) == 0


def test_overwrite_replaces_copies_and_releases_the_old_blob(store: Store) -> None:
    mem = HierarchicalMemory(store)
    big = {"log": "line of tool output\n" * 5000}
    mem.store("k", big, importance=0.9)
    mem.store("k2", big, importance=0.1)  # same content: one blob, two references
    assert store.blob_stats().blobs == 1 and store.blob_stats().references == 2
    mem.store("k", {"small": True}, importance=0.9)
    assert mem.retrieve("k") == {"small": True}
    assert store.blob_stats().references == 1
    assert mem.delete("k2") is True
    assert store.blob_stats().blobs == 0
    assert mem.retrieve("k2") is None and mem.delete("k2") is False
    assert _rows(store, "memory_entries") == 1


def test_delete_drops_every_copy(store: Store) -> None:
    mem = HierarchicalMemory(store)
    mem.store("k", 1, importance=0.9)
    assert "k" in mem.working
    assert mem.delete("k")
    assert "k" not in mem.working and mem.retrieve("k") is None
    assert _memory_audits(store) == 2


def test_rolled_back_write_leaves_no_copy(store: Store) -> None:
    mem = HierarchicalMemory(store)
    mem.store("k", "committed", importance=0.9)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.atomic():
        mem.store("k", "rolled back", importance=0.9)
        assert mem.retrieve("k") == "committed"  # the copy is placed only after commit
        raise Boom
    assert mem.retrieve("k") == "committed"
    mem.working.clear()
    assert mem.retrieve("k") == "committed"


def test_cached_copy_is_not_the_callers_object(store: Store) -> None:
    mem = HierarchicalMemory(store)
    value = {"items": [1, 2]}
    mem.store("k", value, importance=0.9)
    value["items"].append(3)
    assert mem.retrieve("k") == {"items": [1, 2]}


def test_pressure_moves_entries_down_and_nothing_is_lost(
        make_store: Callable[..., Store]) -> None:
    store = make_store(working_memory_bytes=10_000)
    mem = HierarchicalMemory(store, rss_limit_bytes=0)
    for i in range(60):
        mem.store(f"k{i}", {"i": i, "pad": "p" * 200}, importance=0.9)
    assert mem.working.bytes_used <= 0.9 * mem.working.capacity_bytes
    assert mem.counters["working_moved_down"] > 0
    assert all(mem.retrieve(f"k{i}") == {"i": i, "pad": "p" * 200} for i in range(60))


def test_rss_pressure_empties_working_to_low_water(store: Store) -> None:
    mem = HierarchicalMemory(store, rss_limit_bytes=1)  # always "over"
    for i in range(20):
        mem.store(f"k{i}", i, importance=0.9)
    report = mem.evict_cold_data()
    assert report.rss_bytes is not None and report.rss_bytes > 1
    assert len(mem.working) == 0
    assert [mem.retrieve(f"k{i}") for i in range(20)] == list(range(20))


def test_access_counts_are_batched_then_written(store: Store) -> None:
    mem = HierarchicalMemory(store)
    mem.store("k", "v", importance=0.1)
    for _ in range(3):
        mem.working.clear()
        mem.retrieve("k")
    assert _rows(store, "memory_entries", "WHERE access_count > 0") == 0
    assert mem.flush_access() == 1
    with store.reading() as conn:
        assert conn.execute("SELECT access_count FROM memory_entries").fetchone()[0] == 3
    mem.close()


# -- with the real Redis warm tier ------------------------------------------------


@pytest.fixture
def warm(redis_url: str) -> Iterator[Any]:
    tier = WarmTier(redis_url, "test-" + secrets.token_hex(6), ttl_seconds=60,
                    max_bytes=64 * MB)
    yield tier
    tier.clear()
    tier.close()


def test_redis_short_term_placement_promotion_and_eviction(
        make_store: Callable[..., Store], warm: Any) -> None:
    store = make_store(working_memory_bytes=4_000)
    mem = HierarchicalMemory(store, short_term=warm, rss_limit_bytes=0)
    mem.store("w", {"v": "warm"}, importance=0.6)
    assert warm.get("mem:w") is not None and "w" not in mem.working
    assert mem.retrieve("w") == {"v": "warm"} and "w" not in mem.working
    assert mem.retrieve("w") == {"v": "warm"} and "w" in mem.working  # 2 hits: promoted
    assert mem.counters["short_term_hits"] == 2

    mem.store("w", {"v": "new"}, importance=0.6)  # overwrite drops both old copies
    assert "w" not in mem.working and mem.retrieve("w") == {"v": "new"}

    for i in range(30):  # working overflows: LRU entries move down into Redis
        mem.store(f"h{i}", {"i": i, "pad": "p" * 200}, importance=0.9)
    assert mem.counters["working_moved_down"] > 0
    moved = [i for i in range(30) if f"h{i}" not in mem.working]
    assert moved and all(warm.get(f"mem:h{i}") is not None for i in moved)
    assert all(mem.retrieve(f"h{i}") == {"i": i, "pad": "p" * 200} for i in range(30))

    assert mem.delete("w")
    assert warm.get("mem:w") is None and mem.retrieve("w") is None
