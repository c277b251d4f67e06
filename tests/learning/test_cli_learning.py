"""``statekeep decisions`` and ``statekeep prefs`` through typer's CliRunner.

The sub-apps are mounted on a throwaway root built like the real one (same
group class, so a StatekeepError is one ``error:`` line and exit 1), which
keeps these tests independent of where cli/app.py mounts them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from statekeep import StateConfig, StateSystem
from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.learning import decisions_app, prefs_app
from statekeep.learning import DecisionEngine

app = typer.Typer(cls=_StatekeepGroup, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(decisions_app, name="decisions")
app.add_typer(prefs_app, name="prefs")
runner = CliRunner()


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No STATEKEEP_* settings from the caller; private user folders."""
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in ("FORCE_COLOR", "NO_COLOR", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


@dataclass
class Seeded:
    db: str
    session: str
    accepted: str
    overridden: str
    lonely: str


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    db = str(tmp_path / "store.db")
    with StateSystem(StateConfig(db=db)) as sk:
        engine = DecisionEngine(sk.store)
        s = sk.create_session("alice")
        a = engine.record("formatter", "black", context={"lang": "py", "ci": True},
                          session_id=s.id, confidence=0.7, reasoning={"why": "house style"})
        engine.accept(a.id, outcome="formatted 12 files")
        o = engine.record("formatter", "black", context={"lang": "py", "ci": False},
                          session_id=s.id)
        engine.override(o.id, "ruff format", feedback=-0.5)
        lonely = engine.record("deploy", "staging first")
        engine.set_preference("alice", "style", "indent", 4)
    yield Seeded(db, s.id, a.id, o.id, lonely.id)


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- decisions ---------------------------------------------------------------------------


def test_decisions_list(seeded: Seeded) -> None:
    result = cli("decisions", "list", "--db", seeded.db)
    assert result.exit_code == 0, result.output
    for text in (seeded.accepted, seeded.overridden, seeded.lonely, "black",
                 "formatted 12 files", "user override", "-0.50"):
        assert text in result.stdout
    data = json.loads(cli("decisions", "list", "--db", seeded.db, "--json").stdout)
    assert [d["id"] for d in data] == [seeded.lonely, seeded.overridden, seeded.accepted]
    data = json.loads(cli("decisions", "list", "--session", seeded.session, "--type",
                          "formatter", "--limit", "1", "--json", "--db", seeded.db).stdout)
    assert [d["id"] for d in data] == [seeded.overridden]
    assert data[0]["context"] == {"lang": "py", "ci": False}
    empty = cli("decisions", "list", "--type", "nothing", "--db", seeded.db)
    assert empty.exit_code == 0 and "No decisions match." in empty.stdout


def test_decisions_show_with_similar(seeded: Seeded) -> None:
    result = cli("decisions", "show", seeded.overridden, "--db", seeded.db)
    assert result.exit_code == 0, result.output
    for text in (seeded.overridden, "alice", "overridden: ruff format", "Similar past",
                 seeded.accepted, "0.33"):
        assert text in result.stdout
    data = json.loads(cli("decisions", "show", seeded.accepted, "--json", "--db",
                          seeded.db).stdout)
    assert data["decision"]["id"] == seeded.accepted
    assert data["decision"]["reasoning"] == {"why": "house style"}
    assert data["user_id"] == "alice"
    (similar,) = data["similar"]
    assert similar["decision"]["id"] == seeded.overridden
    assert similar["similarity"] == pytest.approx(1 / 3) and similar["exact"] is False
    lonely = cli("decisions", "show", seeded.lonely, "--db", seeded.db)
    assert lonely.exit_code == 0 and "No similar past decisions." in lonely.stdout


@pytest.mark.parametrize("args", [
    ("decisions", "show", "dec_missing"),
    ("decisions", "show", "no spaces allowed"),
    ("decisions", "list", "--session", "ses_missing"),
    ("decisions", "list", "--limit", "0"),
    ("decisions", "list", "--type", "9bad"),
])
def test_decisions_bad_input(seeded: Seeded, args: tuple[str, ...]) -> None:
    one_error_line(cli(*args, "--db", seeded.db))


# -- preferences ---------------------------------------------------------------------


def test_prefs_list(seeded: Seeded) -> None:
    result = cli("prefs", "list", "alice", "--db", seeded.db)
    assert result.exit_code == 0, result.output
    for text in ("formatter", "ruff format", "indent", "0.86"):
        assert text in result.stdout
    data = json.loads(cli("prefs", "list", "alice", "--type", "decision", "--json", "--db",
                          seeded.db).stdout)
    (pref,) = data
    # accepted "black" (1 for), then overridden with "ruff format" (3 against): flipped.
    assert (pref["preference_key"], pref["preference_value"]) == ("formatter", "ruff format")
    assert (pref["evidence_for"], pref["evidence_against"]) == pytest.approx((4.0, 2.0))
    assert pref["observation_count"] == 2
    assert "No preferences match." in cli("prefs", "list", "bob", "--db", seeded.db).stdout


def test_prefs_set_and_forget(seeded: Seeded) -> None:
    result = cli("prefs", "set", "alice", "style", "quotes", '"double"', "--db", seeded.db)
    assert result.exit_code == 0, result.output
    assert "style/quotes" in result.stdout and "0.86" in result.stdout
    data = json.loads(cli("prefs", "set", "alice", "style", "quotes", "single", "--string",
                          "--json", "--db", seeded.db).stdout)
    assert data["preference_value"] == "single" and data["observation_count"] == 2
    data = json.loads(cli("prefs", "set", "alice", "autonomy", "deploy", "true", "--json",
                          "--db", seeded.db).stdout)
    assert data["preference_value"] is True
    result = cli("prefs", "forget", "alice", "style", "quotes", "--db", seeded.db)
    assert result.exit_code == 0 and "forgot" in result.stdout
    with StateSystem(StateConfig(db=seeded.db)) as sk:
        assert sk.get_preference("alice", "style", "quotes") is None
        assert sk.get_preference("alice", "style", "indent") is not None
    data = json.loads(cli("prefs", "forget", "alice", "style", "indent", "--json", "--db",
                          seeded.db).stdout)
    assert data["forgotten"] is True


@pytest.mark.parametrize("args", [
    ("prefs", "forget", "alice", "style", "quotes"),  # there is none
    ("prefs", "set", "alice", "style", "quotes", "not json"),
    ("prefs", "set", "al ice", "style", "quotes", "1"),
    ("prefs", "set", "alice", "9style", "quotes", "1"),
    ("prefs", "set", "alice", "autonomy", "deploy", '"yes"'),
    ("prefs", "list", "not a user!"),
])
def test_prefs_bad_input_changes_nothing(seeded: Seeded, args: tuple[str, ...]) -> None:
    with StateSystem(StateConfig(db=seeded.db)) as sk:
        before = sk.store.dump()
    one_error_line(cli(*args, "--db", seeded.db))
    with StateSystem(StateConfig(db=seeded.db)) as sk:
        assert sk.store.dump() == before


def test_a_missing_store_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    assert "statekeep init" in one_error_line(cli("prefs", "list", "alice", "--db", str(db)))
    assert not db.exists()
