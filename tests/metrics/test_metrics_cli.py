"""``statekeep stats``: the store-wide figures and this process's report, as a
table and as JSON, through typer's CliRunner on every backend."""

from __future__ import annotations

import json
from pathlib import Path

from metrics_cli_host import build
from typer.testing import CliRunner, Result

from statekeep import ContextInput, StateConfig, StateSystem

runner = CliRunner()
app = build()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def seed(db: str) -> None:
    with StateSystem(StateConfig(db=db, metrics=False)) as sk:
        session = sk.create_session("alice")
        sk.create_task(session.id, "build")
        sk.set_context_many(session.id, [ContextInput("note", f"k{i}", i) for i in range(4)])
        sk.sync_state("planner", {"plan": 1})
        sk.sync_state("editor", {"plan": 2}, base_versions={"plan": 0},
                      strategy="last_write_wins")


def test_stats_json(db_url: str) -> None:
    seed(db_url)
    result = cli("stats", "--json", "--probe", "25", "--db", db_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    store, process = data["store"], data["process"]
    assert store["rows"]["sessions"] == 1 and store["rows"]["context"] == 4
    assert store["changes_last_day"] >= 8
    assert store["write_throughput"] > 0
    assert store["conflicts_last_day"] == {"last_write_wins": {"write": 1}}
    assert process["probe_reads"] == 25
    assert process["queries"] >= 25  # the probe's point reads, timed by this process
    assert process["avg_query_latency"] > 0 and process["p95_query_latency"] > 0
    for field in ("avg_write_latency", "write_throughput", "cache_hit_rate", "cache_size_mb",
                  "memory_usage_mb", "memory_efficiency", "gc_frequency", "avg_gc_duration"):
        assert field in process


def test_stats_table(db_url: str) -> None:
    seed(db_url)
    result = cli("stats", "--db", db_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Store, all processes" in out and "This process" in out
    assert "last_write_wins: 1 write" in out
    assert "probe of 100 point reads" in out
    for figure in ("query latency", "write throughput", "cache hit rate", "memory usage",
                   "memory efficiency", "GC"):
        assert figure in out


def test_stats_without_probe_on_an_empty_store(db_url: str) -> None:
    StateSystem(StateConfig(db=db_url, metrics=False)).close()
    result = cli("stats", "--json", "--probe", "0", "--db", db_url)
    assert result.exit_code == 0, result.output
    process = json.loads(result.stdout)["process"]
    assert process["probe_reads"] == 0 and process["writes"] == 0


def test_stats_refuses_a_missing_store(tmp_path: Path) -> None:
    result = cli("stats", "--db", f"{tmp_path}/nothing-here.db")
    assert result.exit_code == 1
    assert "statekeep init" in result.stderr
