"""``statekeep demo``: the agent's day is written by one process and read by another.

The demo runs as the real console script. Afterwards this test process -- a
third one -- opens the store and checks that everything the children recorded
is there, with the states the demo promises: every write the SIGKILLed writer
acknowledged, and the tasks and note the recovery point brought back.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from statekeep import SessionStatus, StateConfig, StateSystem, TaskStatus
from statekeep import demo as demo_module
from statekeep.demo import (
    AGENT_DAY,
    AST_TASK,
    NOTE_TYPE,
    DemoRun,
    kill_mid_write,
    note_key,
    note_value,
    run_worker,
    run_writer,
)
from statekeep.errors import StatekeepError


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
    assert elapsed < 15, f"the demo should take a few seconds, took {elapsed:.1f}s"
    assert "FAILED" not in out

    # Step 5: the writer was killed by SIGKILL, in its own process, after acknowledging
    # writes, and every one of them survived.
    assert "kill -9 in the middle of a write" in out
    killed = re.search(r"agent process \(pid (\d+)\) resumes the session", out)
    after = re.search(r"this is process (\d+), opening the store the dead process left", out)
    assert killed and after and killed.group(1) != after.group(1)
    assert killed.group(1) != writer.group(1)
    acked = re.search(r"killed with SIGKILL [\d.]+s after its first acknowledgement: (\d+)"
                      r" writes acknowledged \(the last: (\S+)\)", out)
    assert acked, out
    n_acked = int(acked.group(1))
    assert n_acked > 0 and acked.group(2) == note_key(n_acked)
    survived = re.search(r"(\d+) of (\d+) acknowledged writes survived", out)
    assert survived and survived.group(1) == survived.group(2) == str(n_acked)
    health = re.search(r"health check: (.+?) \(integrity, foreign keys, the write-ahead log", out)
    assert health and health.group(1) == "no problems", out
    assert re.search(r"session resumed here: active, \d+ open tasks", out)

    # Step 6: a recovery point, a mistake, a full recovery that wrote back exactly it.
    assert "A recovery point undoes a mistake" in out
    assert re.search(r'recovery point rp_\w+ "before-cleanup"', out)
    assert re.search(r"recovery rec_\w+ \(full\) to \"before-cleanup\": .* 4 rows written", out)
    assert re.search(r"tasks +3 +0 +0", out) and re.search(r"context +1 +0 +0", out)
    assert "the 3 tasks are back with the same ids" in out
    assert "(integrity, foreign keys, consistency): 0 problems" in out

    with StateSystem(StateConfig(db=str(db))) as sk:
        (session,) = sk.list_sessions().items
        # The killed writer resumed the session, and this process took it over.
        assert session.status is SessionStatus.ACTIVE and session.user_id == "alice"
        notes = {c.context_key: c for c in sk.list_context(session.id, context_type=NOTE_TYPE)}
        # Every acknowledged write is there, checked again from a third process;
        # at most one more committed whose acknowledgement the kill cut off.
        for n in range(1, n_acked + 1):
            assert notes[note_key(n)].context_value == note_value(n), n
        assert n_acked <= len(notes) <= n_acked + 1
        # The recovery put the deleted subtree and note back.
        (ast,) = [t for t in sk.list_tasks(session.id) if t.description == AST_TASK]
        assert ast.status is TaskStatus.IN_PROGRESS
        assert {t.description: t.status for t in sk.list_tasks(session.id)
                if t.parent_task_id == ast.id} == {
            "Move the node classes": TaskStatus.COMPLETED,
            "Update imports in parser.py": TaskStatus.PENDING}
        gotcha = sk.get_context(session.id, "note", "gotcha")
        assert gotcha is not None and "1-based" in gotcha.context_value
        names = [p.name for p in sk.recovery_manager.list_recovery_points()]
        assert "before-cleanup" in names and any(n.startswith("pre-recovery") for n in names)
        assert sk.recovery_manager.verify_recovery() == []
        # The day's task tree, whole again after the recovery.
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


def test_writer_acknowledges_only_committed_writes(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """In process: each printed key is a note already in the store, value and all."""
    db = str(tmp_path / "w.db")
    with StateSystem(StateConfig(db=db)) as sk:
        session_id = sk.create_session("alice").id
    written = run_writer(db, session_id, seconds=0.2)
    keys = capsys.readouterr().out.split()
    assert written > 0 and keys == [note_key(n) for n in range(1, written + 1)]
    with StateSystem(StateConfig(db=db)) as sk:
        assert sk.get_session(session_id).status is SessionStatus.ACTIVE
        items = sk.list_context(session_id, context_type=NOTE_TYPE, order="key")
        assert [(c.context_key, c.context_value) for c in items] == [
            (note_key(n), note_value(n)) for n in range(1, written + 1)]


def test_kill_step_fails_loudly_when_an_acknowledged_write_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's checks are real: a lost acknowledged write fails the step."""
    db = str(tmp_path / "d.db")
    session_id = run_worker(db)
    capsys.readouterr()
    # A "writer" that acknowledged a note it never wrote.
    monkeypatch.setattr(demo_module, "_write_until_killed",
                        lambda run: ([note_key(1)], 0.2))
    out = io.StringIO()
    run = DemoRun(console=Console(file=out, width=200), db=db, pace=0.0, session_id=session_id)
    with pytest.raises(StatekeepError, match="broken promise"):
        kill_mid_write(run)
    assert "FAILED: 0 of 1 acknowledged writes survived" in out.getvalue()
