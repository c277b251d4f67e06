"""The façade's hot tier: read-through, invalidated after commit, never stale."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from statekeep import StateConfig, StateManagementSystem, StateSystem
from statekeep.store.base import Change


@pytest.fixture
def sk(db_url: str, clock: Any) -> Iterator[StateSystem]:
    system = StateSystem(StateConfig(db=db_url), clock=clock)
    yield system
    system.close()


def test_point_reads_are_served_hot_and_invalidated_by_writes(sk: StateSystem) -> None:
    assert sk.hot is not None
    session = sk.create_session("alice")
    sk.set_context(session.id, "note", "plan", ["a"])
    first = sk.get_context(session.id, "note", "plan")
    hits = sk.hot.hits
    again = sk.get_context(session.id, "note", "plan")
    assert again is first and sk.hot.hits == hits + 1  # the same object, no store read

    sk.set_context(session.id, "note", "plan", ["b"])  # commit invalidates
    fresh = sk.get_context(session.id, "note", "plan")
    assert fresh is not None and fresh.context_value == ["b"]

    assert sk.delete_context(session.id, "note", "plan")
    assert sk.get_context(session.id, "note", "plan") is None


def test_rolled_back_write_keeps_the_cached_value_valid(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    sk.set_context(session.id, "note", "plan", 1)
    assert sk.get_context(session.id, "note", "plan").context_value == 1  # type: ignore[union-attr]
    with pytest.raises(RuntimeError), sk.store.atomic():
        sk.set_context(session.id, "note", "plan", 2)
        raise RuntimeError("abandon")
    assert sk.get_context(session.id, "note", "plan").context_value == 1  # type: ignore[union-attr]


def test_sessions_tasks_and_batches_invalidate(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    task = sk.create_task(session.id, "build")
    assert sk.get_session(session.id).version == 1
    assert sk.get_task(task.id).status == "pending"
    sk.update_session(session.id, status="paused")
    sk.start_task(task.id)
    assert sk.get_session(session.id).status == "paused"
    assert sk.get_task(task.id).status == "in_progress"

    from statekeep import ContextInput
    sk.set_context(session.id, "note", "k", 1)
    assert sk.get_context(session.id, "note", "k").context_value == 1  # type: ignore[union-attr]
    sk.set_context_many(session.id, [ContextInput("note", "k", 2)])
    assert sk.get_context(session.id, "note", "k").context_value == 2  # type: ignore[union-attr]

    sk.delete_session(session.id)
    assert sk.get_context(session.id, "note", "k") is None
    with pytest.raises(Exception, match="not found"):
        sk.get_task(task.id)


def test_expiry_is_honoured_on_a_hit(sk: StateSystem, clock: Any) -> None:
    session = sk.create_session("alice")
    sk.set_context(session.id, "note", "soon", 1, ttl_seconds=60)
    assert sk.get_context(session.id, "note", "soon") is not None  # now cached
    clock.advance(seconds=61)
    assert sk.get_context(session.id, "note", "soon") is None


def test_a_fill_that_raced_an_invalidation_is_dropped(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    stale = sk.store.get_session(session.id)
    generation = sk._generation
    sk.update_session(session.id, metadata={"v": 2})  # commits and invalidates
    sk._fill(("session", session.id), stale, generation)  # a reader that lost the race
    assert sk.get_session(session.id).metadata == {"v": 2}


def test_hits_count_accesses(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    sk.set_context(session.id, "note", "plan", 1)
    for _ in range(5):
        sk.get_context(session.id, "note", "plan")
    sk.store.access_log.flush()
    item = sk.store.get_context(session.id, "note", "plan")
    assert item is not None and item.access_count >= 5


def test_invalidate_accepts_other_processes_changes(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    sk.get_session(session.id)
    with sk.store.atomic() as conn:  # a change this process's listeners never saw
        conn.execute("UPDATE sessions SET metadata = ? WHERE id = ?",
                     (sk.store.json_in(b'{"x": 1}'), session.id))
    assert sk.get_session(session.id).metadata is None  # still the cached copy
    sk.invalidate(Change("update", "session", (session.id,), session.id))
    assert sk.get_session(session.id).metadata == {"x": 1}


def test_async_hot_hit_needs_no_worker_thread(db_url: str) -> None:
    async def main() -> None:
        async with StateManagementSystem(StateConfig(db=db_url)) as sms:
            session = await sms.create_session("alice")
            await sms.set_context(session.id, "note", "plan", [1])
            assert await sms.get_context(session.id, "note", "plan") is not None  # fills
            executor = ThreadPoolExecutor(max_workers=1)
            asyncio.get_running_loop().set_default_executor(executor)
            executor.shutdown()  # from here on, any thread hop would fail
            item = await sms.get_context(session.id, "note", "plan")
            assert item is not None and item.context_value == [1]
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))

    asyncio.run(main())


def test_zero_sized_hot_tier_means_no_cache(db_url: str) -> None:
    with StateSystem(StateConfig(db=db_url, hot_cache_bytes=0)) as sk:
        assert sk.hot is None
        session = sk.create_session("alice")
        assert sk.get_session(session.id).id == session.id


def test_resume_reactivates_and_prefetches_the_working_set(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    task = sk.create_task(session.id, "build")
    sk.start_task(task.id)
    done = sk.create_task(session.id, "lint")
    sk.start_task(done.id)
    sk.complete_task(done.id)
    sk.set_context(session.id, "file", "src/app.py", {"lines": 10})
    sk.update_session(session.id, status="paused")
    assert sk.hot is not None
    sk.hot.clear()

    resumed = sk.resume_session(session.id)
    assert resumed.status == "active"
    assert sk._cached(("task", task.id)) is not None  # active task prefetched
    assert sk._cached(("task", done.id)) is None  # finished one is not
    assert sk._cached(("ctx", session.id, "file", "src/app.py")) is not None
    hits = sk.hot.hits
    assert sk.get_context(session.id, "file", "src/app.py") is not None
    assert sk.hot.hits == hits + 1  # the first read after resume is a hit
