"""The health monitor on both backends: a healthy store reports nothing; damaged
snapshots, blobs and archive files are found, repaired from identical copies
with nothing committed lost, or quarantined and escalated when no copy exists;
the monitor thread does the same on its own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from services import PG_URL
from statekeep import Store
from statekeep.errors import SnapshotCorruptError
from statekeep.recovery.health import (
    AutoRecovery,
    Finding,
    HealthChecker,
    quarantined_snapshots,
)
from statekeep.recovery.snapshots import SnapshotManager

Dump = dict[str, list[tuple[Any, ...]]]


def raw_execute(store: Store, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Damage behind the store's back: foreign keys and triggers off (a raw SQLite
    connection; a PostgreSQL session in ``session_replication_role = replica``)."""
    if store.dialect == "sqlite":
        conn = sqlite3.connect(store.config.db)
        try:
            conn.execute(sql, params)
            conn.commit()
        finally:
            conn.close()
        return
    schema = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as pg:
        pg.execute("SET session_replication_role = replica")
        pg.execute(sql.replace("?", "%s"), params)


def kinds(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.kind, f.object) for f in findings}


def test_a_healthy_store_has_no_findings(stocked: Any) -> None:
    report = HealthChecker(stocked.store).run()
    assert report.findings == [] and report.ok
    assert report.scanned == {"snapshots": 1, "blobs": 1, "archives": 1}
    assert report.to_dict()["remaining"] == 0


def test_a_flipped_snapshot_is_restored_from_a_backup(
        stocked: Any, without_repairs: Callable[..., Dump]) -> None:
    st = stocked.store
    stocked.backups.backup_now()
    before = st.dump()
    raw_execute(st, "UPDATE state_snapshots SET state_data = ? WHERE id = ?",
                (b"\x28\xb5\x2f\xfd" + b"\x00" * 64, stocked.snapshot))
    monitor = AutoRecovery(st, backups=stocked.backups)
    found = monitor.check()
    assert ("snapshot", stocked.snapshot) in kinds(found.findings)
    assert all(f.repairable for f in found.findings if f.kind == "snapshot")
    report = monitor.handle_corruption(found)
    assert report.ok, report.to_dict()
    fixed = next(f for f in report.findings if f.kind == "snapshot")
    assert fixed.repaired and "backup" in fixed.action
    assert without_repairs(st.dump()) == before
    SnapshotManager(st).verify(stocked.snapshot)
    assert st.audit(entity_type="store")[-1].change_metadata["object"] == "snapshot"


def test_a_damaged_snapshot_without_a_copy_is_quarantined_and_escalated(stocked: Any) -> None:
    st = stocked.store
    raw_execute(st, "UPDATE state_snapshots SET checksum = ? WHERE id = ?",
                ("0" * 64, stocked.snapshot))
    escalated: list[Finding] = []
    monitor = AutoRecovery(st, backups=stocked.backups, on_escalate=escalated.append)
    report = monitor.check_and_repair()
    assert not report.ok
    left = report.remaining
    assert [(f.kind, f.object) for f in left] == [("snapshot", stocked.snapshot)]
    assert "quarantined" in left[0].action and not left[0].repairable
    assert escalated == left
    assert set(quarantined_snapshots(st)) == {stocked.snapshot}
    with pytest.raises(SnapshotCorruptError):  # never served
        SnapshotManager(st).load(stocked.snapshot)
    # The next round still reports it: quarantine is not a repair.
    again = monitor.check()
    assert "quarantined" in next(f for f in again.findings if f.kind == "snapshot").action


def test_a_deleted_blob_is_restored_from_a_backup(
        stocked: Any, without_repairs: Callable[..., Dump]) -> None:
    st = stocked.store
    stocked.backups.backup_now()
    before = st.dump()
    raw_execute(st, "DELETE FROM content_blobs WHERE hash = ?", (stocked.blob,))
    monitor = AutoRecovery(st, backups=stocked.backups)
    found = monitor.check()
    assert ("blob", stocked.blob) in kinds(found.findings)
    assert any(f.kind == "foreign_key" for f in found.findings)
    assert any(f.kind == "consistency" for f in found.findings)
    report = monitor.handle_corruption(found)
    assert report.ok, report.to_dict()
    assert all(f.repaired for f in report.findings)
    assert without_repairs(st.dump()) == before
    assert st.item_content(stocked.item) is not None


def test_a_damaged_blob_is_restored_from_a_snapshot_image(
        stocked: Any, without_repairs: Callable[..., Dump]) -> None:
    """No backup at all: the whole-store snapshot carries the blob."""
    st = stocked.store
    before = st.dump()
    raw_execute(st, "UPDATE content_blobs SET data = ? WHERE hash = ?",
                (b"\x02garbage", stocked.blob))
    report = AutoRecovery(st, backups=stocked.backups).check_and_repair()
    assert report.ok, report.to_dict()
    blob = next(f for f in report.findings if f.kind == "blob")
    assert blob.repaired and f"snapshot {stocked.snapshot}" in blob.action
    assert without_repairs(st.dump()) == before


