"""``statekeep indexes report|advise|apply`` through typer's CliRunner, on every
backend, reading the statistics an application process saved."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from statekeep import ContextInput, Store
from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.indexes import indexes_app
from statekeep.cli.shared import ConfigOption, DbOption
from statekeep.query import QueryOptimizer

runner = CliRunner()
app = typer.Typer(cls=_StatekeepGroup, no_args_is_help=True)


@app.callback()
def _root(db: DbOption = None, config: ConfigOption = None) -> None:
    """statekeep (test root)."""


app.add_typer(indexes_app, name="indexes")


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in (
                "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("COLUMNS", "200")


def json_sql(store: Store) -> str:
    if store.dialect == "postgresql":
        return "SELECT id FROM context WHERE context_value ->> 'path' = ?"
    return "SELECT id FROM context WHERE json_extract(context_value, '$.path') = ?"


@pytest.fixture
def recorded(make_store: Callable[..., Store], db_url: str) -> tuple[str, str]:
    """A store whose application ran a JSON-path filter 30 times and saved its
    statistics; returns (db, the statement)."""
    store = make_store()
    store.create_session("u", session_id="ses-cli")
    store.set_context_many("ses-cli", [ContextInput("file", f"k{i}", {"path": f"p{i}"})
                                       for i in range(1200)])
    if store.dialect == "postgresql":
        store.analyze()
    sql = json_sql(store)
    for i in range(30):
        with store.reading() as conn:
            conn.execute(sql, (f"p{i}",)).fetchall()
    assert QueryOptimizer(store).save_statistics() > 0
    return db_url, sql


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_report_advise_apply(recorded: tuple[str, str]) -> None:
    db, sql = recorded
    report = cli("indexes", "report", "--db", db, "--json", "--min-calls", "20")
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    [shape] = [s for s in data["shapes"] if s["shape"] == sql]
    assert shape["count"] == 30
    assert shape["verdict"] == "full scan of context (1,200 rows)"
    assert [s["name"] for s in data["indexes"]["suggested_indexes"]] == ["sk_context_j_path"]
    assert data["indexes"]["unused_indexes"]  # the schema has indexes this run never used

    advise = cli("indexes", "advise", "--db", db, "--min-calls", "20", "--json")
    assert advise.exit_code == 0, advise.output
    [advice] = json.loads(advise.output)
    assert advice["name"] == "sk_context_j_path" and advice["calls"] == 30
    assert "full scan of context" in advice["reason"]

    refused = cli("indexes", "apply", "--db", db, "--min-calls", "20")
    assert refused.exit_code == 1
    assert "error: creating indexes needs --yes" in refused.output

    unknown = cli("indexes", "apply", "sk_nope", "--db", db, "--min-calls", "20", "--yes")
    assert unknown.exit_code == 1
    assert "sk_nope" in unknown.output and "sk_context_j_path" in unknown.output

    applied = cli("indexes", "apply", "--db", db, "--min-calls", "20", "--yes", "--json")
    assert applied.exit_code == 0, applied.output
    [made] = json.loads(applied.output)
    assert made["created"] and made["name"] == "sk_context_j_path"

    after = cli("indexes", "report", "--db", db, "--min-calls", "20")
    assert after.exit_code == 0, after.output
    assert "uses sk_context_j_path" in after.output
    assert "sk_context_j_path" in after.output and "*" in after.output

    nothing = cli("indexes", "advise", "--db", db, "--min-calls", "20")
    assert nothing.exit_code == 0 and "no suggestions" in nothing.output


def test_advise_a_stated_statement(make_store: Callable[..., Store], db_url: str) -> None:
    store = make_store()
    store.create_session("u", session_id="ses-s")
    store.set_context_many("ses-s", [ContextInput("file", f"k{i}", {"language": "py"})
                                     for i in range(1100)])
    if store.dialect == "postgresql":
        store.analyze()
    sql = ("SELECT id FROM context WHERE context_value ->> 'language' = ?"
           if store.dialect == "postgresql" else
           "SELECT id FROM context WHERE json_extract(context_value, '$.language') = ?")
    result = cli("indexes", "advise", "--db", db_url, "--sql", sql)
    assert result.exit_code == 0, result.output
    assert "sk_context_j_language" in result.output and "CREATE INDEX" in result.output


def test_report_on_a_store_with_no_statistics(make_store: Callable[..., Store],
                                              db_url: str) -> None:
    make_store().close()
    result = cli("indexes", "report", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "Indexes" in result.output
