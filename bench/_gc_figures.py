"""Garbage-collection figures, run by ``bench/gc_metrics.py`` (``gc_figures(bench)``).

On a SQLite store holding a million expired, indexed context items (50,000
with ``--quick``), all collectable:

1. **gc sweep vs one raw DELETE** (info): ``GarbageCollector.collect`` against
   ``DELETE FROM context WHERE expires_at < ?`` of the same rows in one
   statement, each on its own copy of the same database. The two do different
   work on purpose -- the collector deletes in 500-row transactions, writes an
   audit row (the old item) per row, takes the rows out of the full-text index,
   and pauses between transactions so writers get in; the one statement does
   none of that and holds the write lock from start to end. The ratio is the
   price of those guarantees. Also (info) against the same raw DELETE cut into
   500-row transactions, which isolates the price of the audit and index work
   from that of batching.
2. **longest wait of a concurrent reader** (a note, target 50 ms): a separate
   process doing point reads and, every tenth operation, a small write, in a
   loop for the whole collection; its longest single operation is printed
   with ok/SHORT against the 50 ms target, with the longest sweep transaction.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from _harness import Bench, Run
from statekeep import StateConfig, Store, open_store
from statekeep.gc import GarbageCollector

__all__ = ["gc_figures"]

WAIT_TARGET_MS = 50.0
NOW = datetime(2030, 1, 1, tzinfo=UTC)

#: A million expired items in one statement (through the API it would take minutes).
FILL = """
INSERT INTO context (id, session_id, context_type, context_key, context_value,
    relevance_score, access_count, last_accessed, expires_at, created_at, updated_at)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
SELECT printf('ctx_gc%012d', i), ?, 'scratch', 'k' || i,
    '{"i": ' || i || ', "note": "scratch value number ' || i || '"}', 0.5, 0,
    '2029-11-01 00:00:00.000000',
    printf('2029-12-%02d %02d:%02d:%02d.000000', 1 + (i / 86400) % 28, (i / 3600) % 24,
           (i / 60) % 60, i % 60),
    '2029-11-01 00:00:00.000000', '2029-11-01 00:00:00.000000'
FROM n
"""

#: The concurrent reader: its own process (no shared GIL), its own connection.
READER = r"""
import json, os, sys, time
from array import array
from statekeep import StateConfig, open_store
db, item, session, ready, stop, out = sys.argv[1:7]
st = open_store(StateConfig(db=db, auto_migrate=False))
reads, writes, i = array("d"), array("d"), 0
open(ready, "w").close()
while not os.path.exists(stop):
    t0 = time.perf_counter()
    if i % 10 == 9:
        st.set_context(session, "note", f"w{i % 50}", {"i": i})
        writes.append(time.perf_counter() - t0)
    else:
        st.get_context_by_id(item)
        reads.append(time.perf_counter() - t0)
    i += 1
st.close()
both = sorted([*reads, *writes])
with open(out, "w") as fh:
    json.dump({"longest_ms": both[-1] * 1000, "ops": len(both),
               "p999_ms": both[int(len(both) * 0.999)] * 1000,
               "longest_read_ms": max(reads) * 1000, "longest_write_ms": max(writes) * 1000,
               "over_50ms": sum(1 for x in both if x > 0.05)}, fh)
"""


def _clock() -> datetime:
    return NOW


def _template(folder: Path, n: int) -> tuple[Path, str, str]:
    """A store with ``n`` expired, indexed items and one live item, checkpointed into
    one file; returns its path, the session id and the live item's id."""
    path = folder / "template.db"
    store = open_store(StateConfig(db=str(path)), clock=_clock)
    try:
        session = store.create_session("bench")
        live = store.set_context(session.id, "note", "live", {"n": 0})
        with store.atomic() as conn:
            conn.execute(FILL, (n, session.id))
        store.sync_search()  # indexed, as written items are
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, session.id, live.id


def _copy(stack: ExitStack, template: Path) -> Path:
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-bench-gc-")))
    target = folder / "gc.db"
    shutil.copyfile(template, target)
    return target


def _open(stack: ExitStack, path: Path) -> Store:
    store = open_store(StateConfig(db=str(path), archive_dir=str(path.parent / "archive")),
                       clock=_clock)
    stack.callback(store.close)
    return store


