"""``statekeep demo``: the agent's day is written by one process and read by another.

The demo runs as the real console script. Afterwards this test process -- a
third one -- opens the store and checks that everything the child recorded
is there, with the states the demo promises.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statekeep import SessionStatus, StateConfig, StateSystem, TaskStatus
from statekeep.demo import AGENT_DAY, run_worker


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own store lives under tmp_path, so we can prove it stays untouched."""
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def statekeep_script() -> list[str]:
    """The installed console script, or the module when running from a bare checkout."""
    script = shutil.which("statekeep", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "statekeep.cli"]


def run_demo(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = subprocess.run([*statekeep_script(), "demo", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    return done, time.perf_counter() - started


def test_demo_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done, elapsed = run_demo("--db", str(db))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in done.stderr
    assert "\x1b" not in out, "a pipe must get no colour codes"
    for text in ("A fresh store", "in its own process", "what survived", "task tree",
                 "Context", "Decisions", "Preferences", "audit trail"):
        assert text in out, text
    # The writer was another process, and it had exited before the read-back.
    writer = re.search(r"agent process \(pid (\d+)\) has exited", out)
    reader = re.search(r"this is process (\d+)", out)
    assert writer and reader and writer.group(1) != reader.group(1)
    assert elapsed < 15, f"the demo should take about a second, took {elapsed:.1f}s"

    with StateSystem(StateConfig(db=str(db))) as sk:
        (session,) = sk.list_sessions().items
        assert session.status is SessionStatus.PAUSED and session.user_id == "alice"
        tasks = sk.list_tasks(session.id)
        by_status = {s: [t for t in tasks if t.status is s] for s in TaskStatus}
        assert len(by_status[TaskStatus.COMPLETED]) >= 3
        assert all(t.result is not None for t in by_status[TaskStatus.COMPLETED])
        assert by_status[TaskStatus.IN_PROGRESS] and by_status[TaskStatus.PENDING]
        retried = [t for t in tasks if t.retry_count == 1]
        assert len(retried) == 1 and retried[0].error_details is not None
        depth = max(len(_ancestors(t.id, {t.id: t.parent_task_id for t in tasks}))
                    for t in tasks)
        assert depth >= 2, "the task tree should be at least three levels deep"
        types = {c.context_type for c in sk.list_context(session.id)}
        assert {"file", "note", "environment"} <= types
        decisions = sk.list_decisions(session_id=session.id)
        assert len(decisions) >= 2 and all(d.outcome for d in decisions)
        assert len(sk.list_preferences("alice")) >= 3
        assert len(sk.audit(session_id=session.id, limit=10_000)) > len(tasks)


def _ancestors(task_id: str, parents: dict[str, str | None]) -> list[str]:
    out = []
    parent = parents[task_id]
    while parent is not None:
        out.append(parent)
        parent = parents[parent]
    return out


def test_demo_defaults_to_a_fresh_temporary_store(tmp_path: Path) -> None:
    done, _ = run_demo()
    assert done.returncode == 0, done.stderr
    match = re.search(r"store: (\S+statekeep-demo-\S+)", done.stdout)
    assert match, done.stdout
    assert Path(match.group(1)).is_file()
    assert Path(match.group(1)).is_relative_to(tmp_path / "tmp")
    # The user's default store was never created.
    assert not (tmp_path / "xdg-data" / "statekeep").exists()


def test_demo_ignores_statekeep_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real.db"
    monkeypatch.setenv("STATEKEEP_DB", str(real))
    done, _ = run_demo()
    assert done.returncode == 0, done.stderr
    assert not real.exists()


def test_worker_in_process_writes_a_whole_day(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.db")
    session_id = run_worker(db)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > len(AGENT_DAY)  # at least one narrated line per step, then "done"
    assert '"done"' in lines[-1] and session_id in lines[-1]
    with StateSystem(StateConfig(db=db)) as sk:
        session = sk.get_session(session_id)
        assert session.metadata["next"] == "update imports in parser.py"
        # The simulated day ended in the past: nothing is stamped in the future.
        assert session.updated_at <= sk.store.now()


def test_worker_failure_is_a_one_line_error(tmp_path: Path) -> None:
    # A directory where the database file should be: the child cannot open it.
    bad = tmp_path / "is-a-dir.db"
    bad.mkdir()
    done, _ = run_demo("--db", str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr


def test_demo_captures_a_real_folder_and_shows_the_brief(tmp_path: Path) -> None:
    from sample_workspace import make_workspace

    ws = make_workspace(tmp_path / "project")
    db = tmp_path / "demo.db"
    done, _ = run_demo(str(ws), "--db", str(db))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"captured \d+ files of project with \d+ relations", out), out
    assert "relations found in the captured folder" in out
    assert "src/shop/checkout.py" in out and "dependency" in out
    assert "Picking the work back up" in out and "# Resuming session" in out
    assert "## Active tasks" in out and "tokens (estimated)" in out
    with StateSystem(StateConfig(db=str(db))) as sk:
        (session,) = sk.list_sessions().items
        keys = {(c.context_type, c.context_key) for c in sk.list_context(session.id)}
        assert ("file", "src/shop/pricing.py") in keys and ("git", "git") in keys
        assert ("file", "build/out.txt") not in keys  # .gitignore honoured
        assert sk.relations(session.id)
        review = [t for t in sk.list_tasks(session.id) if t.type == "review"]
        assert review and "src/shop/models.py" in (review[0].description or "")


def test_demo_without_capture(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done, _ = run_demo("--no-capture", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "captured" not in done.stdout and "# Resuming session" in done.stdout
    with StateSystem(StateConfig(db=str(db))) as sk:
        (session,) = sk.list_sessions().items
        assert not sk.relations(session.id)