def test_a_blob_in_no_backup_and_no_snapshot_is_escalated(stocked: Any) -> None:
    st = stocked.store
    SnapshotManager(st).delete(stocked.snapshot)
    raw_execute(st, "DELETE FROM content_blobs WHERE hash = ?", (stocked.blob,))
    report = AutoRecovery(st, backups=stocked.backups).check_and_repair()
    assert ("blob", stocked.blob) in kinds(report.remaining)


def test_a_recovery_manager_can_supply_a_blob(stocked: Any) -> None:
    """Without a backup or snapshot holding it, the optional collaborator is asked."""
    st = stocked.store
    content = st.get_blob(stocked.blob)
    SnapshotManager(st).delete(stocked.snapshot)
    raw_execute(st, "DELETE FROM content_blobs WHERE hash = ?", (stocked.blob,))

    class Source:
        def find_blob(self, digest: str) -> bytes | None:
            return content if digest == stocked.blob else b"wrong"

    report = AutoRecovery(st, backups=stocked.backups, recovery=Source()).check_and_repair()
    assert report.ok, report.to_dict()
    assert "recovery manager" in next(f for f in report.findings if f.kind == "blob").action
    assert st.get_blob(stocked.blob) == content


def test_a_damaged_archive_file_is_restored_from_a_backup(
        stocked: Any, flip: Callable[..., None], without_repairs: Callable[..., Dump]) -> None:
    st = stocked.store
    stocked.backups.backup_now()
    entry = stocked.tier.list()[0]
    good = entry.path.read_bytes()
    flip(entry.path, len(good) // 2)
    monitor = AutoRecovery(st, backups=stocked.backups)
    report = monitor.check_and_repair()
    assert report.ok, report.to_dict()
    assert [f.key for f in report.findings] == [("archive", entry.path.name)]
    assert entry.path.read_bytes() == good
    entry.path.unlink()  # a missing file is put back the same way
    assert monitor.check_and_repair().ok
    assert entry.path.read_bytes() == good


def test_inconsistency_is_reported_not_repaired(stocked: Any) -> None:
    st = stocked.store
    tasks = [r[0] for r in st.dump()["tasks"]]
    raw_execute(st, "UPDATE tasks SET parent_task_id = ? WHERE id = ?", (tasks[-1], tasks[0]))
    raw_execute(st, "UPDATE tasks SET parent_task_id = ? WHERE id = ?", (tasks[0], tasks[-1]))
    report = AutoRecovery(st, backups=stocked.backups).check_and_repair()
    assert report.remaining and all(f.kind == "consistency" for f in report.remaining)


def test_the_monitor_thread_repairs_on_its_own(stocked: Any) -> None:
    st = stocked.store
    stocked.backups.backup_now()
    monitor = AutoRecovery(st, backups=stocked.backups, interval=0.05)
    monitor.start()
    try:
        raw_execute(st, "DELETE FROM content_blobs WHERE hash = ?", (stocked.blob,))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = monitor.last_report
            if report is not None and any(f.kind == "blob" and f.repaired
                                          for f in report.findings):
                break
            time.sleep(0.05)
    finally:
        monitor.stop()
    assert st.item_content(stocked.item) is not None
    assert HealthChecker(st).run().ok
    assert AutoRecovery(st, interval=0).start() is None  # interval 0: not started


def test_a_damaged_checksum_column_is_restored_with_the_row(
        stocked: Any, without_repairs: Callable[..., Dump]) -> None:
    """Snapshots never change once written: the backed-up row with the id is the
    committed one even when the live checksum is what was damaged."""
    st = stocked.store
    stocked.backups.backup_now()
    before = st.dump()
    raw_execute(st, "UPDATE state_snapshots SET checksum = ? WHERE id = ?",
                ("f" * 64, stocked.snapshot))
    report = AutoRecovery(st, backups=stocked.backups).check_and_repair()
    assert report.ok, report.to_dict()
    assert without_repairs(st.dump()) == before
    assert quarantined_snapshots(st) == {}


def test_an_invalid_postgres_index_is_rebuilt(stocked: Any) -> None:
    st = stocked.store
    if st.dialect != "postgresql":
        pytest.skip("PostgreSQL marks interrupted index builds invalid; SQLite has no such state")
    schema = st.schema  # type: ignore[attr-defined]
    with psycopg.connect(PG_URL, autocommit=True) as pg:
        pg.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
                   (f"{schema}.idx_sessions_status",))
    report = AutoRecovery(st, backups=stocked.backups).check_and_repair()
    fixed = [f for f in report.findings if f.kind == "integrity"]
    assert fixed and all(f.repaired for f in fixed) and "REINDEX" in fixed[0].action
    assert report.ok and st.integrity_problems() == []