def _raw(stack: ExitStack, path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    stack.callback(conn.close)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def gc_figures(bench: Bench) -> None:
    """GC throughput beside raw deletes, and a concurrent reader's longest wait."""
    name = "gc sweep: expired items vs one raw DELETE"
    batched = "gc sweep vs raw DELETE in 500-row transactions"
    wait = "gc: longest wait of a concurrent reader"
    if not any(bench.wants(x) for x in (name, batched, wait)):
        return
    n = bench.size(1_000_000, 50_000)
    cutoff = "2030-01-01 00:00:00.000000"
    with tempfile.TemporaryDirectory(prefix="sk-bench-gc-") as tmp:
        started = time.perf_counter()
        template, session_id, live_id = _template(Path(tmp), n)
        bench.note(f"gc: {n:,} expired, indexed items written and indexed in"
                   f" {time.perf_counter() - started:.1f} s"
                   f" ({template.stat().st_size / 1e6:.0f} MB)")

        def ours(stack: ExitStack) -> Run:
            store = _open(stack, _copy(stack, template))
            collector = GarbageCollector(store)

            def run() -> int:
                result = collector.collect(force=True)
                if result.items_collected != n:
                    raise RuntimeError(f"collected {result.items_collected}, not {n}")
                return n
            return run

        def one_delete(stack: ExitStack) -> Run:
            conn = _raw(stack, _copy(stack, template))

            def run() -> int:
                conn.execute("BEGIN IMMEDIATE")
                count = conn.execute("DELETE FROM context WHERE expires_at < ?",
                                     (cutoff,)).rowcount
                conn.execute("COMMIT")
                return int(count)
            return run

        def batched_delete(stack: ExitStack) -> Run:
            conn = _raw(stack, _copy(stack, template))

            def run() -> int:
                total = 0
                while True:
                    conn.execute("BEGIN IMMEDIATE")
                    count = conn.execute(
                        "DELETE FROM context WHERE rowid IN (SELECT rowid FROM context"
                        " WHERE expires_at < ? ORDER BY expires_at LIMIT 500)",
                        (cutoff,)).rowcount
                    conn.execute("COMMIT")
                    total += count
                    if count < 500:
                        return total
            return run

        rounds = 1 if bench.quick else bench.rounds_for(1)
        if bench.wants(name) or bench.wants(batched):
            bench.measure(name, ours, one_delete, target=None, rounds=rounds, warmup=0,
                          ops={"items": n}, extra={batched: batched_delete},
                          note="ours: 500-row transactions, an audit row per item, index"
                               " upkeep, pauses for writers; baseline: one statement")
        if bench.wants(wait) and not bench.profiling:
            _reader_wait(bench, template, session_id, live_id, n, wait)


def _reader_wait(bench: Bench, template: Path, session_id: str, live_id: str, n: int,
                 label: str) -> None:
    with ExitStack() as stack:
        path = _copy(stack, template)
        store = _open(stack, path)
        folder = path.parent
        ready, stop, out = folder / "ready", folder / "stop", folder / "reader.json"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(path), live_id, session_id, str(ready),
             str(stop), str(out)])
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if reader.poll() is not None or time.monotonic() > deadline:
                    bench.skip(label, "the reader process did not start")
                    return
                time.sleep(0.01)
            started = time.perf_counter()
            result = GarbageCollector(store).collect(force=True)
            seconds = time.perf_counter() - started
        finally:
            stop.touch()
            reader.wait(timeout=60)
        doc = json.loads(out.read_text())
    stats = result.statistics
    longest_tx = max((b.seconds for b in stats.batches), default=0.0) * 1000
    status = "ok" if doc["longest_ms"] <= WAIT_TARGET_MS else "SHORT"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    bench.note(f"{label}: {doc['longest_ms']:.1f} ms (reads {doc['longest_read_ms']:.1f},"
               f" writes {doc['longest_write_ms']:.1f}; 99.9th percentile"
               f" {doc['p999_ms']:.2f} ms; {doc['over_50ms']} of {doc['ops']:,} operations"
               f" over 50 ms) while collecting {n:,} items in {seconds:.1f} s"
               f" ({n / seconds:,.0f} items/s with the reader); target <= {WAIT_TARGET_MS:g}"
               f" ms: {status}. {len(stats.batches)} sweep transactions, largest"
               f" {stats.largest_batch} rows, longest {longest_tx:.1f} ms;"
               f" load average {load} on {os.cpu_count()} cpus")
