"""A recovery that fails verification leaves the store exactly as it was (the
database's own rollback: the whole recovery is one transaction), and a
successful one can be undone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from recovery_history import FakeClock, state, write_history

from statekeep import Store
from statekeep.errors import RecoveryVerificationError
from statekeep.recovery.image import encode_image
from statekeep.recovery.manager import RecoveryManager


@pytest.fixture
def rm(make_store: Callable[..., Store], clock: FakeClock) -> RecoveryManager:
    return RecoveryManager(make_store(clock=clock))


def test_child_task_without_its_parent_is_refused(rm: RecoveryManager,
                                                  clock: FakeClock) -> None:
    """The child is restored alone, its parent is gone: the reference breaks."""
    st = rm.store
    sid = st.create_session("alice").id
    parent = st.create_task(sid, "plan")
    child = st.create_task(sid, "step", parent_task_id=parent.id)
    point = rm.create_recovery_point("before the cleanup")
    clock.advance(seconds=5)
    st.delete_task(parent.id)  # takes the child with it
    st.create_task(sid, "other")
    before = st.dump()  # everything: audit log, snapshots and points included
    clock.advance(seconds=5)
    with pytest.raises(RecoveryVerificationError) as caught:
        rm.recover(point.id, "selective", keys=[child.id])
    assert caught.value.problems
    assert any(parent.id in p for p in caught.value.problems)
    assert st.dump() == before
    # Restoring both is consistent.
    result = rm.recover(point.id, "selective", keys=[child.id, parent.id])
    assert result.changed["tasks"]["inserted"] == 2
    assert st.get_task(child.id).parent_task_id == parent.id
    assert rm.verify_recovery() == []


def test_crafted_image_with_a_task_cycle_is_rolled_back(rm: RecoveryManager,
                                                        clock: FakeClock) -> None:
    """Foreign keys hold, the state does not: two tasks are each other's parent."""
    st = rm.store
    sid = st.create_session("alice").id
    a = st.create_task(sid, "a")
    b = st.create_task(sid, "b", parent_task_id=a.id)
    snap = rm.snapshots.create()
    doc = rm.snapshots.load(snap.id)
    for row in doc["tables"]["tasks"]:
        if row["id"] == a.id:
            row["parent_task_id"] = b.id
    data, digest = encode_image(doc)
    with st.atomic() as conn:
        conn.execute("UPDATE state_snapshots SET state_data = ?, checksum = ?, size_bytes = ?"
                     " WHERE id = ?", (data, digest, len(data), snap.id))
    clock.advance(seconds=5)
    st.update_task(b.id, priority=1)
    before = st.dump()
    with pytest.raises(RecoveryVerificationError) as caught:
        rm.restore_snapshot(snap.id)
    assert any("cycle" in p for p in caught.value.problems)
    assert st.dump() == before


def test_crafted_image_with_a_relation_across_sessions(rm: RecoveryManager) -> None:
    st = rm.store
    s1, s2 = st.create_session("alice").id, st.create_session("bob").id
    x = st.set_context(s1, "file", "x", 1).id
    y = st.set_context(s2, "file", "y", 2).id
    z = st.set_context(s1, "file", "z", 3).id
    rel = st.relate(s1, x, z, "calls")
    snap = rm.snapshots.create()
    doc = rm.snapshots.load(snap.id)
    doc["tables"]["context_relations"][0]["target_id"] = y
    data, digest = encode_image(doc)
    with st.atomic() as conn:
        conn.execute("UPDATE state_snapshots SET state_data = ?, checksum = ?, size_bytes = ?"
                     " WHERE id = ?", (data, digest, len(data), snap.id))
    before = st.dump()
    with pytest.raises(RecoveryVerificationError) as caught:
        rm.restore_snapshot(snap.id)
    assert any(rel.id in p for p in caught.value.problems)
    assert st.dump() == before


def test_selection_that_would_cascade_outside_itself_is_refused(
        rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    st.create_session("alice")
    point = rm.create_recovery_point()
    clock.advance(seconds=5)
    newer = st.create_session("bob").id
    st.create_task(newer, "work")
    before = st.dump()
    with pytest.raises(RecoveryVerificationError) as caught:
        rm.recover(point.id, "selective", entity_types=["session"])
    assert any(newer in p and "task" in p for p in caught.value.problems)
    assert st.dump() == before


def test_rollback_of_a_successful_recovery(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    write_history(st, clock, 60, seed=3)
    point = rm.create_recovery_point()
    write_history(st, clock, 60, seed=4)
    latest = state(st)
    clock.advance(seconds=1)
    result = rm.recover(point.id)
    assert result.before_point_id is not None and result.rows_changed > 0
    clock.advance(seconds=1)
    undone = rm.rollback_recovery(result)
    assert state(st) == latest
    assert undone.rows_changed == result.rows_changed
    assert rm.verify_recovery() == []


def test_dry_run_changes_nothing(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    write_history(st, clock, 40, seed=5)
    point = rm.create_recovery_point()
    write_history(st, clock, 40, seed=6)
    before = st.dump()
    result = rm.recover(point.id, dry_run=True)
    assert result.dry_run and result.rows_changed > 0 and result.before_point_id is None
    assert st.dump() == before
