"""``statekeep capture | resume | search | analyze | graph | context explain`` as a
shell sees them: real processes for the main path, CliRunner for the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sample_workspace import make_workspace
from statekeep import StateConfig, StateSystem
from statekeep.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in ("FORCE_COLOR", "NO_COLOR", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, str, str]:
    """(db, session id, active task id) of a store with one session."""
    db = str(tmp_path / "cli.db")
    with StateSystem(StateConfig(db=db)) as sk:
        sid = sk.create_session("alice").id
        task = sk.create_task(sid, "fix", description="Rounding bug in pricing.py")
        sk.start_task(task.id)
    return db, sid, task.id


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statekeep.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd)


def test_capture_then_resume_in_separate_processes(seeded: tuple[str, str, str],
                                                   ws: Path) -> None:
    db, sid, task_id = seeded
    got = run("capture", ".", "--session", sid, "--db", db, "--json", cwd=ws)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    keys = {tuple(k) for k in report["items"]}
    assert ("file", "src/shop/pricing.py") in keys and ("git", "git") in keys
    assert report["relations_added"] >= 4
    brief = run("resume", sid, "--db", db, "--budget", "3000")
    assert brief.returncode == 0, brief.stderr
    assert brief.stdout.startswith(f"# Resuming session `{sid}`")
    assert "\x1b[" not in brief.stdout  # piped: raw Markdown, no colour codes
    assert "Rounding bug in pricing.py" in brief.stdout
    first_file = brief.stdout.index("`src/shop/pricing.py`")
    assert first_file < brief.stdout.index("`README.md`")
    js = run("resume", sid, "--db", db, "--json")
    payload = json.loads(js.stdout)
    assert payload["tokens"] <= payload["budget"] == 2000
    assert payload["context"]["active_tasks"][0]["id"] == task_id


def test_capture_refuses_an_escaping_path(seeded: tuple[str, str, str], ws: Path) -> None:
    db, sid, _ = seeded
    got = run("capture", "../", "--session", sid, "--db", db, cwd=ws)
    assert got.returncode == 1
    assert got.stderr.startswith("error: ") and "outside the workspace root" in got.stderr
    with StateSystem(StateConfig(db=db)) as sk:
        assert sk.list_context(sid) == []


def test_capture_lists_what_it_skipped(seeded: tuple[str, str, str], ws: Path) -> None:
    db, sid, _ = seeded
    (ws.parent / "outside.txt").write_text("x")
    (ws / "link.txt").symlink_to(ws.parent / "outside.txt")
    got = cli("capture", str(ws), "--root", str(ws), "--session", sid, "--db", db,
              "--no-env", "--no-git")
    assert got.exit_code == 0, got.output
    assert "Skipped" in got.output and "link.txt" in got.output
    assert "symlink points outside the workspace" in got.output


def test_search_explain_analyze_and_graph(seeded: tuple[str, str, str], ws: Path) -> None:
    db, sid, _ = seeded
    assert cli("capture", str(ws), "--root", str(ws), "--session", sid, "--db", db).exit_code == 0
    found = cli("search", "discount", "--session", sid, "--db", db, "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)
    assert "src/shop/pricing.py" in {h["context_key"] for h in hits}
    table = cli("search", "discount", "--db", db)
    assert "pricing.py" in table.output
    assert "Nothing matches" in cli("search", "xylophone", "--db", db).output
    why = json.loads(cli("context", "explain", sid, "file", "src/shop/pricing.py", "--db", db,
                         "--json").output)
    assert why["task_score"] == 1.0 and "named by active task" in why["task_reason"]
    shown = cli("context", "explain", sid, "file", "src/shop/pricing.py", "--db", db)
    assert "relationship" in shown.output and "task" in shown.output
    report = json.loads(cli("analyze", sid, "--db", db, "--json").output)
    assert any({"web/index.ts", "web/util.ts"} <= {k for _t, k in c}
               for c in report["clusters"])
    graph = json.loads(cli("graph", sid, "--db", db, "--json").output)
    labels = {n["id"]: n["context_key"] for n in graph["nodes"]}
    assert ("src/shop/checkout.py", "src/shop/pricing.py") in {
        (labels[e["source_id"]], labels[e["target_id"]]) for e in graph["edges"]}
    assert "dependency" in cli("graph", sid, "--db", db).output


def test_user_errors_are_one_line(seeded: tuple[str, str, str]) -> None:
    db, sid, _ = seeded
    for args in (["resume", sid, "--budget", "3"], ["search", "  "],
                 ["context", "explain", sid, "file", "missing.py"],
                 ["resume", "ses_" + "0" * 32]):
        got = cli(*args, "--db", db)
        assert got.exit_code == 1, (args, got.output)
        assert "Traceback" not in got.output
