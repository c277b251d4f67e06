"""The ``statekeep`` command line, end to end.

The key paths run the real program in a subprocess (``python -m statekeep.cli``),
exactly as a shell would: a value written by one process and read by another,
JSON that parses, a user error that is one line and exit 1, a dry run that
changes nothing. The rest goes through typer's ``CliRunner``, which runs the
same command tree -- including the one place errors are translated -- in-process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from statekeep import MigrationRegistry, StateConfig, StateSystem, __version__
from statekeep.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
runner = CliRunner()


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No STATEKEEP_* settings or colour forcing from the caller; private user dirs.

    Subprocesses inherit this environment, so the default store and config
    file of every run live under tmp_path, never in the real home folder.
    """
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in (
                "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The real program, in its own process, with stdout and stderr as pipes."""
    return subprocess.run([sys.executable, "-m", "statekeep.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@dataclass
class Seeded:
    db: str
    session: str
    other_session: str
    root: str
    child: str
    grandchild: str
    failed: str


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    """A store with two sessions, a three-level task tree, context and a decision."""
    db = str(tmp_path / "store.db")
    with StateSystem(StateConfig(db=db)) as sk:
        s = sk.create_session("alice", metadata={"goal": "ship"})
        root = sk.create_task(s.id, "refactor", description="split the parser", priority=8)
        child = sk.create_task(s.id, "implement", description="extract the lexer",
                               parent_task_id=root.id, parameters={"file": "lexer.py"})
        grandchild = sk.create_task(s.id, "test", description="run lexer tests",
                                    parent_task_id=child.id)
        failed = sk.create_task(s.id, "deploy", description="push to staging",
                                parent_task_id=root.id)
        sk.start_task(root.id)
        sk.start_task(child.id)
        sk.complete_task(child.id, {"lines_moved": 312})
        sk.start_task(failed.id)
        sk.fail_task(failed.id, {"reason": "staging is down"})
        sk.set_context(s.id, "file", "src/parser.py", {"lines": 812})
        sk.set_context(s.id, "note", "plan", "lexer first")
        sk.record_decision("approach", "lexer first", session_id=s.id, task_id=root.id,
                           confidence=0.8)
        other = sk.create_session("bob", status="paused")
    yield Seeded(db, s.id, other.id, root.id, child.id, grandchild.id, failed.id)


ALL_MIGRATIONS = [f"{m.version:04d}_{m.name}" for m in MigrationRegistry("sqlite").all()]
LATEST = MigrationRegistry("sqlite").latest


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the key paths, as real processes ------------------------------------------------


def test_init_then_set_and_get_in_separate_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "nested" / "agent.db")
    init = run("init", "--db", db)
    assert init.returncode == 0, init.stderr
    latest = MigrationRegistry("sqlite").latest
    assert db in init.stdout and f"schema version {latest}" in init.stdout
    with StateSystem(StateConfig(db=db)) as sk:
        session = sk.create_session("alice").id

    wrote = run("context", "set", session, "note", "plan", '{"steps": ["read", "write"]}',
                "--db", db)
    assert wrote.returncode == 0, wrote.stderr
    assert "created note/plan" in wrote.stdout

    read = run("context", "get", session, "note", "plan", "--db", db)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == {"steps": ["read", "write"]}

    as_text = run("--db", db, "context", "set", session, "note", "mood", "not json", "--string")
    assert as_text.returncode == 0, as_text.stderr
    item = json.loads(run("context", "get", session, "note", "mood", "--json", "--db", db).stdout)
    assert item["context_value"] == "not json" and item["context_key"] == "mood"


def test_json_output_parses(seeded: Seeded) -> None:
    db = seeded.db
    page = json.loads(run("sessions", "list", "--json", "--db", db).stdout)
    assert {s["id"] for s in page["items"]} == {seeded.session, seeded.other_session}
    assert page["next_cursor"] is None

    shown = json.loads(run("sessions", "show", seeded.session, "--json", "--db", db).stdout)
    assert shown["session"]["user_id"] == "alice"
    assert shown["context_count"] == 2 and shown["decision_count"] == 1
    (root,) = shown["tasks"]
    assert root["id"] == seeded.root
    assert {c["id"] for c in root["children"]} == {seeded.child, seeded.failed}

    for args in (["tasks", "list", seeded.session], ["tasks", "show", seeded.child],
                 ["context", "list", seeded.session], ["audit"], ["migrate", "status"],
                 ["version"], ["init"]):
        done = run(*args, "--json", "--db", db)
        assert done.returncode == 0, (args, done.stderr)
        assert "\x1b" not in done.stdout
        json.loads(done.stdout)


def test_user_error_is_one_red_line_and_exit_1(seeded: Seeded, tmp_path: Path) -> None:
    missing = run("sessions", "show", "ses_nope", "--db", seeded.db)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert one_error_line(missing.stderr) == "error: session 'ses_nope' not found"

    bad_json = run("context", "set", seeded.session, "note", "x", "{oops", "--db", seeded.db)
    assert bad_json.returncode == 1
    assert "--string" in one_error_line(bad_json.stderr)

    bad_status = run("sessions", "list", "--status", "sleeping", "--db", seeded.db)
    assert bad_status.returncode == 1
    assert "sleeping" in one_error_line(bad_status.stderr)

    no_store = run("sessions", "list", "--db", str(tmp_path / "typo.db"))
    assert no_store.returncode == 1
    assert "statekeep init" in one_error_line(no_store.stderr)
    assert not (tmp_path / "typo.db").exists()


def test_usage_error_exits_2_without_traceback(seeded: Seeded) -> None:
    done = run("sessions", "list", "--limit", "lots", "--db", seeded.db)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "--limit" in done.stderr


def test_migrate_dry_run_changes_nothing(tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    done = run("migrate", "--dry-run", "--db", str(absent))
    assert done.returncode == 0, done.stderr
    assert "initial" in done.stdout and "nothing was changed" in done.stdout
    assert not absent.exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    done = run("migrate", "--dry-run", "--db", str(empty), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["dry_run"] is True and result["completed_migrations"] == ALL_MIGRATIONS
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()


def test_migrate_then_status_in_a_pipe(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    db.touch()  # a database with nothing applied yet
    before = run("migrate", "status", "--db", str(db), "--json")
    assert json.loads(before.stdout)["current_version"] == 0

    done = run("migrate", "--db", str(db))
    assert done.returncode == 0, done.stderr
    latest = MigrationRegistry("sqlite").latest
    assert f"schema now at version {latest}" in done.stdout
    # Not a terminal: no colour, no progress bar, no carriage-return redraws.
    assert "\x1b" not in done.stdout + done.stderr
    assert "━" not in done.stdout and "\r" not in done.stdout

    status = run("migrate", "status", "--db", str(db))
    assert status.returncode == 0, status.stderr
    assert "initial" in status.stdout and "ok" in status.stdout
    assert f"schema version {latest} of {latest}" in status.stdout
    rows = json.loads(run("migrate", "status", "--db", str(db), "--json").stdout)["migrations"]
    assert rows[0]["version"] == 1 and rows[0]["checksum_ok"] is True
    assert rows[0]["applied_at"]


# -- choosing the store -------------------------------------------------------------


def test_db_option_before_or_after_the_command(seeded: Seeded) -> None:
    before = cli("--db", seeded.db, "sessions", "list", "--json")
    after = cli("sessions", "list", "--json", "--db", seeded.db)
    assert before.exit_code == after.exit_code == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)


def test_inner_db_option_wins(seeded: Seeded, tmp_path: Path) -> None:
    done = cli("--db", str(tmp_path / "nowhere.db"), "sessions", "list", "--db", seeded.db)
    assert done.exit_code == 0, done.stderr


def test_statekeep_db_env_and_config_file(seeded: Seeded, tmp_path: Path) -> None:
    by_env = cli("sessions", "list", "--json", env={"STATEKEEP_DB": seeded.db})
    assert by_env.exit_code == 0, by_env.stderr
    assert len(json.loads(by_env.stdout)["items"]) == 2

    config = tmp_path / "statekeep.toml"
    config.write_text(f"[statekeep]\ndb = {json.dumps(seeded.db)}\n")
    by_file = cli("sessions", "list", "--json", "--config", str(config))
    assert by_file.exit_code == 0, by_file.stderr
    by_env_file = cli("sessions", "list", "--json", env={"STATEKEEP_CONFIG": str(config)})
    assert by_env_file.exit_code == 0, by_env_file.stderr

    # --db beats the environment, which beats the file.
    override = cli("sessions", "list", "--db", str(tmp_path / "other.db"),
                   env={"STATEKEEP_DB": seeded.db})
    assert override.exit_code == 1 and "other.db" in override.stderr


def test_default_store_is_the_user_data_file(tmp_path: Path) -> None:
    done = cli("init")
    assert done.exit_code == 0, done.stderr
    expected = tmp_path / "xdg-data" / "statekeep" / "statekeep.db"
    assert expected.exists()
    assert str(expected) in done.stdout
    assert str(expected) in cli("version").stdout


def test_bad_config_is_a_user_error(tmp_path: Path) -> None:
    done = cli("sessions", "list", "--config", str(tmp_path / "missing.toml"))
    assert done.exit_code == 1
    assert "does not exist" in one_error_line(done.stderr)
    bad_env = cli("sessions", "list", env={"STATEKEEP_BUSY_TIMEOUT_MS": "soon"})
    assert bad_env.exit_code == 1
    one_error_line(bad_env.stderr)


# -- sessions -----------------------------------------------------------------------


def test_sessions_list_table_and_filters(seeded: Seeded) -> None:
    table = cli("sessions", "list", "--db", seeded.db)
    assert table.exit_code == 0, table.stderr
    assert seeded.session in table.stdout and seeded.other_session in table.stdout
    assert "Sessions" in table.stdout and "alice" in table.stdout

    alice = cli("sessions", "list", "--user", "alice", "--db", seeded.db)
    assert seeded.session in alice.stdout and seeded.other_session not in alice.stdout
    paused = cli("sessions", "list", "--status", "paused", "--db", seeded.db)
    assert seeded.other_session in paused.stdout and seeded.session not in paused.stdout
    nobody = cli("sessions", "list", "--user", "carol", "--db", seeded.db)
    assert nobody.exit_code == 0 and "No sessions match" in nobody.stdout


def test_sessions_list_pages_with_a_cursor(tmp_path: Path) -> None:
    db = str(tmp_path / "many.db")
    with StateSystem(StateConfig(db=db)) as sk:
        ids = {sk.create_session("alice").id for _ in range(5)}
    seen: set[str] = set()
    first = cli("sessions", "list", "--limit", "2", "--db", db)
    assert "next cursor:" in first.stdout
    cursor: str | None = None
    while True:
        args = ["sessions", "list", "--limit", "2", "--json", "--db", db]
        page = json.loads(cli(*args, *(["--cursor", cursor] if cursor else [])).stdout)
        seen |= {s["id"] for s in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    bad = cli("sessions", "list", "--cursor", "garbage!", "--db", db)
    assert bad.exit_code == 1 and "cursor" in one_error_line(bad.stderr)


def test_sessions_show_draws_the_task_tree(seeded: Seeded) -> None:
    done = cli("sessions", "show", seeded.session, "--db", seeded.db)
    assert done.exit_code == 0, done.stderr
    out = done.stdout
    for text in ("split the parser", "extract the lexer", "run lexer tests", "push to staging",
                 "context items", "└──", '{"lines_moved":312}'):
        assert text in out, text
    # Tree order follows depth: the grandchild is drawn under its parent.
    assert out.index("extract the lexer") < out.index("run lexer tests")


# -- tasks --------------------------------------------------------------------------


def test_tasks_list_filters(seeded: Seeded) -> None:
    everything = cli("tasks", "list", seeded.session, "--db", seeded.db)
    assert everything.exit_code == 0, everything.stderr
    for tid in (seeded.root, seeded.child, seeded.grandchild, seeded.failed):
        assert tid in everything.stdout
    failed = json.loads(cli("tasks", "list", seeded.session, "--status", "failed", "--json",
                            "--db", seeded.db).stdout)
    assert [t["id"] for t in failed] == [seeded.failed]
    tests = json.loads(cli("tasks", "list", seeded.session, "--type", "test", "--json",
                           "--db", seeded.db).stdout)
    assert [t["id"] for t in tests] == [seeded.grandchild]
    none = cli("tasks", "list", seeded.session, "--type", "docs", "--db", seeded.db)
    assert none.exit_code == 0 and "No tasks match" in none.stdout
    unknown = cli("tasks", "list", "ses_nope", "--db", seeded.db)
    assert unknown.exit_code == 1 and "not found" in unknown.stderr


def test_tasks_show_full_detail_with_subtree(seeded: Seeded) -> None:
    done = cli("tasks", "show", seeded.child, "--db", seeded.db)
    assert done.exit_code == 0, done.stderr
    for text in ("extract the lexer", "lexer.py", "lines_moved", "completed", "run lexer tests"):
        assert text in done.stdout, text
    failed = cli("tasks", "show", seeded.failed, "--db", seeded.db)
    assert "staging is down" in failed.stdout
    as_json = json.loads(cli("tasks", "show", seeded.child, "--json", "--db", seeded.db).stdout)
    assert as_json["result"] == {"lines_moved": 312}
    assert [c["id"] for c in as_json["children"]] == [seeded.grandchild]


# -- context ------------------------------------------------------------------------


def test_context_list_and_type_filter(seeded: Seeded) -> None:
    done = cli("context", "list", seeded.session, "--db", seeded.db)
    assert done.exit_code == 0, done.stderr
    assert "src/parser.py" in done.stdout and "plan" in done.stdout
    files = json.loads(cli("context", "list", seeded.session, "--type", "file", "--json",
                           "--db", seeded.db).stdout)
    assert [c["context_key"] for c in files] == ["src/parser.py"]


def test_context_set_ttl_string_and_update(seeded: Seeded) -> None:
    sid, db = seeded.session, seeded.db
    first = cli("context", "set", sid, "env", "python", "3.12", "--db", db)
    assert first.exit_code == 0, first.stderr
    assert json.loads(cli("context", "get", sid, "env", "python", "--db", db).stdout) == 3.12
    text = cli("context", "set", sid, "env", "python", "3.12", "--string", "--ttl", "600",
               "--db", db)
    assert text.exit_code == 0 and "updated env/python" in text.stdout
    assert "expires" in text.stdout
    item = json.loads(cli("context", "get", sid, "env", "python", "--json", "--db", db).stdout)
    assert item["context_value"] == "3.12" and item["expires_at"] is not None

    bad_ttl = cli("context", "set", sid, "env", "x", "1", "--ttl", "-5", "--db", db)
    assert bad_ttl.exit_code == 1 and "ttl" in one_error_line(bad_ttl.stderr)


def test_context_get_missing_item(seeded: Seeded) -> None:
    done = cli("context", "get", seeded.session, "note", "nope", "--db", seeded.db)
    assert done.exit_code == 1
    assert one_error_line(done.stderr) == "error: context item 'note/nope' not found"
    no_session = cli("context", "get", "ses_nope", "note", "plan", "--db", seeded.db)
    assert "session 'ses_nope' not found" in one_error_line(no_session.stderr)


def test_user_text_is_not_rich_markup(seeded: Seeded) -> None:
    key = "[bold red]sneaky[/bold red]"
    assert cli("context", "set", seeded.session, "note", key, '"[b]v[/b]"',
               "--db", seeded.db).exit_code == 0
    done = cli("context", "list", seeded.session, "--db", seeded.db)
    assert key in done.stdout and "[b]v[/b]" in done.stdout


# -- audit --------------------------------------------------------------------------


def test_audit_filters_and_paging(seeded: Seeded) -> None:
    everything = json.loads(cli("audit", "--json", "--db", seeded.db).stdout)
    assert everything and [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    tasks = json.loads(cli("audit", "--entity-type", "task", "--json", "--db", seeded.db).stdout)
    assert tasks and all(e["entity_type"] == "task" for e in tasks)
    one = json.loads(cli("audit", "--entity-id", seeded.failed, "--json",
                         "--db", seeded.db).stdout)
    assert [e["event_type"] for e in one] == ["create", "transition", "transition"]
    bob = json.loads(cli("audit", "--session", seeded.other_session, "--json",
                         "--db", seeded.db).stdout)
    assert [e["entity_id"] for e in bob] == [seeded.other_session]

    table = cli("audit", "--limit", "3", "--db", seeded.db)
    assert table.exit_code == 0 and "Audit log" in table.stdout
    assert f"--after {everything[2]['id']}" in table.stdout
    rest = json.loads(cli("audit", "--after", str(everything[2]["id"]), "--json",
                          "--db", seeded.db).stdout)
    assert rest == everything[3:]


# -- migrate, init, version -----------------------------------------------------------


def test_migrate_is_a_no_op_when_current(seeded: Seeded) -> None:
    done = cli("migrate", "--db", seeded.db)
    assert done.exit_code == 0 and "Nothing to do" in done.stdout
    dry = cli("migrate", "--dry-run", "--db", seeded.db)
    assert dry.exit_code == 0 and "Nothing to do" in dry.stdout


def test_migrate_status_db_given_to_the_group(seeded: Seeded) -> None:
    done = cli("migrate", "--db", seeded.db, "status", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["current_version"] == LATEST


def test_migrate_status_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    done = cli("migrate", "status", "--db", str(tmp_path / "absent.db"))
    assert done.exit_code == 0, done.stderr
    assert "pending" in done.stdout and "does not exist yet" in done.stdout
    assert not (tmp_path / "absent.db").exists()


def test_migrate_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    piped, forced = tmp_path / "piped.db", tmp_path / "forced.db"
    piped.touch()
    forced.touch()
    plain = cli("migrate", "--db", str(piped))
    assert plain.exit_code == 0 and "━" not in plain.stdout and "\x1b" not in plain.stdout
    # FORCE_COLOR makes rich treat the stream as a terminal: now the bar shows.
    fancy = cli("migrate", "--db", str(forced), env={"FORCE_COLOR": "1"})
    assert fancy.exit_code == 0, fancy.stderr
    assert "━" in fancy.stdout and "\x1b[" in fancy.stdout


def test_init_is_idempotent(tmp_path: Path) -> None:
    db = str(tmp_path / "a" / "b" / "store.db")
    first = json.loads(cli("init", "--db", db, "--json").stdout)
    assert first["applied"] == ALL_MIGRATIONS and first["schema_version"] == LATEST
    again = cli("init", "--db", db)
    assert again.exit_code == 0 and "already up to date" in again.stdout


def test_version(tmp_path: Path) -> None:
    done = cli("version")
    assert done.exit_code == 0 and __version__ in done.stdout
    info = json.loads(cli("version", "--json", "--db", str(tmp_path / "x.db")).stdout)
    assert info["statekeep"] == __version__ and info["store"].endswith("x.db")
    assert not (tmp_path / "x.db").exists()


def test_no_arguments_shows_help() -> None:
    done = cli()
    assert "sessions" in done.output and "migrate" in done.output


# -- every command is documented ------------------------------------------------------


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(prefix)
        return
    if prefix and getattr(command, "invoke_without_command", False):
        yield " ".join(prefix)  # a group that is itself a command, like `migrate`
    for name, sub in subcommands.items():
        if not getattr(sub, "hidden", False):
            yield from _command_paths(sub, (*prefix, name))


def test_every_command_is_documented() -> None:
    paths = sorted(_command_paths(get_command(app)))
    assert {"init", "sessions list", "migrate", "migrate status", "demo"} <= set(paths)
    text = DOCS.read_text()
    undocumented = [p for p in paths if f"### `statekeep {p}`" not in text]
    assert not undocumented, f"add these to docs/cli.md: {undocumented}"
