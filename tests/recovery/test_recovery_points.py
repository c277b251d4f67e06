"""Recovery points: cheap to create, and every strategy brings back exactly the
state they mark; bad input is refused with nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from recovery_history import FakeClock, state, write_history

from statekeep import Store
from statekeep.errors import (
    InvalidIdError,
    NotFoundError,
    RecoveryError,
    StatekeepError,
    ValidationError,
)
from statekeep.recovery.manager import RecoveryManager


@pytest.fixture
def rm(make_store: Callable[..., Store], clock: FakeClock) -> RecoveryManager:
    return RecoveryManager(make_store(clock=clock))


def test_point_records_the_seed_metadata(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    sid = st.create_session("alice").id
    st.create_task(sid, "a")
    st.start_task(st.create_task(sid, "b").id)
    point = rm.create_recovery_point()
    assert point.name == f"auto_{clock.now.isoformat()}"
    meta = point.recovery_metadata
    assert meta["active_tasks"] == 2 and meta["session_count"] == 1
    assert meta["state_size"] > 0 and meta["audit_id"] > 0
    assert rm.get_recovery_point(point.id) == point
    clock.advance(seconds=1)
    scoped = rm.create_recovery_point("mine", session_id=sid, description="task boundary")
    assert scoped.recovery_metadata["session_id"] == sid
    assert [p.id for p in rm.list_recovery_points()] == [scoped.id, point.id]
    assert [p.id for p in rm.list_recovery_points(session_id=sid)] == [scoped.id]


def test_points_are_cheap_and_rebase_in_proportion_to_change(
        make_store: Callable[..., Store], clock: FakeClock) -> None:
    rm = RecoveryManager(make_store(clock=clock), rebase_events=50)
    st = rm.store
    sid = st.create_session("alice").id
    first = rm.create_recovery_point()
    assert first.state_snapshot_id is not None  # the first point has its base image
    for i in range(10):  # a few writes between points: no new image
        st.set_context(sid, "note", f"k{i}", i)
        rm.create_recovery_point()
    assert len(rm.snapshots.list()) == 1
    for i in range(60):
        st.set_context(sid, "note", f"j{i}", i)
    rebased = rm.create_recovery_point()
    assert rebased.state_snapshot_id != first.state_snapshot_id
    assert len(rm.snapshots.list()) == 2


@pytest.mark.parametrize("strategy", ["full", "incremental"])
def test_full_and_incremental_bring_back_the_point(rm: RecoveryManager, clock: FakeClock,
                                                   strategy: str) -> None:
    st = rm.store
    write_history(st, clock, 80, seed=12)
    point = rm.create_recovery_point("checkpoint")
    at_point = state(st)
    write_history(st, clock, 80, seed=13)
    clock.advance(seconds=1)
    result = rm.recover(point.id, strategy)
    assert state(st) == at_point
    assert result.point_id == point.id and result.rows_changed > 0
    assert rm.verify_recovery() == []
    # A second time there is nothing left to do.
    assert rm.recover(point.id, strategy, dry_run=True).changed == {}


def test_incremental_reads_only_what_changed(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    write_history(st, clock, 80, seed=21)
    point = rm.create_recovery_point()
    sid = st.create_session("carol").id
    st.set_context(sid, "note", "new", 1)
    result = rm.recover(point.id, "incremental")
    assert result.changed == {"sessions": {"inserted": 0, "updated": 0, "deleted": 1},
                              "context": {"inserted": 0, "updated": 0, "deleted": 1}}


def test_session_point_recovers_that_session_only(rm: RecoveryManager,
                                                  clock: FakeClock) -> None:
    st = rm.store
    mine, other = st.create_session("alice").id, st.create_session("bob").id
    st.set_context(mine, "note", "a", 1)
    point = rm.create_recovery_point(session_id=mine)
    st.set_context(mine, "note", "a", 2)
    st.set_context(mine, "note", "b", 3)
    st.set_context(other, "note", "z", 9)
    rm.recover(point.id)
    assert [(i.context_key, i.context_value) for i in st.list_context(mine, order="key")] \
        == [("a", 1)]
    assert st.get_context(other, "note", "z") is not None


def test_selective_by_entity_type_and_key(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    sid = st.create_session("alice").id
    st.set_context(sid, "note", "keep", "old")
    st.set_context(sid, "note", "other", "old")
    st.set_preference("alice", "style", "tabs", True)
    point = rm.create_recovery_point()
    st.set_context(sid, "note", "keep", "new")
    st.set_context(sid, "note", "other", "new")
    st.set_preference("alice", "style", "tabs", False)
    rm.recover(point.id, "selective", keys=["keep"])
    assert st.get_context(sid, "note", "keep").context_value == "old"  # type: ignore[union-attr]
    assert st.get_context(sid, "note", "other").context_value == "new"  # type: ignore[union-attr]
    assert st.get_preference("alice", "style", "tabs").preference_value is False  # type: ignore[union-attr]
    rm.recover(point.id, "selective", entity_types=["preference"])
    assert st.get_preference("alice", "style", "tabs").preference_value is True  # type: ignore[union-attr]
    assert st.get_context(sid, "note", "other").context_value == "new"  # type: ignore[union-attr]


@pytest.mark.parametrize("case", [
    "unknown strategy", "unknown point", "malformed point id", "selective without choice",
    "full with a choice", "unknown entity type", "sessions as a string",
    "naive datetime", "future", "before history", "session point, other session"])
def test_bad_input_changes_nothing(rm: RecoveryManager, clock: FakeClock, case: str) -> None:
    st = rm.store
    start = clock.now
    clock.advance(seconds=10)
    sid = st.create_session("alice").id
    point = rm.create_recovery_point(session_id=sid)
    store_point = rm.create_recovery_point()
    st.set_context(sid, "note", "x", 1)
    before = st.dump()
    calls: dict[str, tuple[type[StatekeepError], Callable[[], object]]] = {
        "unknown strategy": (ValidationError, lambda: rm.recover(store_point.id, "partial")),
        "unknown point": (NotFoundError, lambda: rm.recover("rp_missing")),
        "malformed point id": (InvalidIdError, lambda: rm.recover("no spaces allowed")),
        "selective without choice": (ValidationError,
                                     lambda: rm.recover(store_point.id, "selective")),
        "full with a choice": (ValidationError,
                               lambda: rm.recover(store_point.id, sessions=[sid])),
        "unknown entity type": (ValidationError, lambda: rm.recover(
            store_point.id, "selective", entity_types=["gizmo"])),
        "sessions as a string": (ValidationError, lambda: rm.recover(
            store_point.id, "selective", sessions=sid)),  # type: ignore[arg-type]
        "naive datetime": (ValidationError,
                           lambda: rm.recover_to_time(datetime(2030, 1, 1))),
        "future": (ValidationError,
                   lambda: rm.recover_to_time(clock.now + timedelta(days=1))),
        "before history": (RecoveryError, lambda: rm.recover_to_time(start)),
        "session point, other session": (ValidationError, lambda: rm.recover(
            point.id, "selective", sessions=["ses_other"])),
    }
    error, call = calls[case]
    with pytest.raises(error):
        call()
    assert st.dump() == before


def test_memory_values_are_recovered_from_the_log(
        rm: RecoveryManager, clock: FakeClock) -> None:
    """The memory tier's audit rows carry the value, so a recovery puts back the
    value each key had at the point -- written before or after the base image."""
    from statekeep.memory.hierarchy import HierarchicalMemory

    st = rm.store
    memory = HierarchicalMemory(st)
    memory.store("kept", {"v": 1})
    memory.store("imaged", {"v": 1})
    sid = st.create_session("alice").id
    rm.create_recovery_point()  # the base image
    memory.store("kept", {"v": 2})  # known only from the audit log
    point = rm.create_recovery_point()
    memory.store("kept", {"v": 3})
    memory.store("imaged", {"v": 3})
    memory.store("new", {"v": 3})
    st.set_context(sid, "note", "later", 1)
    result = rm.recover(point.id)
    assert result.warnings == [] or not any("memory" in w for w in result.warnings)
    memory.close()
    fresh = HierarchicalMemory(st)  # nothing cached in process: read the store
    assert fresh.retrieve("kept") == {"v": 2}
    assert fresh.retrieve("imaged") == {"v": 1}
    assert fresh.retrieve("new") is None
    assert st.get_context(sid, "note", "later") is None
    assert rm.verify_recovery() == []
