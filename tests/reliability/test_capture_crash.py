"""kill -9 a process in the middle of captures: each capture is all or nothing.

A capture writes many items, their content links (with blob reference counts
kept by triggers) and the session's relations in one transaction. After
repeated SIGKILLs every acknowledged capture is whole, no session holds half
a capture, and every blob's reference count equals the links pointing at it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statekeep import StateConfig, StateSystem

WRITER = Path(__file__).with_name("capture_writer.py")
FILES = 120
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"),
                                                   reason="needs SIGKILL")]


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/__init__.py").write_text("")
    for i in range(FILES - 1):
        (root / f"pkg/mod{i}.py").write_text(
            f"import pkg.mod{(i + 1) % (FILES - 1)}\n\ndef f{i}():\n    return {i}\n")


def _run_and_kill(db: Path, root: Path, rng: random.Random) -> dict[str, int]:
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first != "ready\n":
        proc.kill()
        pytest.fail(f"writer did not start: {first!r} {proc.stderr.read() if proc.stderr else ''}")
    time.sleep(rng.uniform(0.2, 1.2))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    acked: dict[str, int] = {}
    for line in proc.stdout.read().splitlines(keepends=True):
        parts = line.split()
        if line.endswith("\n") and parts and parts[0] == "A":
            acked[parts[1]] = int(parts[2])
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return acked


def test_captures_survive_kill_9_whole_or_not_at_all(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    _tree(root)
    db = tmp_path / "capture.db"
    rng = random.Random(4)
    acked: dict[str, int] = {}
    for _ in range(5):
        acked.update(_run_and_kill(db, root, rng))
    assert acked, "no capture completed before the kills"
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        counts = dict(raw.execute(
            "SELECT session_id, COUNT(*) FROM context WHERE context_type = 'file'"
            " GROUP BY session_id").fetchall())
        refs = raw.execute(
            "SELECT b.hash, b.ref_count, (SELECT COUNT(*) FROM context_content c"
            " WHERE c.blob_hash = b.hash) FROM content_blobs b").fetchall()
        relations = dict(raw.execute(
            "SELECT session_id, COUNT(*) FROM context_relations GROUP BY session_id"
        ).fetchall())
    finally:
        raw.close()
    for sid, files in acked.items():
        assert counts.get(sid) == files == FILES, sid
        assert relations.get(sid, 0) >= FILES - 1  # the import ring, at least
    for sid, n in counts.items():
        assert n == FILES, f"session {sid} holds half a capture ({n} of {FILES} files)"
    for blob, ref_count, links in refs:
        assert ref_count == links, f"blob {blob}: ref_count {ref_count}, links {links}"
    with StateSystem(StateConfig(db=str(db))) as sk:  # and it still works
        sid = sk.create_session("after").id
        assert sk.capture_paths(sid, [root], root=root).written == FILES + 1
