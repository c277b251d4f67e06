"""``statekeep gc`` end to end: the real program in a subprocess, with the command
registered the way cli/app.py registers it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statekeep import StateConfig, StateSystem

#: cli/app.py with the ``gc`` command added, as the wiring line does.
PROGRAM = ("from statekeep.cli.app import app\n"
           "from statekeep.cli.gc import gc\n"
           "app.command()(gc)\n"
           "app(prog_name='statekeep')\n")


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
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def seed(db: str) -> tuple[str, str]:
    """Two expired items written three days ago: one scored low, one important."""
    long_ago = datetime.now(UTC) - timedelta(days=3)
    with StateSystem(StateConfig(db=db), clock=lambda: long_ago) as sk:
        session = sk.create_session("alice")
        gone = sk.store.set_context(session.id, "note", "gone", {"t": 1},
                                    relevance_score=0.1, ttl_seconds=60)
        sk.store.set_context(session.id, "note", "kept", {"t": 2}, relevance_score=0.95,
                             ttl_seconds=60)
    return session.id, gone.id


def test_dry_run_then_collect_then_not_due(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    _, gone = seed(db)

    dry = run("gc", "--dry-run", "--db", db)
    assert dry.returncode == 0, dry.stderr
    assert f"delete   context  {gone}  note/gone  [unreachable]" in dry.stdout
    assert "min_age" in dry.stdout and "recent_decision" in dry.stdout
    assert "1 item(s) would be collected, 1 kept by the rules" in dry.stdout
    assert "Dry run: nothing was changed." in dry.stdout
    assert "\x1b[" not in dry.stdout  # no colour codes in a pipe

    plan = json.loads(run("gc", "--dry-run", "--json", "--db", db).stdout)
    assert plan["dry_run"] and plan["planned_total"] == 1
    assert [p["id"] for p in plan["planned"]] == [gone]
    assert plan["statistics"]["kinds"]["context"]["kept"] == {"importance": 1}

    done = run("gc", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["items_collected"] == 1 and not result["skipped"]
    assert result["compaction"]["action"] == "none"

    again = run("gc", "--db", db)
    assert again.returncode == 0
    assert again.stdout.startswith("no collection is due:")
    forced = run("gc", "--force", "--db", db)
    assert forced.returncode == 0
    assert "collected 0 item(s)" in forced.stdout


def test_a_bad_rule_is_one_red_line(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    seed(db)
    env_rule = "drop:context=destroy@5"
    proc = subprocess.run([sys.executable, "-c", PROGRAM, "gc", "--db", db],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "STATEKEEP_GC_RULES": env_rule})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: gc rule {env_rule!r}")
    assert "Traceback" not in proc.stderr
