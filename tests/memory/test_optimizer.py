"""MemoryOptimizer: JSON + measured codecs, dedup through blobs, prefetch into a HotTier."""

from __future__ import annotations

import pytest

from statekeep import Store, codec
from statekeep.errors import InvalidIdError, NotJSONError, ValueTooLargeError
from statekeep.memory.hot import HotTier
from statekeep.memory.optimizer import MemoryOptimizer, context_key, task_key


def _state(n: int) -> dict[str, object]:
    return {"messages": [{"role": "tool", "content": f"step {i} read src/mod{i % 7}.py",
                          "tokens": i * 3} for i in range(n)]}


@pytest.mark.parametrize(("items", "algorithm"), [(0, "raw"), (30, "lz4"), (2000, "zstd")])
def test_compress_picks_the_codec_by_size_and_round_trips(
        store: Store, items: int, algorithm: str) -> None:
    opt = MemoryOptimizer(store)
    value = _state(items)
    packed = opt.compress(value)
    assert packed.algorithm == algorithm
    assert packed.original_size == len(codec.dumps(value))
    assert packed.compressed_size == len(packed.data)
    assert opt.decompress(packed) == value
    assert opt.decompress(packed.data) == value
    if algorithm != "raw":
        assert packed.ratio > 1.5


def test_compress_refuses_what_json_cannot_hold(store: Store) -> None:
    opt = MemoryOptimizer(store)
    for bad in ({1, 2}, float("nan"), object(), b"bytes"):
        with pytest.raises(NotJSONError):
            opt.compress(bad)
    with pytest.raises(ValueTooLargeError):
        MemoryOptimizer(store).compress("x" * (store.config.max_value_bytes + 1))


def test_pack_inlines_small_and_deduplicates_large(store: Store) -> None:
    opt = MemoryOptimizer(store)
    small = codec.dumps(_state(3))
    large = codec.dumps(_state(2000))
    assert len(small) < opt.dedup_min_bytes <= len(large)
    with store.atomic() as conn:
        p_small = opt.pack(conn, small)
        p_large = [opt.pack(conn, large) for _ in range(3)]
    assert p_small.blob_hash is None and p_small.inline is not None
    assert opt.unpack(p_small.inline, None) == small
    assert {p.blob_hash for p in p_large} == {codec.checksum(large)}
    assert store.blob_stats().references == 3
    assert opt.unpack(None, p_large[0].blob_hash) == large
    with store.atomic() as conn:
        opt.release(conn, p_large[0].blob_hash)
        opt.release(conn, None)
    assert store.blob_stats().references == 2
    with pytest.raises(codec.CorruptDataError):
        opt.unpack(None, None)


def test_prefetch_loads_active_tasks_and_top_context(store: Store) -> None:
    session = store.create_session("alice")
    other = store.create_session("bob")
    running = store.create_task(session.id, "build")
    store.start_task(running.id)
    pending = store.create_task(session.id, "test")
    done = store.create_task(session.id, "lint")
    store.start_task(done.id)
    store.complete_task(done.id)
    store.set_context(session.id, "file", "a.py", {"lines": 10})
    store.set_context(other.id, "file", "b.py", {"lines": 20})
    hot = HotTier(1 << 20, 60)

    placed = MemoryOptimizer(store).prefetch(session.id, hot)

    assert placed == 3 == len(hot)
    assert hot.get(("task", running.id)).status == "in_progress"
    assert hot.get(("task", pending.id)) is not None
    assert hot.get(("task", done.id)) is None
    item = hot.get(("ctx", session.id, "file", "a.py"))
    assert item.context_value == {"lines": 10}
    assert context_key(item) == ("ctx", session.id, "file", "a.py")
    assert task_key(running) == ("task", running.id)
    assert hot.get(("ctx", other.id, "file", "b.py")) is None


def test_prefetch_skips_what_does_not_fit_and_validates(store: Store) -> None:
    session = store.create_session("alice")
    store.set_context(session.id, "file", "big", {"text": "x" * 5000})
    hot = HotTier(1000, 60)
    assert MemoryOptimizer(store).prefetch(session.id, hot) == 0
    with pytest.raises(InvalidIdError):
        MemoryOptimizer(store).prefetch("bad id!", hot)
