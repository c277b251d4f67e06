"""A large sweep runs in small transactions beside a busy reader and writer (SQLite).

No timing is asserted (the project forbids it): the test holds the structure that
keeps waits short -- no sweep transaction deletes more than ``gc_batch_size`` rows,
each with its audit row -- and that the other thread makes progress all through
the sweep, reads and writes alike. The longest wait it saw is printed;
``bench/_gc_figures.py`` reports it against the 50 ms target on a million rows.
Here: 100,000 rows (``STATEKEEP_GC_TEST_ROWS`` to change), about ten seconds.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statekeep import StateConfig, open_store
from statekeep.gc import BatchStats, GarbageCollector

ROWS = int(os.environ.get("STATEKEEP_GC_TEST_ROWS", "100000"))

#: Expired items written straight into the table: a recursive CTE makes 100,000
#: in well under a second (through the store's API it would take a minute).
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


class Busy(threading.Thread):
    """Point reads, and a small write every tenth operation, as fast as it can."""

    def __init__(self, read: Callable[[], object], write: Callable[[int], object]) -> None:
        super().__init__(daemon=True)
        self.read, self.write = read, write
        self.reads = self.writes = 0
        self.longest = 0.0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                if i % 10 == 9:
                    self.write(i)
                    self.writes += 1
                else:
                    self.read()
                    self.reads += 1
                self.longest = max(self.longest, time.perf_counter() - started)
                i += 1
        except BaseException as exc:  # handed to the test thread
            self.error = exc


@pytest.mark.slow
def test_large_sweep_in_small_transactions_beside_a_busy_thread(
        tmp_path: Path, clock: Any) -> None:
    store = open_store(StateConfig(db=str(tmp_path / "gc.db"),
                                   archive_dir=str(tmp_path / "archive")), clock=clock)
    try:
        session = store.create_session("alice")
        live = store.set_context(session.id, "note", "live", {"n": 0})
        with store.atomic() as conn:
            conn.execute(FILL, (ROWS, session.id))
        store.sync_search()  # indexed, as written items are: the sweep un-indexes them

        busy = Busy(lambda: store.get_context_by_id(live.id),
                    lambda i: store.set_context(session.id, "note", f"w{i % 50}", {"i": i}))
        progress: list[tuple[BatchStats, int, int]] = []

        def on_batch(batch: BatchStats) -> None:
            progress.append((batch, busy.reads, busy.writes))

        busy.start()
        try:
            result = GarbageCollector(store).collect(force=True, on_batch=on_batch)
        finally:
            busy.stop.set()
            busy.join(timeout=30)
        if busy.error is not None:
            raise busy.error
        # Measured, not asserted (see the module docstring); shown with -s or -rA.
        print(f"longest wait of the busy thread: {busy.longest * 1000:.1f} ms; longest"
              f" sweep transaction: {max(b.seconds for b, _, _ in progress) * 1000:.1f} ms")

        batch_size = store.config.gc_batch_size
        assert result.statistics.kinds["context"].collected == ROWS
        assert all(b.rows <= batch_size and b.offered <= batch_size for b, _, _ in progress)
        assert sum(b.rows for b, _, _ in progress) == ROWS
        assert len(progress) >= math.ceil(ROWS / batch_size)
        # The other thread read and wrote all through the sweep: in every quarter
        # of the sweep's transactions both counts went up.
        quarter = len(progress) // 4
        for q in range(4):
            first, last = progress[q * quarter], progress[(q + 1) * quarter - 1]
            assert last[1] > first[1], f"no reads during quarter {q + 1}"
            assert last[2] > first[2], f"no writes during quarter {q + 1}"
        # One audit row per deleted row, and the index forgot them.
        with store.reading() as conn:
            audited = conn.execute(
                "SELECT COUNT(*) FROM audit_log WHERE event_type = 'delete'"
                " AND entity_type = 'context'").fetchone()[0]
            queued = conn.execute("SELECT COUNT(*) FROM context_fts_gone").fetchone()[0]
        assert audited == ROWS
        assert queued == 0
        assert [h.item.id for h in store.search_context("scratch value")] == []
    finally:
        store.close()
