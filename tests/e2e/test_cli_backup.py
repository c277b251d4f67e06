"""``statekeep backup`` and ``statekeep doctor`` end to end, through typer's CliRunner
(the root app when it registers them, else a throwaway app with the same error
handling): JSON that parses, exit codes, a damaged backup refused, a damaged
store found and repaired, a torn WAL reported before the store is opened."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner, Result

from statekeep import StateConfig, StateSystem
from statekeep.cli import app as root_app
from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.backup import DOCTOR_PROBLEMS_EXIT, backup_app, doctor
from statekeep.cli.shared import ConfigOption, DbOption
from statekeep.recovery.wal import WAL_HEADER_SIZE, inspect_wal

WRITER = Path(__file__).parents[1] / "reliability" / "damage_writer.py"
runner = CliRunner()


def _app() -> typer.Typer:
    registered = getattr(get_command(root_app), "commands", {})
    if "backup" in registered and "doctor" in registered:
        return root_app
    app = typer.Typer(cls=_StatekeepGroup, no_args_is_help=True)

    @app.callback()
    def _root(db: DbOption = None, config: ConfigOption = None) -> None:
        """statekeep (test app)."""

    app.add_typer(backup_app, name="backup")
    app.command()(doctor)
    return app


APP = _app()


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in (
                "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def cli(*args: str) -> Result:
    return runner.invoke(APP, list(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "store.db")
    with StateSystem(StateConfig(db=path)) as sk:
        s = sk.create_session("alice", metadata={"goal": "ship"})
        item = sk.set_context(s.id, "file", "a.py", {"lines": 3})
        with sk.store.atomic() as conn:
            sk.store.attach_content(conn, item.id, s.id, b"print('hi')\n" * 100)
    return path


def _blob(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT hash FROM content_blobs").fetchone()[0])
    finally:
        conn.close()


def test_backup_now_list_verify(db: str) -> None:
    done = cli("backup", "now", "--db", db, "--json")
    assert done.exit_code == 0, done.output
    backup = json.loads(done.output)
    assert backup["kind"] == "manual" and backup["verified"] is True
    human = cli("backup", "now", "--db", db)
    assert human.exit_code == 0 and "written and verified" in human.output

    listed = cli("backup", "list", "--db", db, "--json")
    assert [b["id"] for b in json.loads(listed.output)][-1] == backup["id"]
    table = cli("backup", "list", "--db", db)
    assert backup["id"] in table.output and "manual" in table.output

    ok = cli("backup", "verify", backup["id"], "--db", db)
    assert ok.exit_code == 0 and "intact" in ok.output
    data = Path(backup["path"]) / "statekeep.db"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    bad = cli("backup", "verify", backup["id"], "--db", db, "--json")
    assert bad.exit_code == 1 and json.loads(bad.output)["ok"] is False


def test_restore_needs_confirmation_in_a_pipe(db: str) -> None:
    backup = json.loads(cli("backup", "now", "--db", db, "--json").output)
    with StateSystem(StateConfig(db=db)) as sk:
        sk.create_session("bob")
    refused = cli("backup", "restore", backup["id"], "--db", db)
    assert refused.exit_code == 1 and "--yes" in refused.output
    done = cli("backup", "restore", backup["id"], "--db", db, "--yes", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["rows"]["sessions"] == 1 and result["safety_backup_id"]
    human = cli("backup", "restore", result["safety_backup_id"], "--db", db, "-y")
    assert human.exit_code == 0 and "restored backup" in human.output
    with StateSystem(StateConfig(db=db)) as sk:
        assert sk.store.dump()["sessions"][-1][1] == "bob"  # the undo brought bob back


def test_unknown_backup_is_one_error_line(db: str) -> None:
    done = cli("backup", "verify", "bk_0000", "--db", db)
    assert done.exit_code == 1 and "error:" in done.output and "not found" in done.output


def test_prune(db: str) -> None:
    for _ in range(3):
        cli("backup", "now", "--db", db)
    done = cli("backup", "prune", "--keep", "1", "--db", db, "--json")
    assert done.exit_code == 0 and len(json.loads(done.output)["removed"]) == 2
    assert len(json.loads(cli("backup", "list", "--db", db, "--json").output)) == 1


def test_doctor_finds_and_repairs_a_deleted_blob(db: str) -> None:
    healthy = cli("doctor", "--db", db)
    assert healthy.exit_code == 0 and "healthy" in healthy.output
    cli("backup", "now", "--db", db)
    blob = _blob(db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM content_blobs")
    conn.commit()
    conn.close()

    sick = cli("doctor", "--db", db)
    assert sick.exit_code == DOCTOR_PROBLEMS_EXIT, sick.output
    assert "blob" in sick.output and "--repair" in sick.output
    report = json.loads(cli("doctor", "--db", db, "--json").output)
    assert not report["ok"] and {"kind": "blob", "object": blob} in [
        {"kind": f["kind"], "object": f["object"]} for f in report["findings"]]
    assert all(f["repairable"] for f in report["findings"] if f["kind"] == "blob")

    fixed = cli("doctor", "--repair", "--db", db)
    assert fixed.exit_code == 0, fixed.output
    assert "repaired" in fixed.output
    assert cli("doctor", "--db", db).exit_code == 0
    assert _blob(db) == blob


def test_doctor_without_a_store(tmp_path: Path) -> None:
    done = cli("doctor", "--db", str(tmp_path / "nope.db"))
    assert done.exit_code == 1 and "statekeep init" in done.output


@pytest.mark.slow
def test_doctor_reports_a_torn_wal_before_opening_the_store(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), "idle", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == "idle\n":
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    wal = inspect_wal(db)
    os.truncate(f"{db}-wal", WAL_HEADER_SIZE + (wal.last_commit_frame - 1) * wal.frame_size
                + 10)
    done = cli("doctor", "--db", str(db), "--json")
    assert done.exit_code == DOCTOR_PROBLEMS_EXIT, done.output
    report = json.loads(done.output)
    assert report["wal"]["committed_lost"] is True
    assert [f["kind"] for f in report["findings"] if not f["repaired"]] == ["wal"]
    # The store itself is sound: SQLite replayed what was intact.
    assert [f for f in report["findings"] if f["kind"] != "wal"] == []
