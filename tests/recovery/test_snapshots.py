"""Snapshots: images of the store or of one session, verified before use,
exported to and imported from files, expired by retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from recovery_history import FakeClock, state, write_history

from statekeep import StateConfig, Store, open_store
from statekeep.errors import NotFoundError, SnapshotCorruptError
from statekeep.models import SnapshotType
from statekeep.recovery.manager import RecoveryManager
from statekeep.recovery.replay import MODEL_TABLES
from statekeep.recovery.snapshots import SnapshotManager
from statekeep.store import rows


@pytest.fixture
def rm(make_store: Callable[..., Store], clock: FakeClock) -> RecoveryManager:
    return RecoveryManager(make_store(clock=clock))


def test_whole_store_snapshot_round_trips(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    write_history(st, clock, 60, seed=1)
    at_snapshot = state(st)
    snap = rm.snapshots.create(snapshot_type="backup")
    assert snap.session_id is None and snap.snapshot_type is SnapshotType.BACKUP
    assert snap.compression_type == "zstd" and snap.size_bytes > 0
    assert snap.audit_id is not None and snap.audit_id > 0
    assert rm.snapshots.get(snap.id) == snap
    doc = rm.snapshots.load(snap.id)
    assert doc["kind"] == "store" and doc["audit_id"] == snap.audit_id
    write_history(st, clock, 60, seed=2)
    rm.restore_snapshot(snap.id)
    assert state(st) == at_snapshot


def test_session_snapshot_covers_one_session(rm: RecoveryManager) -> None:
    st = rm.store
    mine, other = st.create_session("alice").id, st.create_session("bob").id
    task = st.create_task(mine, "plan")
    st.set_context(mine, "note", "a", {"x": 1})
    st.record_decision("pick", "a", session_id=mine, task_id=task.id)
    st.set_context(other, "note", "b", 2)
    snap = rm.snapshots.create(mine)
    assert snap.session_id == mine
    doc = rm.snapshots.load(snap.id)
    assert [r["id"] for r in doc["tables"]["sessions"]] == [mine]
    assert len(doc["tables"]["tasks"]) == 1 and len(doc["tables"]["decisions"]) == 1
    assert {r["session_id"] for r in doc["tables"]["context"]} == {mine}
    assert [s.id for s in rm.snapshots.list(session_id=mine)] == [snap.id]
    assert rm.snapshots.list(whole_store=True) == []
    with pytest.raises(NotFoundError):
        rm.snapshots.create("ses_missing")


def test_corruption_is_detected_before_use(rm: RecoveryManager) -> None:
    st = rm.store
    sid = st.create_session("alice").id
    st.set_context(sid, "note", "a", 1)
    snap = rm.snapshots.create()
    with st.atomic() as conn:
        data = bytearray(conn.execute("SELECT state_data FROM state_snapshots WHERE id = ?",
                                      (snap.id,)).fetchone()[0])
        data[len(data) // 2] ^= 0xFF
        conn.execute("UPDATE state_snapshots SET state_data = ? WHERE id = ?",
                     (bytes(data), snap.id))
    before = st.dump()
    with pytest.raises(SnapshotCorruptError):
        rm.snapshots.verify(snap.id)
    with pytest.raises(SnapshotCorruptError):
        rm.restore_snapshot(snap.id)
    assert rm.snapshots.verify_all() and st.dump() == before
    with pytest.raises(SnapshotCorruptError):
        rm.snapshots.export(snap.id, st.config.db + ".sksnap" if st.dialect == "sqlite"
                            else "/tmp/never-written.sksnap")


def test_export_import_into_another_store(rm: RecoveryManager, clock: FakeClock,
                                          tmp_path: Path) -> None:
    st = rm.store
    write_history(st, clock, 50, seed=8)
    expected = portable(st)
    snap = rm.snapshots.create()
    path = rm.snapshots.export(snap.id, tmp_path)
    assert path.name == f"{snap.id}.sksnap" and path.stat().st_size > 0
    # Same store: importing what it already has returns it.
    assert rm.snapshots.import_file(path) == snap
    # Another (SQLite) store: the rows come, the audit position does not.
    with open_store(StateConfig(db=str(tmp_path / "other.db")), clock=clock) as other:
        orm = RecoveryManager(other)
        imported = orm.snapshots.import_file(path)
        assert imported.audit_id is None and imported.checksum == snap.checksum
        orm.restore_snapshot(imported.id)
        assert portable(other) == expected
        assert orm.verify_recovery() == []


def portable(store: Store) -> dict[str, list[dict[str, object]]]:
    """Every recovered row in the portable form, which is the same on both dialects."""
    with store.reading() as conn:
        return {t.name: rows.select_rows(store, conn, t) for t in MODEL_TABLES}


@pytest.mark.parametrize("damage", ["truncated", "bad magic", "flipped byte", "missing"])
def test_damaged_file_is_refused(rm: RecoveryManager, tmp_path: Path, damage: str) -> None:
    st = rm.store
    st.create_session("alice")
    path = rm.snapshots.export(rm.snapshots.create().id, tmp_path / "s.sksnap")
    blob = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "bad magic":
        path.write_bytes(b"SKARC\x00" + bytes(blob[6:]))
    elif damage == "flipped byte":
        blob[-3] ^= 0x55
        path.write_bytes(bytes(blob))
    else:
        path.unlink()
    before = st.dump()
    with pytest.raises(SnapshotCorruptError):
        rm.snapshots.import_file(path)
    assert st.dump() == before


def test_retention_keeps_what_points_hold(rm: RecoveryManager, clock: FakeClock) -> None:
    st = rm.store
    st.create_session("alice")
    held = rm.create_recovery_point()  # its base image
    loose = rm.snapshots.create()
    clock.advance(days=st.config.snapshot_retention_days + 1)
    fresh = rm.snapshots.create()
    assert rm.snapshots.purge_expired() == 1
    left = {s.id for s in rm.snapshots.list()}
    assert left == {held.state_snapshot_id, fresh.id} and loose.id not in left
    rm.snapshots.delete(fresh.id)
    with pytest.raises(NotFoundError):
        rm.snapshots.delete(fresh.id)
    assert SnapshotManager(st).list(snapshot_type="recovery")[0].id == held.state_snapshot_id
    assert clock.now - timedelta(days=1) > held.created_at
