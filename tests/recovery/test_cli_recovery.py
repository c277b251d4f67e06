"""``statekeep snapshot`` and ``statekeep recover`` through typer's CliRunner, on a
root group built like the real one (cli/app.py wires the same sub-apps)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from statekeep import StateConfig, StateSystem
from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.recovery import recover_app, snapshot_app

runner = CliRunner()
app = typer.Typer(cls=_StatekeepGroup, no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(recover_app, name="recover")


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in ("FORCE_COLOR", "NO_COLOR", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def as_json(result: Result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_snapshot_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with StateSystem(StateConfig(db=db)) as sk:
        sid = sk.create_session("alice").id
        sk.store.set_context(sid, "note", "a", 1)
    made = as_json(cli("snapshot", "create", "--json", "--db", db))
    assert isinstance(made, dict) and made["session_id"] is None
    one = as_json(cli("snapshot", "create", "--session", sid, "--type", "backup", "--json",
                      "--db", db))
    assert isinstance(one, dict) and one["session_id"] == sid
    listed = as_json(cli("snapshot", "list", "--json", "--db", db))
    assert isinstance(listed, list) and {s["id"] for s in listed} == {made["id"], one["id"]}
    human = cli("snapshot", "list", "--db", db)
    assert human.exit_code == 0 and made["id"] in human.stdout
    assert cli("snapshot", "verify", made["id"], "--db", db).exit_code == 0
    out = tmp_path / "exported.sksnap"
    exported = as_json(cli("snapshot", "export", made["id"], str(out), "--json", "--db", db))
    assert isinstance(exported, dict) and Path(exported["path"]) == out
    other = str(tmp_path / "other.db")
    with StateSystem(StateConfig(db=other)):
        pass
    imported = as_json(cli("snapshot", "import", str(out), "--json", "--db", other))
    assert isinstance(imported, dict)
    restored = as_json(cli("snapshot", "restore", imported["id"], "--json", "--db", other))
    assert isinstance(restored, dict) and restored["changed"]["sessions"]["inserted"] == 1
    out.write_bytes(b"garbage")
    bad = cli("snapshot", "import", str(out), "--db", other)
    assert bad.exit_code == 1 and "corrupt" in bad.stderr


def test_recover_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    with StateSystem(StateConfig(db=db)) as sk:
        sid = sk.create_session("alice").id
        sk.store.set_context(sid, "note", "a", "old")
    point = as_json(cli("recover", "point", "before", "--json", "--db", db))
    assert isinstance(point, dict) and point["name"] == "before"
    middle = datetime.now(UTC)
    with StateSystem(StateConfig(db=db)) as sk:
        sk.store.set_context(sid, "note", "a", "new")
        sk.store.set_context(sid, "note", "b", "added")
    points = as_json(cli("recover", "points", "--json", "--db", db))
    assert isinstance(points, list) and points[0]["id"] == point["id"]
    dry = as_json(cli("recover", "run", point["id"], "--dry-run", "--json", "--db", db))
    assert isinstance(dry, dict) and dry["dry_run"] and dry["rows_changed"] == 2
    done = cli("recover", "run", point["id"], "--db", db)
    assert done.exit_code == 0 and "changed 2 row(s)" in done.stdout
    with StateSystem(StateConfig(db=db)) as sk:
        item = sk.store.get_context(sid, "note", "a")
        assert item is not None and item.context_value == "old"
    assert cli("recover", "verify", "--db", db).exit_code == 0
    wrong = cli("recover", "run", point["id"], "--strategy", "sideways", "--db", db)
    assert wrong.exit_code == 1 and "strategy" in wrong.stderr
    naive_future = cli("recover", "at", "2999-01-01T00:00:00", "--db", db)
    assert naive_future.exit_code == 1 and "future" in naive_future.stderr
    garbage = cli("recover", "at", "yesterday-ish", "--db", db)
    assert garbage.exit_code == 1 and "ISO-8601" in garbage.stderr
    selective = as_json(cli("recover", "run", point["id"], "--strategy", "selective",
                            "--key", "b", "--json", "--db", db))
    assert isinstance(selective, dict) and selective["rows_changed"] == 0
    back = as_json(cli("recover", "at", middle.isoformat(), "--json", "--db", db))
    assert isinstance(back, dict) and back["target_time"] is not None
