"""``statekeep archive`` end to end: the real program in a subprocess archives a
session that went idle long ago, lists it, restores it, and reports a damaged
file as a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statekeep import NotFoundError, StateConfig, StateSystem


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No STATEKEEP_* settings from the caller; private user folders."""
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in (
                "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide console, whatever width the test runner hands down, so a table row
    # (with its long session id) is one line.
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "statekeep.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def seed(db: str) -> tuple[str, str]:
    """One session finished 100 days ago (archivable) and one active now."""
    long_ago = datetime.now(UTC) - timedelta(days=100)
    with StateSystem(StateConfig(db=db), clock=lambda: long_ago) as sk:
        old = sk.create_session("alice", metadata={"goal": "ship"})
        task = sk.create_task(old.id, "plan")
        sk.store.set_context(old.id, "file", "a.py", {"lines": 3})
        sk.store.start_task(task.id)
        sk.store.complete_task(task.id, result={"ok": True})
        sk.store.update_session(old.id, status="completed")
    with StateSystem(StateConfig(db=db)) as sk:
        new = sk.create_session("alice")
    return old.id, new.id


def test_run_list_restore(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    old, new = seed(db)

    dry = run("archive", "run", "--dry-run", "--json", "--db", db)
    assert dry.returncode == 0, dry.stderr
    assert [c["session_id"] for c in json.loads(dry.stdout)["candidates"]] == [old]

    done = run("archive", "run", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    archived = json.loads(done.stdout)["archived"]
    assert [a["session_id"] for a in archived] == [old]
    path = Path(archived[0]["path"])
    assert path.parent == tmp_path / "store-archive" and path.is_file()

    listed = run("archive", "list", "--json", "--db", db)
    assert [e["session_id"] for e in json.loads(listed.stdout)] == [old]
    table = run("archive", "list", "--db", db)
    assert table.returncode == 0 and old in table.stdout

    with StateSystem(StateConfig(db=db)) as sk:  # out of the database while archived
        assert sk.archive.is_archived(old)
        with pytest.raises(NotFoundError):
            sk.store.get_session(old)

    back = run("archive", "restore", old, "--db", db)
    assert back.returncode == 0, back.stderr
    assert old in back.stdout
    assert not path.exists()
    with StateSystem(StateConfig(db=db)) as sk:
        assert sk.store.get_session(old).metadata == {"goal": "ship"}
        assert sk.store.get_session(new).id == new
        assert [t.type for t in sk.store.list_tasks(old)] == ["plan"]

    purge = run("archive", "purge", "--json", "--db", db)
    assert json.loads(purge.stdout) == {"purged": 0}


def test_reading_an_archived_session_restores_it(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    old, _ = seed(db)
    assert run("archive", "run", "--json", "--db", db).returncode == 0
    shown = run("sessions", "show", old, "--json", "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["session"]["id"] == old
    listed = run("archive", "list", "--json", "--db", db)
    assert json.loads(listed.stdout) == []


def test_corrupt_archive_is_a_one_line_error(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    old, _ = seed(db)
    done = run("archive", "run", "--json", "--db", db)
    path = Path(json.loads(done.stdout)["archived"][0]["path"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))

    bad = run("archive", "restore", old, "--db", db)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and path.name in lines[0]
    listed = json.loads(run("archive", "list", "--json", "--db", db).stdout)
    assert [e["session_id"] for e in listed] == [old]

    unknown = run("archive", "restore", "ses_nope", "--db", db)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
