"""The async API (StateManagementSystem) does real work, end to end, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from statekeep import (
    ContextInput,
    NotFoundError,
    StateConfig,
    StateManagementSystem,
    StateSystem,
    StoreError,
    TaskStatus,
)


def test_async_end_to_end(db_url: str) -> None:
    config = StateConfig(db=db_url)

    async def scenario() -> tuple[str, list[str]]:
        async with StateManagementSystem(config) as sms:
            session = await sms.create_session("alice", metadata={"goal": "ship"})
            root = await sms.create_task(session.id, "release", priority=9)
            subtasks = await asyncio.gather(*(
                sms.create_task(session.id, "step", parent_task_id=root.id,
                                description=f"step {i}") for i in range(8)))
            await sms.start_task(root.id)
            # Many concurrent writes from the event loop: each runs in a worker thread.
            items = await asyncio.gather(*(
                sms.set_context(session.id, "file", f"src/m{i}.py", {"i": i})
                for i in range(20)))
            assert len({i.id for i in items}) == 20
            assert await sms.set_context_many(
                session.id, [ContextInput("note", f"n{i}", i) for i in range(50)]) == 50
            done = await sms.complete_task(root.id, {"ok": True})
            assert done.status is TaskStatus.COMPLETED
            decision = await sms.record_decision("tool", "ruff", session_id=session.id,
                                                 task_id=root.id, confidence=0.9)
            await sms.set_preference("alice", "style", "indent", 4)
            got = await sms.get_context(session.id, "file", "src/m3.py")
            assert got is not None and got.context_value == {"i": 3}
            tree = await sms.task_tree(session.id)
            assert tree[0].walk()[0].id == root.id
            assert len(tree[0].children) == 8
            page = await sms.list_sessions(user_id="alice")
            assert [s.id for s in page.items] == [session.id]
            with pytest.raises(NotFoundError):
                await sms.get_task("tsk_missing")
            assert (await sms.get_decision(decision.id)).task_id == root.id
            events = await sms.audit(session_id=session.id, limit=1000)
            # session + 9 tasks + 2 transitions + 70 context items + 1 decision
            assert len(events) == 83
            assert (events[0].entity_type, events[0].event_type) == ("session", "create")
            assert sms.migrations.current_version() >= 1
            return session.id, [t.id for t in subtasks]

    session_id, ids = asyncio.run(scenario())
    # Everything is durable: a fresh synchronous system on the same store sees it.
    with StateSystem(config) as sk:
        assert sk.get_session(session_id).metadata == {"goal": "ship"}
        tasks = sk.list_tasks(session_id)
        assert len(tasks) == 9
        assert {t.id for t in tasks} >= set(ids)
        assert len(sk.list_context(session_id)) == 70
        assert sk.get_preference("alice", "style", "indent").preference_value == 4


def test_async_requires_open(db_url: str) -> None:
    sms = StateManagementSystem(StateConfig(db=db_url))

    async def use_closed() -> None:
        with pytest.raises(StoreError):
            await sms.create_session("alice")
        await sms.open()
        try:
            s = await sms.create_session("alice")
            assert (await sms.get_session(s.id)).id == s.id
        finally:
            await sms.close()
        await sms.close()  # closing twice is harmless
        with pytest.raises(StoreError):
            await sms.get_session(s.id)

    asyncio.run(use_closed())


def test_async_errors_propagate_unchanged(db_url: str) -> None:
    from statekeep import InvalidIdError, InvalidTransitionError

    async def scenario() -> None:
        async with StateManagementSystem(StateConfig(db=db_url)) as sms:
            with pytest.raises(InvalidIdError):
                await sms.create_session("bad id")
            s = await sms.create_session("alice")
            t = await sms.create_task(s.id, "x")
            with pytest.raises(InvalidTransitionError):
                await sms.complete_task(t.id)

    asyncio.run(scenario())
