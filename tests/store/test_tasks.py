"""Tasks on every backend: CRUD, the state machine with its stamps, trees, cascades."""

from __future__ import annotations

from datetime import timedelta

import pytest

from statekeep import (
    InvalidTransitionError,
    NotFoundError,
    Store,
    TaskCycleError,
    TaskStatus,
    ValidationError,
)

# The task state machine, written out independently of models.py so that an
# accidental change to either shows up here.
LEGAL_TASK_MOVES = {
    ("pending", "in_progress"), ("pending", "cancelled"), ("pending", "failed"),
    ("in_progress", "completed"), ("in_progress", "failed"), ("in_progress", "cancelled"),
    ("failed", "pending"),
}
ALL_TASK_STATUSES = [s.value for s in TaskStatus]


def _task_in(store: Store, session_id: str, status: str):
    """A new task driven into ``status`` along legal moves."""
    t = store.create_task(session_id, "work")
    if status == "pending":
        return t
    if status == "cancelled":
        return store.cancel_task(t.id)
    if status == "failed":
        return store.fail_task(t.id, {"why": "setup"})
    t = store.start_task(t.id)
    if status == "completed":
        return store.complete_task(t.id, {"ok": True})
    return t


def test_create_and_get(store: Store) -> None:
    s = store.create_session("alice")
    t = store.create_task(s.id, "refactor", description="split parser",
                          parameters={"files": ["p.py"]}, priority=9)
    assert t.id.startswith("tsk_")
    assert (t.session_id, t.type, t.status, t.priority) == (s.id, "refactor",
                                                            TaskStatus.PENDING, 9)
    assert t.description == "split parser"
    assert t.parameters == {"files": ["p.py"]}
    assert t.result is None and t.error_details is None
    assert t.started_at is None and t.completed_at is None and t.duration_ms is None
    assert t.retry_count == 0
    assert t.parent_task_id is None
    assert store.get_task(t.id) == t


def test_default_priority_and_chosen_id(store: Store) -> None:
    s = store.create_session("alice")
    t = store.create_task(s.id, "x", task_id="job-42")
    assert t.id == "job-42" and t.priority == 5


def test_create_in_missing_session(store: Store) -> None:
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.create_task("ghost", "x")
    assert store.dump() == before


