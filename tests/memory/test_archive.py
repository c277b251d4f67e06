"""The archive tier on both backends: sessions leave the database for a file and
come back identical; damaged files are refused with the store unchanged; a
crash between the file and the transaction loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from statekeep import Store
from statekeep.errors import (
    ArchiveCorruptError,
    ArchiveMissingError,
    NotFoundError,
    StoreError,
)
from statekeep.memory.archive import ArchiveTier


class FakeClock(Protocol):
    """The root conftest's ``clock`` fixture (its module name is shadowed here)."""

    def advance(self, **delta: float) -> Any: ...


@dataclass
class Seeded:
    session: str
    root: str
    child: str
    decision: str


def seed(store: Store, user: str = "alice", *, finish: str | None = "completed") -> Seeded:
    """A session with a task tree, context, a snapshot, a linked decision and a
    recovery point on the snapshot: every link the archive must carry."""
    s = store.create_session(user, metadata={"goal": "ship", "n": 1.5})
    root = store.create_task(s.id, "plan", parameters={"depth": 2})
    child = store.create_task(s.id, "step", parent_task_id=root.id)
    store.complete_task(store.start_task(child.id).id, result={"ok": True})
    store.set_context(s.id, "file", "main.py", {"lines": [1, 2, 3], "text": "é\n"})
    store.set_context(s.id, "note", "n1", "plain text", relevance_score=0.25)
    snap_id = f"snap_{s.id}"
    with store.atomic() as conn:
        conn.execute(
            "INSERT INTO state_snapshots (id, session_id, snapshot_type, state_data,"
            " compression_type, checksum, size_bytes, created_at)"
            " VALUES (?, ?, 'checkpoint', ?, 'zstd', 'abc', 4, ?)",
            (snap_id, s.id, b"\x00\xffAB", store.ts(store.now())))
        conn.execute(
            "INSERT INTO recovery_points (id, name, state_snapshot_id, created_at)"
            " VALUES (?, 'rp', ?, ?)", (f"rp_{s.id}", snap_id, store.ts(store.now())))
    d = store.record_decision("route", "fast", context={"k": 1}, session_id=s.id,
                              task_id=root.id, confidence=0.5)
    if finish is not None:
        store.update_session(s.id, status=finish)
    return Seeded(s.id, root.id, child.id, d.id)


