"""Store-wide figures: what every process did to the store, read from the store.

A process's own metrics (:mod:`statekeep.metrics.registry`) see only its own
calls. ``statekeep stats`` has just started and ``statekeep metrics serve``
makes no writes, so both read the store itself: row counts, size, and the
audit log -- every committed change writes one audit row in its transaction,
so the log's position is a store-wide write counter, its timestamps give the
write rate, and its sync rows say which strategy settled each conflict.

The queries are indexed (``audit_log`` by id and by timestamp); row counts
are exact ``COUNT(*)``, which on SQLite reads a table's smallest index
(milliseconds per million rows). Nothing here runs on a hot path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from statekeep.errors import StatekeepError
from statekeep.memory.warm import WarmTier
from statekeep.store import Store
from statekeep.store.base import Connection

__all__ = [
    "GC_LAST_RUN_KEY",
    "ROW_TABLES",
    "StoreCollector",
    "StoreFigures",
    "read_store_figures",
]

log = logging.getLogger("statekeep.metrics")

#: Tables whose row counts are reported: the state an agent keeps, not bookkeeping.
ROW_TABLES: Final = ("sessions", "tasks", "context", "context_relations", "decisions",
                     "user_preferences", "memory_entries", "content_blobs", "sync_state",
                     "state_snapshots", "recovery_points", "archive_index")
#: Where :mod:`statekeep.gc` records the last collection in ``statekeep_meta``
#: (``gc.collector.LAST_RUN_KEY``; not imported, so metrics do not load the GC).
GC_LAST_RUN_KEY: Final = "gc_last_run"
_SYNC_KINDS: Final = "('sync', 'sync_resolution', 'sync_conflict')"


def _dialect_sql(store: Store) -> dict[str, str]:
    """JSON access and index steering per dialect.

    On SQLite, ``+entity_type`` keeps the planner off the (entity_type,
    entity_id) index, which would visit every sync row ever written; the id or
    timestamp range is the narrow one.
    """
    if store.dialect == "sqlite":
        return {
            "kind": "+entity_type",
            "strategy": "json_extract(change_metadata, '$.strategy')",
            "has_conflict": "json_type(change_metadata, '$.conflict') IS NOT NULL",
            "of_person": "json_type(change_metadata, '$.conflict_id') IS NOT NULL",
            "gc_run": "json_extract(change_metadata, '$.gc')",
        }
    return {
        "kind": "entity_type",
        "strategy": "change_metadata->>'strategy'",
        "has_conflict": "(change_metadata->'conflict') IS NOT NULL",
        "of_person": "(change_metadata->'conflict_id') IS NOT NULL",
        "gc_run": "change_metadata->>'gc'",
    }


def _conflict_outcome(entity: str, event: str, strategy: str | None, has_conflict: Any,
                      of_person: Any) -> tuple[str, str] | None:
    """(strategy, action) of one sync audit row that records a conflict, else None.

    The same outcomes :meth:`StateMetrics.record_sync` counts from a
    SyncResult: ``write``/``keep`` for a conflict a strategy settled,
    ``pending`` for one left to a person, ``resolved`` for the person's
    decision. A ``sync`` row carrying ``conflict_id`` is the write a person's
    decision made, already counted by its ``resolve`` row.
    """
    if entity == "sync":
        if strategy and has_conflict and not of_person:
            return strategy, "write"
        return None
    if entity == "sync_resolution":
        return strategy or "unknown", "keep"
    if entity == "sync_conflict":
        if event == "create":
            return strategy or "user_decides", "pending"
        if event == "resolve":
            return "user_decides", "resolved"
    return None


def _count_conflicts(store: Store, conn: Connection, where: str,
                     params: tuple[Any, ...]) -> dict[tuple[str, str], int]:
    sql = _dialect_sql(store)
    rows = conn.execute(
        f"SELECT entity_type, event_type, {sql['strategy']}, {sql['has_conflict']},"
        f" {sql['of_person']}, COUNT(*) FROM audit_log WHERE {where}"
        f" AND {sql['kind']} IN {_SYNC_KINDS} GROUP BY 1, 2, 3, 4, 5", params).fetchall()
    out: dict[tuple[str, str], int] = {}
    for entity, event, strategy, has_conflict, of_person, n in rows:
        outcome = _conflict_outcome(str(entity), str(event),
                                    None if strategy is None else str(strategy),
                                    has_conflict, of_person)
        if outcome is not None:
            out[outcome] = out.get(outcome, 0) + int(n)
    return out


def _nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (strategy, action), n in sorted(counts.items()):
        out.setdefault(strategy, {})[action] = n
    return out


def _size_bytes(store: Store, conn: Connection) -> int | None:
    if store.dialect == "sqlite":
        pages = conn.execute("PRAGMA page_count").fetchone()
        size = conn.execute("PRAGMA page_size").fetchone()
        return int(pages[0]) * int(size[0]) if pages and size else None
    row = conn.execute(
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()
    return None if row is None else int(row[0])


def _rows(conn: Connection) -> dict[str, int]:
    # Table names come from ROW_TABLES, never from input.
    return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
            for t in ROW_TABLES}


def _position(conn: Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0])


def _gc_last_run(conn: Connection) -> dict[str, Any] | None:
    """The GC's record of its last run (run id, time, items collected, bytes), if any."""
    row = conn.execute("SELECT value FROM statekeep_meta WHERE key = ?",
                       (GC_LAST_RUN_KEY,)).fetchone()
    if row is None:
        return None
    try:
        doc = orjson.loads(row[0])
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _pending(conn: Connection) -> int:
    return int(conn.execute(
        "SELECT COUNT(*) FROM sync_conflicts WHERE status = 'pending'").fetchone()[0])


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """The store as every process has used it, at ``measured_at`` (store clock)."""

    measured_at: datetime
    backend: str
    #: Database bytes: SQLite pages (WAL file excluded); PostgreSQL tables of the
    #: store's schema with their indexes and TOAST.
    size_bytes: int | None
    rows: Mapping[str, int]
    #: The audit log's highest id: changes committed so far, by every process.
    audit_position: int
    #: Audit rows (one per changed entity) in the last hour and day.
    changes_last_hour: int
    changes_last_day: int
    pending_conflicts: int
    #: strategy -> action -> count, over the last day.
    conflicts_last_day: Mapping[str, Mapping[str, int]]
    recoveries_last_day: int
    #: GC runs of the last day that deleted rows (distinct run ids in the audit
    #: rows of GC deletions; a run that found nothing to collect leaves none).
    gc_runs_last_day: int
    #: The GC's own record of its last run (``statekeep_meta``), or None.
    gc_last_run: Mapping[str, Any] | None
    #: Bytes of the Redis tiers' namespaces (all processes), by tier.
    shared_cache_bytes: Mapping[str, int] = field(default_factory=dict)

    @property
    def write_throughput(self) -> float:
        """Changes per second over the last hour."""
        return self.changes_last_hour / 3600.0

    @property
    def gc_frequency(self) -> float:
        """GC runs per hour over the last day."""
        return self.gc_runs_last_day / 24.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured_at": self.measured_at.isoformat(), "backend": self.backend,
            "size_bytes": self.size_bytes, "rows": dict(self.rows),
            "audit_position": self.audit_position,
            "changes_last_hour": self.changes_last_hour,
            "changes_last_day": self.changes_last_day,
            "write_throughput": round(self.write_throughput, 6),
            "pending_conflicts": self.pending_conflicts,
            "conflicts_last_day": {s: dict(a) for s, a in self.conflicts_last_day.items()},
            "recoveries_last_day": self.recoveries_last_day,
            "gc_runs_last_day": self.gc_runs_last_day,
            "gc_frequency": round(self.gc_frequency, 6),
            "gc_last_run": None if self.gc_last_run is None else dict(self.gc_last_run),
            "shared_cache_bytes": dict(self.shared_cache_bytes),
        }


