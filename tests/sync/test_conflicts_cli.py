"""``statekeep conflicts`` and ``statekeep state`` through typer's CliRunner, on
every backend: list pending conflicts (table and JSON), resolve them, and
report mistakes as one ``error:`` line with exit code 1 and nothing changed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from statekeep import Store
from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.shared import ConfigOption, DbOption
from statekeep.cli.sync import conflicts_app, state_app
from statekeep.sync.manager import SyncManager

runner = CliRunner()

# The sub-apps on a root like the real one (same error translation), so the
# test does not depend on when app.py registers them.
app = typer.Typer(cls=_StatekeepGroup, no_args_is_help=True)


@app.callback()
def _root(db: DbOption = None, config: ConfigOption = None) -> None:
    """statekeep (test root)."""


app.add_typer(conflicts_app, name="conflicts")
app.add_typer(state_app, name="state")


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in (
                "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def seeded(make_store: Callable[..., Store], db_url: str) -> tuple[str, SyncManager, str]:
    """A store with one pending conflict on ``critical.plan``; returns (db, manager, id)."""
    m = SyncManager(make_store())
    m.sync_state("ops", {"critical.plan": ["a"], "title": "T"})
    cid = m.sync_state("agent", {"critical.plan": ["b"]}).pending["critical.plan"]
    return db_url, m, cid


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_list_pending_conflicts(seeded: tuple[str, SyncManager, str]) -> None:
    db, _, cid = seeded
    table = cli("conflicts", "list", "--db", db)
    assert table.exit_code == 0, table.output
    assert cid in table.stdout and "critical.plan" in table.stdout
    assert '["a"]' in table.stdout and '["b"]' in table.stdout and "agent" in table.stdout

    data = json.loads(cli("conflicts", "list", "--json", "--db", db).stdout)
    assert [(c["id"], c["status"], c["current_value"], c["proposed_value"]) for c in data] == [
        (cid, "pending", ["a"], ["b"])]
    assert json.loads(cli("conflicts", "list", "--json", "--status", "resolved",
                          "--db", db).stdout) == []
    assert json.loads(cli("conflicts", "list", "--json", "--scope", "other",
                          "--db", db).stdout) == []
    assert "no resolved sync conflicts" in cli("conflicts", "list", "--status", "resolved",
                                               "--db", db).stdout


@pytest.mark.parametrize(("args", "final"), [
    (("--use", "current"), ["a"]),
    (("--use", "proposed"), ["b"]),
    (("--use", "merge"), ["a", "b"]),
    (("--value", '{"x": 1}'), {"x": 1}),
])
def test_resolve(seeded: tuple[str, SyncManager, str], args: tuple[str, ...],
                 final: Any) -> None:
    db, m, cid = seeded
    done = cli("conflicts", "resolve", cid, *args, "--by", "alice", "--json", "--db", db)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["conflict"]["status"] == "resolved"
    assert data["conflict"]["resolved_by"] == "alice"
    assert data["entry"]["value"] == final
    assert m.get_state()["critical.plan"].value == final
    assert m.conflicts() == []
    listed = json.loads(cli("conflicts", "list", "--json", "--status", "all",
                            "--db", db).stdout)
    assert [c["status"] for c in listed] == ["resolved"]


def test_resolve_prints_a_line(seeded: tuple[str, SyncManager, str]) -> None:
    db, _, cid = seeded
    done = cli("conflicts", "resolve", cid, "--use", "merge", "--db", db)
    assert done.exit_code == 0, done.output
    assert f"resolved {cid}" in done.stdout and "version 2" in done.stdout


@pytest.mark.parametrize(("args", "text"), [
    (("--use", "proposed", "--value", "1"), "exactly one"),
    ((), "exactly one"),
    (("--use", "newest"), "--use 'newest'"),
    (("--value", "{not json"), "not valid JSON"),
    (("--use", "merge", "--by", "two words"), "resolved_by"),
])
def test_resolve_mistakes(seeded: tuple[str, SyncManager, str], args: tuple[str, ...],
                          text: str) -> None:
    db, m, cid = seeded
    before = m.get_conflict(cid)
    assert text in error_line(cli("conflicts", "resolve", cid, *args, "--db", db))
    assert m.get_conflict(cid) == before


def test_resolve_unknown_and_closed_conflicts(seeded: tuple[str, SyncManager, str]) -> None:
    db, _, cid = seeded
    assert "not found" in error_line(cli("conflicts", "resolve", "cfl_nope", "--use",
                                         "current", "--db", db))
    assert cli("conflicts", "resolve", cid, "--use", "current", "--db", db).exit_code == 0
    assert "not pending" in error_line(cli("conflicts", "resolve", cid, "--use", "proposed",
                                           "--db", db))


def test_list_mistakes(seeded: tuple[str, SyncManager, str]) -> None:
    db, _, _ = seeded
    assert "open" in error_line(cli("conflicts", "list", "--status", "open", "--db", db))


def test_state_show_and_set(seeded: tuple[str, SyncManager, str]) -> None:
    db, m, _ = seeded
    shown = cli("state", "show", "--db", db)
    assert shown.exit_code == 0, shown.output
    assert "critical.plan" in shown.stdout and "title" in shown.stdout

    # A person writing as a component that never read "title": a conflict,
    # settled like any other (last write wins for a string).
    done = cli("state", "set", "cli", "title", "New", "--string", "--db", db)
    assert done.exit_code == 0, done.output
    assert "last_write_wins" in done.stdout and "version 2" in done.stdout
    assert m.get_state()["title"].value == "New"

    data = json.loads(cli("state", "set", "cli", "title", '"Newer"', "--json",
                          "--db", db).stdout)
    assert data["written"] == ["title"] and data["versions"] == {"title": 3}
    assert data["resolutions"] == []  # cli's base is now the version it wrote

    pending = cli("state", "set", "cli", "critical.plan", '["c"]', "--db", db)
    assert pending.exit_code == 0 and "left to a person" in pending.stdout
    assert len(m.conflicts()) == 2

    same = cli("state", "set", "cli", "title", "Newer", "--string", "--db", db)
    assert "already holds" in same.stdout

    rows = json.loads(cli("state", "show", "--json", "--scope", "global", "--db", db).stdout)
    assert {r["key"]: (r["value"], r["version"]) for r in rows} == {
        "critical.plan": (["a"], 1), "title": ("Newer", 3)}


def test_state_set_mistakes_change_nothing(seeded: tuple[str, SyncManager, str]) -> None:
    db, m, _ = seeded
    before = m.get_state()
    assert "ahead" in error_line(cli("state", "set", "cli", "title", "1", "--base", "7",
                                     "--db", db))
    assert "newest" in error_line(cli("state", "set", "cli", "title", "1", "--strategy",
                                      "newest", "--db", db))
    assert "component" in error_line(cli("state", "set", "c c", "title", "1", "--db", db))
    assert "not valid JSON" in error_line(cli("state", "set", "cli", "title", "{", "--db", db))
    assert m.get_state() == before


def test_empty_store(make_store: Callable[..., Store], db_url: str) -> None:
    make_store()
    assert "no pending sync conflicts" in cli("conflicts", "list", "--db", db_url).stdout
    assert "no synchronised state" in cli("state", "show", "--db", db_url).stdout
    assert json.loads(cli("state", "show", "--json", "--db", db_url).stdout) == []
