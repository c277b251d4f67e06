"""Backups on both backends: taken while a child process keeps writing, verified,
restored to exactly the state at their audit high-water mark; damaged backups
refused with the store unchanged; the keep-last-N policy and the schedule."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from statekeep import StateConfig, Store, open_store
from statekeep.errors import NotFoundError, RecoveryError, SnapshotCorruptError
from statekeep.recovery.backup import MANIFEST, BackupManager
from statekeep.recovery.snapshots import SnapshotManager, default_backup_dir

WRITER = Path(__file__).parents[1] / "reliability" / "damage_writer.py"
Dump = dict[str, list[tuple[Any, ...]]]


def test_backup_restores_every_kind_of_state(stocked: Any, without_repairs: Callable[..., Dump],
                                             clock: Any) -> None:
    st, mgr = stocked.store, stocked.backups
    before = st.dump()
    archived = {e.path.name: e.path.read_bytes() for e in stocked.tier.list()}
    backup = mgr.backup_now()
    assert backup.kind == "manual" and backup.verified and backup.backend == st.dialect
    assert backup.audit_high_water == max(r[0] for r in before["audit_log"])
    assert [f.path.rsplit("/", 1)[-1] for f in backup.files if f.role == "archive"] == \
        sorted(archived)

    # Everything changes after the backup: new rows, edits, deletions, the
    # archived session comes back (its file is deleted), a snapshot goes.
    clock.advance(minutes=5)
    st.create_session("carol")
    st.set_context(stocked.active, "file", "main.py", {"lines": 1})
    stocked.tier.restore(stocked.archived)
    SnapshotManager(st).delete(stocked.snapshot)
    assert not any(p.exists() for p in (e for e in
                                        (stocked.tier.directory / n for n in archived)))
    top = max(r[0] for r in st.dump()["audit_log"])

    result = mgr.restore(backup.id)
    assert result.safety_backup_id is not None
    assert sorted(result.archives_restored) == sorted(archived)
    assert without_repairs(st.dump()) == before
    for name, data in archived.items():
        assert (stocked.tier.directory / name).read_bytes() == data
    assert stocked.tier.verify() == []
    # The archived session reads back from its restored file.
    assert stocked.tier.restore(stocked.archived).id == stocked.archived
    # Audit ids never go backwards: readers of the log remember positions in it.
    assert st.audit(after_id=backup.audit_high_water)[0].id > top
    # The safety backup holds the state from just before, and undoes the restore.
    safety = mgr.get(result.safety_backup_id)
    assert safety.kind == "pre-restore" and safety.audit_high_water > backup.audit_high_water


def test_manifest_lists_every_file_with_its_checksum(stocked: Any) -> None:
    import hashlib

    backup = stocked.backups.backup_now()
    doc = orjson.loads((backup.path / MANIFEST).read_bytes())
    assert doc["id"] == backup.id and doc["kind"] == "manual"
    assert doc["store_id"] == stocked.store.store_id
    assert doc["schema_version"] >= 5 and doc["audit_high_water"] == backup.audit_high_water
    for f in doc["files"]:
        data = (backup.path / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    roles = {f["role"] for f in doc["files"]}
    assert roles == ({"database", "archive"} if stocked.store.dialect == "sqlite"
                     else {"table", "archive"})
    # Written atomically: no temporary folder is left behind.
    assert not [p for p in backup.path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert stocked.backups.list_backups()[0].id == backup.id


def test_a_damaged_backup_is_refused_and_nothing_changes(stocked: Any,
                                                         flip: Callable[..., None]) -> None:
    st, mgr = stocked.store, stocked.backups
    backup = mgr.backup_now()
    st.create_session("dave")
    before = st.dump()
    victim = max((f for f in backup.files if f.role in ("database", "table")),
                 key=lambda f: f.size)
    flip(backup.path / victim.path, victim.size // 2)
    check = mgr.verify_backup(backup.id)
    assert not check.ok and victim.path in check.problems[0]
    with pytest.raises(SnapshotCorruptError, match="failed verification"):
        mgr.restore(backup.id)
    assert st.dump() == before
    assert [b.id for b in mgr.list_backups()] == [backup.id]  # no safety copy was needed


def test_a_damaged_archive_copy_fails_verification(stocked: Any,
                                                    flip: Callable[..., None]) -> None:
    backup = stocked.backups.backup_now()
    archive = next(f for f in backup.files if f.role == "archive")
    flip(backup.path / archive.path, -10)
    assert "does not match its manifest" in stocked.backups.verify_backup(backup.id).problems[0]


def test_restore_refuses_a_newer_schema(stocked: Any) -> None:
    mgr = stocked.backups
    backup = mgr.backup_now()
    manifest = backup.path / MANIFEST
    doc = orjson.loads(manifest.read_bytes())
    doc["schema_version"] = 999
    manifest.write_bytes(orjson.dumps(doc))
    before = stocked.store.dump()
    with pytest.raises(RecoveryError, match="newer than this statekeep"):
        mgr.restore(backup.id)
    assert stocked.store.dump() == before


def test_unknown_backup(stocked: Any) -> None:
    with pytest.raises(NotFoundError):
        stocked.backups.verify_backup("bk_0123456789abcdef")


def test_prune_keeps_the_newest_n_of_each_group(stocked: Any, clock: Any) -> None:
    mgr = stocked.backups
    taken = []
    for _ in range(4):
        clock.advance(hours=1)
        taken.append(mgr.backup_now().id)
    clock.advance(hours=1)
    safety = mgr.restore(taken[-1]).safety_backup_id
    removed = mgr.prune(keep=2)
    assert sorted(removed) == sorted(taken[:2])
    assert [b.id for b in mgr.list_backups()] == [safety, taken[3], taken[2]]
    with pytest.raises(RecoveryError):
        mgr.prune(keep=0)


def test_the_schedule_takes_a_backup_when_one_is_due(make_store: Callable[..., Store],
                                                      tmp_path: Path) -> None:
    store = make_store(backup_dir=str(tmp_path / "backups"), backup_interval_hours=1.0,
                       backup_keep=2)
    store.create_session("erin")
    mgr = BackupManager(store)
    assert mgr.next_due() is not None and mgr.next_due() <= store.now()
    mgr.start()
    try:
        deadline = time.monotonic() + 60
        while not mgr.list_backups() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        mgr.stop()
    backups = mgr.list_backups()
    assert [b.kind for b in backups] == ["scheduled"] and mgr.last_error is None
    # Not due again until the interval has passed since the newest one on disk.
    due = mgr.next_due()
    assert due is not None and due > store.now()
    assert mgr.run_due() is None
    off = BackupManager(store, interval_hours=0)
    assert off.next_due() is None
    off.start()  # a no-op
    off.stop()


def test_default_backup_folder_is_beside_the_sqlite_file(tmp_path: Path) -> None:
    store = open_store(StateConfig(db=str(tmp_path / "x" / "agent.db")))
    try:
        assert default_backup_dir(store) == (tmp_path / "x" / "backups").resolve()
    finally:
        store.close()


# -- online backup under a live writer -----------------------------------------------


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _state_at(dump: Dump, high_water: int) -> Dump:
    """The dump as of an audit position, for a history that only created rows."""
    audit = [r for r in dump["audit_log"] if r[0] <= high_water]
    created = {(r[2], r[3]) for r in audit if r[1] == "create"}
    entity = {"sessions": "session", "tasks": "task", "context": "context"}
    out = {t: [r for r in rows if (entity[t], r[0]) in created] if t in entity else rows
           for t, rows in dump.items()}
    out["audit_log"] = audit
    return out


@pytest.mark.slow
def test_online_backup_while_a_child_process_writes(
        db_url: str, make_store: Callable[..., Store], tmp_path: Path,
        without_repairs: Callable[..., Dump]) -> None:
    store = make_store(backup_dir=str(tmp_path / "backups"), archive_dir=str(tmp_path / "a"))
    mgr = BackupManager(store)
    proc = subprocess.Popen([sys.executable, str(WRITER), db_url, "stream"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    acked: list[str] = []

    def read_until(count: int) -> None:
        while len(acked) < count:
            line = lines.get(timeout=60)
            assert line is not None, proc.stderr.read() if proc.stderr else ""
            if line.endswith("\n") and line[0] in "STC":
                acked.append(line.split()[1])

    try:
        assert lines.get(timeout=60) == "ready\n"
        read_until(30)
        before_backup = len(acked)
        backup = mgr.backup_now()
        read_until(len(acked) + 30)  # the writer kept going during and after the copy
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert mgr.verify_backup(backup.id).ok
    live = store.dump()
    high_water = backup.audit_high_water
    assert high_water is not None and high_water < max(r[0] for r in live["audit_log"])
    expected = _state_at(live, high_water)
    # Every write acknowledged before the backup began is in it.
    ids = {r[0] for t in ("sessions", "tasks", "context") for r in expected[t]}
    assert set(acked[:before_backup]) <= ids

    mgr.restore(backup.id)
    assert without_repairs(store.dump()) == expected
    assert store.integrity_problems() == []


def test_unverified_safety_copies_are_kept_as_evidence(stocked: Any, clock: Any) -> None:
    """A pre-repair copy of a damaged store fails verification by nature; prune keeps it."""
    mgr = stocked.backups
    clock.advance(hours=1)
    evidence = mgr.backup_now(kind="pre-repair")
    manifest = evidence.path / MANIFEST
    doc = orjson.loads(manifest.read_bytes())
    doc["verified"] = False
    manifest.write_bytes(orjson.dumps(doc))
    clock.advance(hours=1)
    regular = mgr.backup_now()
    assert mgr.prune(keep=1) == []
    assert [b.id for b in mgr.list_backups()] == [regular.id, evidence.id]
    assert [b.id for b in mgr.verified_backups()] == [regular.id]  # never a repair source
    with pytest.raises(RecoveryError, match="unknown backup kind"):
        mgr.backup_now(kind="weekly")