def read_store_figures(store: Store, *, shared: Mapping[str, WarmTier | None] | None = None,
                       now: datetime | None = None) -> StoreFigures:
    """Read :class:`StoreFigures` (one observed read on the store, plus a Redis GET
    per shared tier). Windows end at ``now``, by default the store's clock."""
    at = now or store.now()
    hour, day = store.ts(at - timedelta(hours=1)), store.ts(at - timedelta(days=1))
    sql = _dialect_sql(store)
    with store.reading() as conn:
        size = _size_bytes(store, conn)
        rows = _rows(conn)
        position = _position(conn)
        last_hour = int(conn.execute("SELECT COUNT(*) FROM audit_log WHERE timestamp >= ?",
                                     (hour,)).fetchone()[0])
        last_day = int(conn.execute("SELECT COUNT(*) FROM audit_log WHERE timestamp >= ?",
                                    (day,)).fetchone()[0])
        pending = _pending(conn)
        conflicts = _count_conflicts(store, conn, "timestamp >= ?", (day,))
        recoveries = int(conn.execute(
            f"SELECT COUNT(*) FROM audit_log WHERE timestamp >= ? AND {sql['kind']} = 'store'"
            " AND event_type = 'recover'", (day,)).fetchone()[0])
        gc_runs = int(conn.execute(
            f"SELECT COUNT(DISTINCT {sql['gc_run']}) FROM audit_log WHERE timestamp >= ?"
            " AND event_type = 'delete'", (day,)).fetchone()[0])
        gc_last = _gc_last_run(conn)
    tiers = {name: tier.bytes_used for name, tier in (shared or {}).items() if tier is not None}
    return StoreFigures(
        measured_at=at, backend=store.dialect, size_bytes=size, rows=rows,
        audit_position=position, changes_last_hour=last_hour, changes_last_day=last_day,
        pending_conflicts=pending, conflicts_last_day=_nested(conflicts),
        recoveries_last_day=recoveries, gc_runs_last_day=gc_runs, gc_last_run=gc_last,
        shared_cache_bytes=tiers)


