"""``statekeep metrics serve``: a real exporter process, scraped over HTTP.

The exporter runs as its own process on a port the OS picks (``--port 0``;
it prints the URL), is scraped with urllib and parsed with prometheus-client's
parser, exactly as Prometheus would. Writes made by this test process show up
in the exporter's store-wide figures, which it reads from the store at every
scrape.
"""

from __future__ import annotations

import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_scrape import Samples, family_names, parse_samples, value

from statekeep import StateConfig, StateSystem

HOST = Path(__file__).with_name("metrics_cli_host.py")
SEED_NAMES = {
    "state_query_latency_seconds", "state_write_latency_seconds", "state_cache_hit_rate",
    "state_memory_usage_bytes", "state_gc_duration_seconds", "state_recovery_time_seconds",
}


def _first_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The exporter's first stdout line, without hanging if it never comes."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    stderr = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    pytest.fail(f"the exporter printed no URL (exit {proc.poll()}): {stderr}")


@pytest.fixture
def exporter(db_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A running ``metrics serve`` on the test's store: (metrics URL, process)."""
    StateSystem(StateConfig(db=db_url, metrics=False)).close()  # the store exists
    proc = subprocess.Popen(
        [sys.executable, str(HOST), "metrics", "serve", "--port", "0", "--db", db_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc)
        found = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", line)
        assert found, line
        yield found.group(1), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text: str = response.read().decode()
    return text, parse_samples(text)


def test_scrape_shows_the_seed_metrics_and_moves_with_writes(
        exporter: tuple[str, subprocess.Popen[str]], db_url: str) -> None:
    url, proc = exporter
    text, first = scrape(url)
    assert family_names(text) >= SEED_NAMES
    assert value(first, "state_store_up") == 1
    assert value(first, "state_store_rows", table="sessions") == 0

    # Writes by another process (this one) ...
    with StateSystem(StateConfig(db=db_url, metrics=False)) as sk:
        for user in ("alice", "bob", "carol"):
            sk.create_session(user)
        sk.sync_state("planner", {"plan": 1})
        sk.sync_state("editor", {"plan": 2}, base_versions={"plan": 0},
                      strategy="last_write_wins")

    # ... move the exporter's store-wide counters at the next scrape.
    _, second = scrape(url)
    assert value(second, "state_store_changes_total") >= \
        value(first, "state_store_changes_total") + 5
    assert value(second, "state_store_rows", table="sessions") == 3
    assert value(second, "state_store_sync_conflicts_total", strategy="last_write_wins",
                 action="write") == 1
    # The exporter's own reads of the store are timed like any process's.
    assert value(second, "state_query_latency_seconds_count") > \
        value(first, "state_query_latency_seconds_count")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_a_taken_port_is_one_error_line(db_url: str) -> None:
    StateSystem(StateConfig(db=db_url, metrics=False)).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(HOST), "metrics", "serve", "--port", str(port),
             "--db", db_url], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in result.stderr