def test_get_missing_task(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_task("ghost")


def test_list_tasks_order_and_filters(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    other = store.create_session("bob")
    low = store.create_task(s.id, "lint", priority=1)
    clock.advance(seconds=1)
    high_old = store.create_task(s.id, "build", priority=8)
    clock.advance(seconds=1)
    high_new = store.create_task(s.id, "lint", priority=8)
    store.create_task(other.id, "lint", priority=99)
    store.start_task(high_new.id)
    assert [t.id for t in store.list_tasks(s.id)] == [high_old.id, high_new.id, low.id]
    assert [t.id for t in store.list_tasks(s.id, type="lint")] == [high_new.id, low.id]
    assert [t.id for t in store.list_tasks(s.id, status="in_progress")] == [high_new.id]
    assert [t.id for t in store.list_tasks(s.id, status=TaskStatus.PENDING, type="lint")] \
        == [low.id]
    assert store.list_tasks(s.id, status="completed") == []


def test_update_task_fields_and_updated_at(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "x", description="d", parameters={"a": 1})
    clock.advance(seconds=3)
    u = store.update_task(t.id, description=None, priority=-7, parameters=[1, 2])
    assert (u.description, u.priority, u.parameters) == (None, -7, [1, 2])
    assert u.updated_at == clock.now and u.created_at == t.created_at
    assert store.get_task(t.id) == u
    # Nothing to change: nothing written, not even an audit row.
    before = store.dump()
    assert store.update_task(t.id) == u
    assert store.dump() == before


# --- the state machine -------------------------------------------------------


@pytest.mark.parametrize("old", ALL_TASK_STATUSES)
@pytest.mark.parametrize("new", ALL_TASK_STATUSES)
def test_every_transition_pair(store: Store, old: str, new: str) -> None:
    s = store.create_session("alice")
    t = _task_in(store, s.id, old)
    assert t.status.value == old
    if (old, new) in LEGAL_TASK_MOVES:
        out = store.transition_task(t.id, new)
        assert out.status.value == new
        assert store.get_task(t.id).status.value == new
    else:
        before = store.dump()
        with pytest.raises(InvalidTransitionError):
            store.transition_task(t.id, new)
        assert store.dump() == before


def test_timestamps_and_duration(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "build")
    created = clock.now
    start = clock.advance(seconds=10)
    running = store.start_task(t.id)
    assert running.started_at == start
    assert running.completed_at is None and running.duration_ms is None
    assert running.updated_at == start and running.created_at == created
    end = clock.advance(seconds=2, milliseconds=345)
    done = store.complete_task(t.id, {"artifacts": 3})
    assert done.status is TaskStatus.COMPLETED
    assert done.started_at == start
    assert done.completed_at == end
    assert done.duration_ms == 2345
    assert done.result == {"artifacts": 3}
    assert store.get_task(t.id) == done


def test_fail_from_pending_has_no_duration(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "build")
    clock.advance(seconds=4)
    f = store.fail_task(t.id, {"error": "no disk"})
    assert f.status is TaskStatus.FAILED
    assert f.completed_at == clock.now
    assert f.started_at is None and f.duration_ms is None
    assert f.error_details == {"error": "no disk"}


def test_retry_counts_and_resets(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "flaky")
    for attempt in range(1, 4):
        store.start_task(t.id)
        clock.advance(seconds=1)
        failed = store.fail_task(t.id, {"attempt": attempt})
        assert failed.duration_ms == 1000
        clock.advance(seconds=1)
        retried = store.retry_task(t.id)
        assert retried.status is TaskStatus.PENDING
        assert retried.retry_count == attempt
        assert retried.started_at is None
        assert retried.completed_at is None
        assert retried.duration_ms is None
        assert retried.error_details == {"attempt": attempt}  # the last error is kept
    store.start_task(t.id)
    done = store.complete_task(t.id, "ok")
    assert done.retry_count == 3 and done.result == "ok"


def test_retry_only_from_failed(store: Store) -> None:
    s = store.create_session("alice")
    t = store.create_task(s.id, "x")
    with pytest.raises(InvalidTransitionError):
        store.retry_task(t.id)
    assert store.get_task(t.id).retry_count == 0


def test_transition_missing_task(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.start_task("ghost")


# --- trees -------------------------------------------------------------------


def test_parent_must_be_in_same_session(store: Store) -> None:
    s1 = store.create_session("alice")
    s2 = store.create_session("alice")
    p = store.create_task(s1.id, "parent")
    before = store.dump()
    with pytest.raises(ValidationError) as info:
        store.create_task(s2.id, "child", parent_task_id=p.id)
    assert info.value.field == "parent_task_id"
    assert store.dump() == before
    t2 = store.create_task(s2.id, "other")
    before = store.dump()
    with pytest.raises(ValidationError):
        store.update_task(t2.id, parent_task_id=p.id)
    assert store.dump() == before


def test_missing_parent(store: Store) -> None:
    s = store.create_session("alice")
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.create_task(s.id, "child", parent_task_id="ghost")
    assert store.dump() == before


def test_reparent_and_cycles(store: Store) -> None:
    s = store.create_session("alice")
    a = store.create_task(s.id, "a")
    b = store.create_task(s.id, "b", parent_task_id=a.id)
    c = store.create_task(s.id, "c", parent_task_id=b.id)
    d = store.create_task(s.id, "d")
    before = store.dump()
    for child, parent in [(a, a), (a, b), (a, c), (b, c)]:
        with pytest.raises(TaskCycleError):
            store.update_task(child.id, parent_task_id=parent.id)
        assert store.dump() == before
    # Legal moves: under an unrelated task, and back to the root.
    moved = store.update_task(c.id, parent_task_id=d.id)
    assert moved.parent_task_id == d.id
    # c is now below d, so d under c would close a loop.
    with pytest.raises(TaskCycleError):
        store.update_task(d.id, parent_task_id=c.id)
    rooted = store.update_task(b.id, parent_task_id=None)
    assert rooted.parent_task_id is None
    # a may now go under b (b is no longer a's child).
    assert store.update_task(a.id, parent_task_id=b.id).parent_task_id == b.id


def test_task_tree(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    root = store.create_task(s.id, "root", priority=1)
    clock.advance(seconds=1)
    kid_low = store.create_task(s.id, "kid", parent_task_id=root.id, priority=1)
    clock.advance(seconds=1)
    kid_high = store.create_task(s.id, "kid", parent_task_id=root.id, priority=9)
    grandkid = store.create_task(s.id, "gk", parent_task_id=kid_low.id)
    other_root = store.create_task(s.id, "solo", priority=3)
    forest = store.task_tree(s.id)
    assert [t.task.id for t in forest] == [other_root.id, root.id]
    tree = forest[1]
    assert [c.task.id for c in tree.children] == [kid_high.id, kid_low.id]
    assert [t.id for t in tree.walk()] == [root.id, kid_high.id, kid_low.id, grandkid.id]
    sub = store.task_tree(s.id, root_task_id=kid_low.id)
    assert len(sub) == 1 and [t.id for t in sub[0].walk()] == [kid_low.id, grandkid.id]
    other = store.create_session("bob")
    with pytest.raises(NotFoundError):
        store.task_tree(other.id, root_task_id=root.id)
    with pytest.raises(NotFoundError):
        store.task_tree("ghost")
    assert store.task_tree(other.id) == []


def test_cancel_cascades_to_unfinished_subtasks_only(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    root = store.create_task(s.id, "root")
    store.start_task(root.id)
    pending = store.create_task(s.id, "p", parent_task_id=root.id)
    running = store.create_task(s.id, "r", parent_task_id=root.id)
    store.start_task(running.id)
    done = store.create_task(s.id, "d", parent_task_id=root.id)
    store.start_task(done.id)
    done = store.complete_task(done.id, 1)
    failed = store.fail_task(store.create_task(s.id, "f", parent_task_id=root.id).id, "x")
    cancelled = store.cancel_task(store.create_task(s.id, "c", parent_task_id=root.id).id)
    deep = store.create_task(s.id, "deep", parent_task_id=pending.id)
    deep_done_parent = store.create_task(s.id, "ddp", parent_task_id=done.id)
    sibling = store.create_task(s.id, "sibling")  # not under root
    clock.advance(seconds=30)

    out = store.cancel_task(root.id)
    assert out.status is TaskStatus.CANCELLED
    assert out.duration_ms == 30_000
    for t in (pending, running, deep, deep_done_parent):
        got = store.get_task(t.id)
        assert got.status is TaskStatus.CANCELLED, t.type
        assert got.completed_at == clock.now
    assert store.get_task(running.id).duration_ms == 30_000
    # Finished subtasks are untouched, down to the last field.
    assert store.get_task(done.id) == done
    assert store.get_task(failed.id) == failed
    assert store.get_task(cancelled.id) == cancelled
    assert store.get_task(sibling.id).status is TaskStatus.PENDING
    # One audit row per task that changed, the cascaded ones marked as such.
    rows = [e for e in store.audit(session_id=s.id, limit=1000)
            if e.event_type == "transition" and e.timestamp == clock.now]
    assert sorted(e.entity_id for e in rows) == sorted(
        [root.id, pending.id, running.id, deep.id, deep_done_parent.id])
    for e in rows:
        expected = None if e.entity_id == root.id else {"cascade_from": root.id}
        assert e.change_metadata == expected


def test_delete_task_removes_subtree(store: Store) -> None:
    s = store.create_session("alice")
    a = store.create_task(s.id, "a")
    b = store.create_task(s.id, "b", parent_task_id=a.id)
    c = store.create_task(s.id, "c", parent_task_id=b.id)
    c2 = store.create_task(s.id, "c2", parent_task_id=b.id)
    keep = store.create_task(s.id, "keep")
    keep_child = store.create_task(s.id, "keep_child", parent_task_id=keep.id)
    d = store.record_decision("plan", "do b", session_id=s.id, task_id=b.id)
    assert store.delete_task(b.id) == 3
    for t in (b, c, c2):
        with pytest.raises(NotFoundError):
            store.get_task(t.id)
    assert {t.id for t in store.list_tasks(s.id)} == {a.id, keep.id, keep_child.id}
    assert store.get_decision(d.id).task_id is None
    assert store.get_decision(d.id).session_id == s.id
    deletes = [e for e in store.audit(session_id=s.id, limit=1000) if e.event_type == "delete"]
    assert sorted(e.entity_id for e in deletes) == sorted([b.id, c.id, c2.id])
    for e in deletes:
        assert e.entity_type == "task" and e.new_value is None
        assert e.old_value["id"] == e.entity_id
        assert e.change_metadata == (None if e.entity_id == b.id else {"cascade_from": b.id})
    assert store.integrity_problems() == []


def test_delete_missing_task(store: Store) -> None:
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.delete_task("ghost")
    assert store.dump() == before


def test_long_chain_cycle_check_and_delete(store: Store) -> None:
    s = store.create_session("alice")
    chain = [store.create_task(s.id, "n")]
    for _ in range(60):
        chain.append(store.create_task(s.id, "n", parent_task_id=chain[-1].id))
    with pytest.raises(TaskCycleError):
        store.update_task(chain[0].id, parent_task_id=chain[-1].id)
    assert store.delete_task(chain[0].id) == 61
    assert store.list_tasks(s.id) == []


@pytest.mark.parametrize("days", [2, 30])
def test_long_running_task_duration(make_store, clock, days: int) -> None:
    # Sessions span days or weeks; a month-long task overflows a 32-bit millisecond count.
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "x")
    store.start_task(t.id)
    clock.advance(days=days)
    done = store.complete_task(t.id)
    assert done.duration_ms == int(timedelta(days=days).total_seconds() * 1000)
    assert store.get_task(t.id) == done
