"""Crash safety with real processes: kill -9 a writer mid-stream, again and again.

A child process (``crash_writer.py``) writes sessions and context items to one
SQLite file and prints each id only after the call returned. The parent kills
it with SIGKILL at a random instant, restarts it on the same file, and at the
end proves that the file is intact and that every acknowledged write -- and
its audit row -- is there. Entity rows and audit rows must also match one to
one: a kill can never leave a row without its audit entry or the reverse.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from statekeep import StateConfig, open_store

WRITER = Path(__file__).with_name("crash_writer.py")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"),
                                                   reason="needs SIGKILL")]


@dataclass
class Acks:
    sessions: set[str] = field(default_factory=set)
    items: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (session, key)


def _pump(stream, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _kill_one_writer(db: Path, durability: str, rng: random.Random, acks: Acks) -> int:
    """Start a writer, let it run for a random while, SIGKILL it; returns lines read."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), durability],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            first = None
        if first != "ready\n":
            proc.kill()
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr is not None else ""
            pytest.fail(f"writer did not start (got {first!r}): {err}")
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    assert proc.returncode == -signal.SIGKILL
    count = 0
    while True:
        line = lines.get_nowait()
        if line is None:
            break
        if not line.endswith("\n"):
            continue  # cut off mid-line by the kill: not an acknowledgement
        parts = line.split()
        if parts[0] == "S":
            acks.sessions.add(parts[1])
        elif parts[0] == "C":
            acks.items[parts[1]] = (parts[2], parts[3])
        count += 1
    return count


def _check(db: Path, acks: Acks) -> None:
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        sessions = {r[0] for r in raw.execute("SELECT id FROM sessions")}
        items = {r[0]: (r[1], r[2]) for r in raw.execute(
            "SELECT id, session_id, context_key FROM context")}
        audited_sessions = [r[0] for r in raw.execute(
            "SELECT entity_id FROM audit_log WHERE entity_type = 'session'"
            " AND event_type = 'create'")]
        audited_items = [r[0] for r in raw.execute(
            "SELECT entity_id FROM audit_log WHERE entity_type = 'context'"
            " AND event_type = 'create'")]
    finally:
        raw.close()
    lost_sessions = acks.sessions - sessions
    assert not lost_sessions, f"{len(lost_sessions)} acknowledged sessions lost"
    lost_items = {i for i in acks.items if items.get(i) != acks.items[i]}
    assert not lost_items, f"{len(lost_items)} acknowledged context items lost or changed"
    # Row and audit row commit together or not at all -- acknowledged or not.
    assert sorted(audited_sessions) == sorted(sessions)
    assert sorted(audited_items) == sorted(items)

    store = open_store(StateConfig(db=str(db)))
    try:
        assert store.integrity_problems() == []
        sample = sorted(acks.items)[:: max(1, len(acks.items) // 50)]
        for item_id in sample:
            session_id, key = acks.items[item_id]
            got = store.get_context(session_id, "progress", key)
            assert got is not None and got.id == item_id
            events = store.audit(entity_type="context", entity_id=item_id)
            assert [e.event_type for e in events] == ["create"]
            assert events[0].session_id == session_id
            assert events[0].new_value["context_key"] == key
        # And the store still takes writes after all those kills.
        s = store.create_session("after-crash")
        assert store.get_session(s.id) == s
    finally:
        store.close()


@pytest.mark.parametrize(("durability", "kills"), [("process", 20), ("power", 5)])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, durability: str,
                                             kills: int) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    acks = Acks()
    total = 0
    for _ in range(kills):
        total += _kill_one_writer(db, durability, rng, acks)
    assert acks.sessions and acks.items, f"the writers acknowledged nothing (seed {seed})"
    assert total >= kills
    _check(db, acks)