def state(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Everything but the audit log (which records the archive and restore)."""
    dump = store.dump()
    del dump["audit_log"]
    return dump


@pytest.fixture
def aged(make_store: Callable[..., Store], clock: FakeClock) -> Store:
    return make_store(clock=clock)


def tier(store: Store, tmp_path: Path, **kw: Any) -> ArchiveTier:
    return ArchiveTier(store, tmp_path / "archive", cold_retention_days=kw.get("cold", 90),
                       archive_retention_days=kw.get("keep", 365))


def test_archive_then_restore_round_trips_every_row(aged: Store, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    s = seed(aged)
    before = state(aged)
    arc = tier(aged, tmp_path)
    assert arc.candidates() == []  # not idle long enough yet
    clock.advance(days=91)
    assert [c.session_id for c in arc.candidates()] == [s.session]

    report = arc.run()
    assert [a.session_id for a in report.archived] == [s.session]
    assert report.failed == [] and report.skipped == []
    entry = report.archived[0]
    assert entry.path.is_file()
    assert entry.item_counts == {"tasks": 2, "context": 2, "state_snapshots": 1}
    with pytest.raises(NotFoundError):
        aged.get_session(s.session)
    with pytest.raises(NotFoundError):
        aged.get_task(s.child)
    assert aged.get_decision(s.decision).session_id is None  # decisions outlive it
    assert arc.is_archived(s.session)
    assert [e.session_id for e in arc.list()] == [s.session]
    assert arc.verify() == []
    assert [e.event_type for e in aged.audit(entity_id=s.session)][-1] == "archive"

    assert arc.run().archived == []  # idempotent: nothing left to do

    restored = arc.restore(s.session)
    assert restored.id == s.session
    assert state(aged) == before
    assert not arc.is_archived(s.session)
    assert arc.list() == []
    assert not entry.path.exists()  # the file goes once the restore committed
    assert [e.event_type for e in aged.audit(entity_id=s.session)][-1] == "restore"


def test_unfinished_and_recent_sessions_stay(aged: Store, clock: FakeClock,
                                             tmp_path: Path) -> None:
    active = seed(aged, finish=None)
    paused = seed(aged, finish=None)
    aged.update_session(paused.session, status="paused")
    failed = seed(aged, finish="failed")
    busy = seed(aged)
    clock.advance(days=89)
    aged.set_context(busy.session, "note", "late", 1)  # activity through a context item
    clock.advance(days=2)
    report = tier(aged, tmp_path).run()
    assert [a.session_id for a in report.archived] == [failed.session]
    for sid in (active.session, paused.session, busy.session):
        assert aged.get_session(sid).id == sid


def test_task_activity_counts_as_activity(aged: Store, clock: FakeClock,
                                          tmp_path: Path) -> None:
    s = seed(aged)
    clock.advance(days=60)
    aged.update_task(s.root, description="touched")
    clock.advance(days=40)
    arc = tier(aged, tmp_path)
    assert arc.candidates() == []
    clock.advance(days=60)
    assert [c.session_id for c in arc.candidates()] == [s.session]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip_body", "flip_header", "truncate", "empty"])
def test_damaged_file_is_refused_and_nothing_changes(aged: Store, clock: FakeClock,
                                                     tmp_path: Path, damage: str) -> None:
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    path = arc.run().archived[0].path
    if damage == "flip_body":
        flip_byte(path, path.stat().st_size - 5)
    elif damage == "flip_header":
        flip_byte(path, 2)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    else:
        path.write_bytes(b"")
    before = aged.dump()
    with pytest.raises(ArchiveCorruptError, match=path.name):
        arc.restore(s.session)
    assert aged.dump() == before
    assert path.exists()
    assert arc.is_archived(s.session)
    problems = arc.verify()
    assert len(problems) == 1 and path.name in problems[0]


def test_missing_file_is_reported(aged: Store, clock: FakeClock, tmp_path: Path) -> None:
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    path = arc.run().archived[0].path
    path.unlink()
    assert any("missing" in p and s.session in p for p in arc.verify())
    before = aged.dump()
    with pytest.raises(ArchiveMissingError):
        arc.restore(s.session)
    assert aged.dump() == before


def test_purge_after_retention(aged: Store, clock: FakeClock, tmp_path: Path) -> None:
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    path = arc.run().archived[0].path
    clock.advance(days=364)
    assert arc.purge_expired() == 0
    assert path.exists()
    clock.advance(days=2)
    assert arc.purge_expired() == 1
    assert not path.exists()
    assert not arc.is_archived(s.session)
    assert [e.event_type for e in aged.audit(entity_id=s.session)][-1] == "purge"
    assert arc.purge_expired() == 0


def test_restore_unknown_session_is_not_found(aged: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        tier(aged, tmp_path).restore("ses_nope")


def test_failed_transaction_leaves_no_orphans_and_rerun_succeeds(
        aged: Store, clock: FakeClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    before = aged.dump()

    def crash(self: ArchiveTier, conn: Any, sid: str) -> None:
        raise StoreError("disk full (simulated)")

    monkeypatch.setattr(ArchiveTier, "_delete_rows", crash)  # fails inside the transaction
    report = arc.run()
    assert report.archived == [] and report.failed[0][0] == s.session
    assert aged.dump() == before  # index row rolled back, session intact
    assert list((tmp_path / "archive").iterdir()) == []  # the file went too

    monkeypatch.undo()
    assert [a.session_id for a in arc.run().archived] == [s.session]
    assert arc.verify() == []


def test_session_deleted_concurrently_is_skipped(aged: Store, clock: FakeClock,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = seed(aged)
    other = seed(aged, "bob")
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    real = ArchiveTier._write_atomic

    def write_then_race(self: ArchiveTier, path: Path, blob: bytes) -> None:
        real(self, path, blob)
        if path.name.startswith(s.session):
            aged.delete_session(s.session)  # another process wins meanwhile

    monkeypatch.setattr(ArchiveTier, "_write_atomic", write_then_race)
    report = arc.run()
    assert [sid for sid, _ in report.skipped] == [s.session]
    assert [a.session_id for a in report.archived] == [other.session]
    assert not arc.is_archived(s.session)
    assert [p.name.split(".")[0] for p in (tmp_path / "archive").iterdir()] == [other.session]


def test_change_after_file_written_keeps_session(aged: Store, clock: FakeClock,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A write between the file and the transaction must not be lost."""
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    real = ArchiveTier._write_atomic

    def write_then_touch(self: ArchiveTier, path: Path, blob: bytes) -> None:
        real(self, path, blob)
        aged.set_context(s.session, "note", "late", {"keep": "me"})

    monkeypatch.setattr(ArchiveTier, "_write_atomic", write_then_touch)
    report = arc.run()
    assert report.skipped and report.skipped[0][0] == s.session
    assert aged.get_context(s.session, "note", "late").context_value == {"keep": "me"}
    assert not arc.is_archived(s.session)
    assert list((tmp_path / "archive").iterdir()) == []


def test_crash_after_file_before_transaction_is_recovered(aged: Store, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    """A process died after writing the file: the next run reuses or replaces it."""
    s = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    first = arc.run().archived[0]
    blob = first.path.read_bytes()
    arc.restore(s.session)
    first.path.write_bytes(blob)  # the file as a crashed run would have left it
    stale = tmp_path / "archive" / "ses_gone.0000000000000000.skarc"
    stale.write_bytes(b"junk")  # unreferenced, session not in the database: reported

    assert any(stale.name in p for p in arc.verify())
    clock.advance(days=91)
    report = arc.run()
    assert [a.session_id for a in report.archived] == [s.session]
    assert report.archived[0].path.read_bytes() == blob
    assert stale.exists()


def test_orphan_file_of_live_session_is_swept(aged: Store, clock: FakeClock,
                                              tmp_path: Path) -> None:
    s = seed(aged, finish=None)
    arc = tier(aged, tmp_path)
    orphan = tmp_path / "archive" / f"{s.session}.0123456789abcdef.skarc"
    orphan.parent.mkdir()
    orphan.write_bytes(b"left by a crash")
    assert arc.run().swept == 1
    assert not orphan.exists()
    assert aged.get_session(s.session).id == s.session


def test_decision_relinked_only_when_unclaimed(aged: Store, clock: FakeClock,
                                               tmp_path: Path) -> None:
    s = seed(aged)
    other = seed(aged, "bob", finish=None)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    arc.run()
    with aged.atomic() as conn:  # someone re-used the decision meanwhile
        conn.execute("UPDATE decisions SET session_id = ? WHERE id = ?",
                     (other.session, s.decision))
    arc.restore(s.session)
    assert aged.get_decision(s.decision).session_id == other.session


def test_for_store_uses_config(make_store: Callable[..., Store], tmp_path: Path) -> None:
    store = make_store(archive_dir=str(tmp_path / "here"), cold_retention_days=7)
    arc = ArchiveTier.for_store(store)
    assert arc.directory == tmp_path / "here"
    assert arc.cold_retention.days == 7
