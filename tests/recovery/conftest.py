"""Fixtures for the backup and health tests: a store with every kind of state a
backup must carry, on both backends, with private backup and archive folders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from statekeep import Store
from statekeep.memory.archive import ArchiveTier
from statekeep.recovery.backup import BackupManager
from statekeep.recovery.snapshots import SnapshotManager

CONTENT = ("def main():\n    return 42\n" * 400).encode()


@dataclass
class Stocked:
    store: Store
    backups: BackupManager
    tier: ArchiveTier
    active: str
    archived: str
    item: str
    blob: str
    snapshot: str


@pytest.fixture
def stocked(make_store: Callable[..., Store], tmp_path: Path, clock: Any) -> Stocked:
    """A store with a task tree, context, a content blob, a whole-store snapshot and
    an archived session; backups go to ``tmp_path/backups``."""
    store = make_store(clock=clock, backup_dir=str(tmp_path / "backups"),
                       archive_dir=str(tmp_path / "archive"))
    old = store.create_session("bob", metadata={"goal": "old work"})
    store.create_task(old.id, "plan", parameters={"n": 1})
    store.set_context(old.id, "note", "done", {"text": "finished long ago"})
    store.update_session(old.id, status="completed")
    clock.advance(days=120)
    tier = ArchiveTier.for_store(store)
    report = tier.run()
    assert [a.session_id for a in report.archived] == [old.id]

    s = store.create_session("alice", metadata={"goal": "ship", "n": 1.5})
    root = store.create_task(s.id, "refactor", parameters={"depth": 2})
    store.create_task(s.id, "implement", parent_task_id=root.id)
    item = store.set_context(s.id, "file", "main.py", {"lines": 800, "text": "é\n"})
    with store.atomic() as conn:
        blob = store.attach_content(conn, item.id, s.id, CONTENT)
    store.record_decision("route", "fast", context={"k": 1}, session_id=s.id,
                          task_id=root.id, confidence=0.5)
    snap = SnapshotManager(store).create()
    return Stocked(store, BackupManager(store), tier, s.id, old.id, item.id, blob, snap.id)


Dump = dict[str, list[tuple[Any, ...]]]


def _without_repairs(dump: Dump, after: int | None = None) -> Dump:
    """A dump without the audit rows recovery itself writes (``repair``/``restore``),
    or without every audit row after ``after``."""
    out = dict(dump)
    out["audit_log"] = [r for r in dump["audit_log"]
                        if r[1] not in ("repair", "restore") and (after is None or r[0] <= after)]
    return out


def _flip(path: Path, offset: int, count: int = 8) -> None:
    """Invert ``count`` bytes of a file in place, from ``offset`` (negative: from the end)."""
    data = bytearray(path.read_bytes())
    start = offset if offset >= 0 else len(data) + offset
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def without_repairs() -> Callable[..., Dump]:
    """``without_repairs(dump, after=None)``: see :func:`_without_repairs`."""
    return _without_repairs


@pytest.fixture
def flip() -> Callable[..., None]:
    """``flip(path, offset, count=8)``: see :func:`_flip`."""
    return _flip
