"""Real damage, no mocks: bytes flipped in a snapshot, in an archive file and in a
database page; a WAL truncated after its writer was killed; a referenced blob
deleted behind the store's back. Each is detected. Each repairable one is
repaired with nothing committed lost (the dumps compare equal); each one that
cannot be repaired is reported precisely and never served."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services import PG_URL
from statekeep import StateConfig, Store, open_store
from statekeep.errors import SnapshotCorruptError
from statekeep.memory.archive import ArchiveTier
from statekeep.recovery.backup import BackupManager
from statekeep.recovery.health import AutoRecovery, HealthChecker, wal_findings
from statekeep.recovery.snapshots import SnapshotManager
from statekeep.recovery.wal import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, inspect_wal

WRITER = Path(__file__).with_name("damage_writer.py")
Dump = dict[str, list[tuple[Any, ...]]]


def without_repairs(dump: Dump) -> Dump:
    return {**dump, "audit_log": [r for r in dump["audit_log"] if r[1] != "repair"]}


def flip_bytes(data: bytes, at: int, count: int = 16) -> bytes:
    out = bytearray(data)
    for i in range(at, min(at + count, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


def behind_the_back(store: Store, sql: str, params: tuple[Any, ...]) -> None:
    """A write no statekeep code sees: foreign keys and triggers off."""
    if store.dialect == "sqlite":
        conn = sqlite3.connect(store.config.db)  # foreign_keys is off by default
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


@dataclass
class World:
    store: Store
    backups: BackupManager
    tier: ArchiveTier
    snapshot: str
    blob: str
    item: str
    archived: str


@pytest.fixture
def world(make_store: Callable[..., Store], tmp_path: Path, clock: Any) -> World:
    store = make_store(clock=clock, backup_dir=str(tmp_path / "backups"),
                       archive_dir=str(tmp_path / "archive"))
    old = store.create_session("bob")
    store.set_context(old.id, "note", "n", {"text": "archived work"})
    store.update_session(old.id, status="completed")
    clock.advance(days=100)
    tier = ArchiveTier.for_store(store)
    assert len(tier.run().archived) == 1
    s = store.create_session("alice")
    item = store.set_context(s.id, "file", "big.py", {"lines": 2000})
    with store.atomic() as conn:
        blob = store.attach_content(conn, item.id, s.id, b"x = 1\n" * 5000)
    snap = SnapshotManager(store).create()
    backups = BackupManager(store)
    backups.backup_now()
    return World(store, backups, tier, snap.id, blob, item.id, old.id)


# 1. a snapshot ---------------------------------------------------------------------


def test_flipped_bytes_in_a_snapshot(world: World) -> None:
    st = world.store
    before = st.dump()
    row = st.query_one("SELECT state_data FROM state_snapshots WHERE id = ?", (world.snapshot,))
    data = bytes(row[0])
    behind_the_back(st, "UPDATE state_snapshots SET state_data = ? WHERE id = ?",
                    (flip_bytes(data, len(data) // 2), world.snapshot))
    with pytest.raises(SnapshotCorruptError):
        SnapshotManager(st).load(world.snapshot)
    found = HealthChecker(st).run()
    assert [(f.kind, f.object) for f in found.findings] == [("snapshot", world.snapshot)]
    report = AutoRecovery(st, backups=world.backups).check_and_repair()
    assert report.ok and report.findings[0].repaired
    assert without_repairs(st.dump()) == before
    SnapshotManager(st).verify(world.snapshot)


# 2. an archive file ----------------------------------------------------------------


def test_flipped_bytes_in_an_archive_file(world: World) -> None:
    st = world.store
    entry = world.tier.get(world.archived)
    good = entry.path.read_bytes()
    entry.path.write_bytes(flip_bytes(good, len(good) - 40))
    assert world.tier.verify()
    report = AutoRecovery(st, backups=world.backups).check_and_repair()
    assert [(f.kind, f.object, f.repaired) for f in report.findings] == \
        [("archive", entry.path.name, True)]
    assert entry.path.read_bytes() == good
    assert world.tier.restore(world.archived).id == world.archived


# 3. a deleted blob -----------------------------------------------------------------


def test_a_referenced_blob_deleted_behind_the_stores_back(world: World) -> None:
    st = world.store
    before = st.dump()
    behind_the_back(st, "DELETE FROM content_blobs WHERE hash = ?", (world.blob,))
    assert st.item_content(world.item) is None  # the link now points nowhere
    found = HealthChecker(st).run()
    assert ("blob", world.blob) in {(f.kind, f.object) for f in found.findings}
    report = AutoRecovery(st, backups=world.backups).check_and_repair()
    assert report.ok, report.to_dict()
    assert without_repairs(st.dump()) == before
    assert st.item_content(world.item) == b"x = 1\n" * 5000


# 4. a database page (SQLite, in a copy) --------------------------------------------


def _leaf_pages(path: Path, table: str) -> tuple[int, list[int]]:
    conn = sqlite3.connect(path)
    try:
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = [int(r[0]) for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
            (table,))]
    finally:
        conn.close()
    return size, pages


def _damage_page(path: Path, page: int, page_size: int) -> None:
    """Invert the b-tree page header and the start of its cell pointer array."""
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size)
        head = fh.read(16)
        fh.seek((page - 1) * page_size)
        fh.write(flip_bytes(head, 0, 16))


@pytest.mark.parametrize("where", ["old", "new", "no-backup"])
def test_a_damaged_page_in_a_copy_of_the_database(tmp_path: Path, where: str) -> None:
    """Rows before the backup are rebuilt exactly; rows after it that sat on the
    damaged page are named one by one as lost; everything else survives."""
    db = tmp_path / "live.db"
    config = StateConfig(db=str(db), backup_dir=str(tmp_path / "backups"),
                         archive_dir=str(tmp_path / "archive"))
    with open_store(config) as store:
        s = store.create_session("alice")
        for i in range(200):
            store.set_context(s.id, "note", f"old-{i}", {"i": i, "pad": "o" * 300})
        high_water = 0
        if where != "no-backup":
            high_water = BackupManager(store).backup_now().audit_high_water or 0
        for i in range(200):
            store.set_context(s.id, "note", f"new-{i}", {"i": i, "pad": "n" * 300})
        store.set_context(s.id, "note", "old-150", {"edited": True})  # changed after it
        original = store.dump()
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    if (tmp_path / "backups").exists():
        shutil.copytree(tmp_path / "backups", tmp_path / "copy-backups")
    page_size, leaves = _leaf_pages(copy, "context")
    assert len(leaves) > 10
    _damage_page(copy, leaves[-1] if where == "new" else leaves[0], page_size)

    damaged = open_store(config.replace(db=str(copy), backup_dir=str(tmp_path / "copy-backups")))
    try:
        found = HealthChecker(damaged).run()
        assert any(f.kind == "integrity" for f in found.findings), found.to_dict()
        report = AutoRecovery(damaged, backups=BackupManager(damaged)).check_and_repair()
        assert damaged.integrity_problems() == []
        assert not [f for f in report.findings if f.kind in ("integrity", "check")
                    and not f.repaired]
        repaired = damaged.dump()
        salvage = report.salvage
        assert salvage is not None
        lost = {r[0] for r in original["context"]} - {r[0] for r in repaired["context"]}
        if where == "old":
            # Every row of the damaged page was in the backup and unchanged since.
            assert report.ok and salvage.complete, report.to_dict()
            assert without_repairs(repaired) == original
        else:
            assert lost and not report.ok
            # Exactly the lost rows are reported, each by its id.
            reported = {f.object.split(": ", 1)[1].split(" ", 1)[0]
                        for f in report.remaining if f.kind == "lost"}
            assert reported == lost
            assert salvage.lost and len(salvage.lost) == len(lost)
            keep = {t: rows for t, rows in original.items() if t != "context"}
            assert {t: rows for t, rows in without_repairs(repaired).items()
                    if t != "context"} == keep
            assert set(repaired["context"]) == {r for r in original["context"]
                                                if r[0] not in lost}
            if where == "new":
                created = {r[3]: r[0] for r in original["audit_log"] if r[1] == "create"}
                assert all(created[i] > high_water for i in lost)
        # The damaged file was kept as evidence.
        kinds = [b.kind for b in BackupManager(damaged).list_backups()]
        assert "pre-repair" in kinds
    finally:
        damaged.close()


# 5. a truncated WAL (SQLite) ----------------------------------------------------------


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _write_then_kill(db: Path, rounds: int) -> list[str]:
    """Run the writer until it has committed ``rounds`` rounds, then SIGKILL it while
    it sleeps: the WAL holds every committed frame (checkpoints were off)."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), "idle", str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    acked: list[str] = []
    try:
        while (line := lines.get(timeout=60)) != "idle\n":
            assert line is not None, proc.stderr.read() if proc.stderr else ""
            if line[0] in "STC":
                acked.append(line.split()[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return acked


def _present(db: Path, ids: list[str]) -> set[str]:
    with open_store(StateConfig(db=str(db))) as store:
        assert store.integrity_problems() == []
        rows = store.dump()
    return {r[0] for t in ("sessions", "tasks", "context") for r in rows[t]} & set(ids)


@pytest.mark.slow
def test_a_wal_truncated_mid_frame_after_a_kill(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    acked = _write_then_kill(db, rounds=20)
    intact = inspect_wal(db)
    assert intact.header_valid and not intact.torn and intact.commits >= 60
    assert intact.index is not None and intact.index.max_frame == intact.last_commit_frame

    # Cut the last commit frame in half: the last acknowledged transaction is gone.
    frame = intact.frame_size
    cut = WAL_HEADER_SIZE + (intact.last_commit_frame - 1) * frame + frame // 2
    os.truncate(f"{db}-wal", cut)
    report = inspect_wal(db)
    assert report.torn and report.committed_lost is True
    assert report.partial_bytes == frame // 2
    assert report.last_commit_frame < intact.last_commit_frame
    assert report.commits == intact.commits - 1
    assert (cut - WAL_HEADER_SIZE) % frame != 0  # not header + whole frames
    problems = report.problems()
    assert len(problems) == 1 and "committed transactions were lost" in problems[0]
    _, findings = wal_findings(db)
    assert [(f.kind, f.severity, f.repairable) for f in findings] == [("wal", "error", False)]

    present = _present(db, acked)
    assert set(acked) - present == {acked[-1]}  # exactly the cut transaction


@pytest.mark.slow
def test_a_torn_tail_that_never_committed_is_told_apart(tmp_path: Path) -> None:
    db = tmp_path / "tail.db"
    acked = _write_then_kill(db, rounds=10)
    intact = inspect_wal(db)
    with open(f"{db}-wal", "ab") as fh:  # half a frame, as a writer killed mid-append leaves
        fh.write(b"\x00\x00\x00\x07" + os.urandom(FRAME_HEADER_SIZE + intact.page_size // 2))
    report = inspect_wal(db)
    assert report.torn and report.partial_bytes > 0
    assert report.committed_lost is False
    assert "nothing committed is lost" in report.problems()[0]
    _, findings = wal_findings(db)
    assert [f.severity for f in findings] == ["warning"]
    assert _present(db, acked) == set(acked)


def test_without_the_wal_index_the_report_says_it_cannot_tell(tmp_path: Path) -> None:
    db = tmp_path / "noshm.db"
    acked = _write_then_kill(db, rounds=5)
    intact = inspect_wal(db)
    os.truncate(f"{db}-wal", WAL_HEADER_SIZE + (intact.last_commit_frame - 1)
                * intact.frame_size + 100)
    os.unlink(f"{db}-shm")
    report = inspect_wal(db)
    assert report.torn and report.committed_lost is None
    assert "cannot tell" in report.problems()[0]
    assert len(_present(db, acked)) == len(acked) - 1