@dataclass(frozen=True, slots=True)
class _Scrape:
    """What one scrape read from the store."""

    size_bytes: int | None
    rows: dict[str, int]
    position: int
    pending: int
    gc_last_run: dict[str, Any] | None


class StoreCollector(Collector):
    """Store-wide gauges and counters, read from the store at every scrape.

    For an exporter process (``statekeep metrics serve``), not for an agent's
    own registry: each scrape costs a dozen queries. Conflicts are counted
    from the audit rows committed since the collector was made (the counter
    starts at 0 with the exporter, as Prometheus counters do), reading only
    the audit range added since the previous scrape.

    Collect from one thread: the SQLite backend keeps a connection per
    thread, and a server starting a thread per request would open one per
    scrape.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        with store.reading() as conn:
            self._seen = _position(conn)
        self._conflicts: dict[tuple[str, str], int] = {}

    def describe(self) -> Iterable[Metric]:
        return self._families(None, describing=True)

    def collect(self) -> Iterable[Metric]:
        try:
            scrape = self._read()
        except StatekeepError as exc:  # a scrape reports the outage instead of failing
            log.warning("metrics: the store did not answer a scrape: %s", exc)
            scrape = None
        return self._families(scrape)

    def _read(self) -> _Scrape:
        store = self._store
        with store.reading() as conn:
            scrape = _Scrape(size_bytes=_size_bytes(store, conn), rows=_rows(conn),
                             position=_position(conn), pending=_pending(conn),
                             gc_last_run=_gc_last_run(conn))
            if scrape.position > self._seen:
                new = _count_conflicts(store, conn, "id > ? AND id <= ?",
                                       (self._seen, scrape.position))
                for key, n in new.items():
                    self._conflicts[key] = self._conflicts.get(key, 0) + n
            self._seen = scrape.position
        return scrape

    def _families(self, scrape: _Scrape | None, *,
                  describing: bool = False) -> Iterator[Metric]:
        up = GaugeMetricFamily("state_store_up", "1 if the store answered this scrape.")
        size = GaugeMetricFamily("state_store_size_bytes",
                                 "Database size (SQLite pages; PostgreSQL tables + indexes).")
        rows = GaugeMetricFamily("state_store_rows", "Rows per table.", labels=["table"])
        changes = CounterMetricFamily(
            "state_store_changes",
            "Audit-log position: changes committed by every process (drops after a restore).")
        pending = GaugeMetricFamily("state_store_pending_conflicts",
                                    "Sync conflicts waiting for a person.")
        conflicts = CounterMetricFamily(
            "state_store_sync_conflicts",
            "Sync conflicts committed by any process since this exporter started.",
            labels=["strategy", "action"])
        gc_at = GaugeMetricFamily("state_store_gc_last_run_timestamp_seconds",
                                  "When the last garbage collection ran (Unix time).")
        gc_collected = GaugeMetricFamily("state_store_gc_last_run_collected",
                                         "Rows the last garbage collection removed.")
        if scrape is not None:
            up.add_metric([], 1.0)
            if scrape.size_bytes is not None:
                size.add_metric([], scrape.size_bytes)
            for table, n in scrape.rows.items():
                rows.add_metric([table], n)
            changes.add_metric([], scrape.position)
            pending.add_metric([], scrape.pending)
            for (strategy, action), n in sorted(self._conflicts.items()):
                conflicts.add_metric([strategy, action], n)
            last = scrape.gc_last_run or {}
            with contextlib.suppress(KeyError, TypeError, ValueError):
                gc_at.add_metric([], datetime.fromisoformat(last["at"]).timestamp())
            with contextlib.suppress(KeyError, TypeError, ValueError):
                gc_collected.add_metric([], int(last["items_collected"]))
        elif not describing:
            up.add_metric([], 0.0)
        yield from (up, size, rows, changes, pending, conflicts, gc_at, gc_collected)
