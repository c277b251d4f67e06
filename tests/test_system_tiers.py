"""The façade wires the tiers: cross-process invalidation, memory, archive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from statekeep import StateConfig, StateSystem


@pytest.fixture
def pair(db_url: str, redis_url: str) -> Iterator[tuple[StateSystem, StateSystem]]:
    """Two façades on one store, each with its own hot tier, joined by the bus."""
    config = StateConfig(db=db_url, redis_url=redis_url)
    a, b = StateSystem(config), StateSystem(config)
    assert a.bus is not None and b.bus is not None
    assert a.bus.wait_ready(5) and b.bus.wait_ready(5)
    yield a, b
    a.close()
    b.close()


def eventually(check: Callable[[], bool], within: float = 2.0) -> float:
    """Seconds until check() held; fails after ``within``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"condition not met within {within} s")
        time.sleep(0.002)
    return time.monotonic() - start


def test_a_write_in_one_facade_drops_the_others_hot_copy(
        pair: tuple[StateSystem, StateSystem]) -> None:
    a, b = pair
    session = a.create_session("alice")
    a.set_context(session.id, "note", "plan", 1)
    assert b.hot is not None
    # a's own invalidations may still be arriving and cancel b's first fills
    # (the race guard); read until b serves the item from its hot tier.
    eventually(lambda: b.get_context(session.id, "note", "plan") is not None
               and b._cached(("ctx", session.id, "note", "plan")) is not None)

    a.set_context(session.id, "note", "plan", 2)
    eventually(lambda: b.get_context(session.id, "note", "plan").context_value == 2)  # type: ignore[union-attr]
    for _ in range(50):  # and never the stale value after that
        assert b.get_context(session.id, "note", "plan").context_value == 2  # type: ignore[union-attr]

    b.get_session(session.id)
    a.delete_session(session.id)
    eventually(lambda: b._cached(("session", session.id)) is None)
    assert b.get_context(session.id, "note", "plan") is None


def test_memory_writes_are_coherent_across_facades(
        pair: tuple[StateSystem, StateSystem]) -> None:
    a, b = pair
    a.memory.store("plan", {"step": 1}, importance=0.9)
    assert b.memory.retrieve("plan") == {"step": 1}
    b.memory.retrieve("plan")  # now in b's working memory
    a.memory.store("plan", {"step": 2}, importance=0.9)
    eventually(lambda: b.memory.retrieve("plan") == {"step": 2})


def test_memory_without_redis_uses_the_store(db_url: str) -> None:
    with StateSystem(StateConfig(db=db_url)) as sk:
        assert sk.bus is None and sk.cache_layer is None and sk.memory.short_term is None
        sk.memory.store("k", [1, 2, 3], importance=0.2)
    with StateSystem(StateConfig(db=db_url)) as again:  # durable: a new process sees it
        assert again.memory.retrieve("k") == [1, 2, 3]


def test_an_archived_session_is_restored_on_read(db_url: str, clock: Any) -> None:
    with StateSystem(StateConfig(db=db_url, cold_retention_days=90), clock=clock) as sk:
        session = sk.create_session("alice")
        sk.set_context(session.id, "note", "plan", ["keep"])
        sk.update_session(session.id, status="completed")
        clock.advance(days=91)
        report = sk.archive.run(now=clock.now + timedelta(seconds=1))
        assert [a.session_id for a in report.archived] == [session.id]
        assert sk.archive.is_archived(session.id)

        restored = sk.get_session(session.id)  # transparent
        assert restored.id == session.id and restored.status == "completed"
        assert not sk.archive.is_archived(session.id)
        item = sk.get_context(session.id, "note", "plan")
        assert item is not None and item.context_value == ["keep"]


def test_reconstruction_is_shared_through_redis_and_never_stale(
        pair: tuple[StateSystem, StateSystem]) -> None:
    a, b = pair
    session = a.create_session("alice")
    a.set_context(session.id, "note", "plan", "lexer first")
    warm = a.cache_layer
    assert warm is not None
    # The write's own invalidation (echoed by the bus) and the warm tier's
    # tombstone after it refuse warm fills for a moment; then a build is shared.
    assert a.hot is not None

    def shared_build() -> bool:
        a.hot.clear()  # type: ignore[union-attr]
        a.reconstruct_context(session.id)
        return warm.get(f"recon:{session.id}") is not None
    eventually(shared_build, within=6)
    built = a.reconstruct_context(session.id)
    assert b.hot is not None
    b.hot.clear()  # b's first read must come from Redis, not its own build
    shared = b.reconstruct_context(session.id)
    assert shared == built and shared is not built
    assert shared.built_at == built.built_at  # the same build, not a rebuild

    a.set_context(session.id, "note", "plan", "parser first")

    def fresh() -> bool:
        ctx = b.reconstruct_context(session.id)
        return [r.item.context_value for r in ctx.recent_context] == ["parser first"]
    eventually(fresh)
    for _ in range(20):
        assert fresh()

    # A preference change names no session: the warm entry's stamp catches it.
    before = b.reconstruct_context(session.id)
    assert before.preferences == ()
    a.set_preference("alice", "style", "quotes", "double")
    eventually(lambda: len(b.reconstruct_context(session.id).preferences) == 1)
    if b.hot is not None:
        b.hot.clear()  # and from Redis too: a stale warm entry fails its stamp
    assert len(b.reconstruct_context(session.id).preferences) == 1
