"""The garbage collector: mark, sweep and compact, in small transactions.

**Mark.** The roots are what the rules keep -- active and paused sessions,
snapshots held by recovery points, user preferences, recent decisions,
anything younger than ``gc_min_age_hours`` or more important than
``gc_importance_keep`` -- and the references the store holds carry
reachability from them: a recovery point holds its snapshot; a content link
or a memory entry holds its blob; a kept decision holds its session (and its
task's). Four kinds of rows can end up unreachable, and only those are ever
collected:

* context items whose ``expires_at`` has passed -- expiry is the writer's own
  statement that the item is dead, so it cuts every reference to it (reads,
  searches and reconstructions already skip it, and its relations and content
  link go with it);
* blobs with no reference (``ref_count`` 0, no content link, no memory entry);
* snapshots past ``snapshot_retention_days``, superseded by a newer image of
  the same scope, and held by no recovery point;
* finished (completed or failed) sessions idle for ``cold_retention_days`` --
  these are handed to the archive tier, which moves them to a file, not
  deleted. Tasks and context items live *inside* a session and move with it,
  so they do not hold it; a decision lives outside and does.

For each such row the rules decide, highest priority first (see
:mod:`statekeep.gc.rules`). All of it is SQL (:mod:`statekeep.store.gc`): the
mark is one aggregate query per kind, never the store loaded into memory.

**Sweep.** A page of ``gc_batch_size`` collectable rows is read (a read: it
blocks nobody), then deleted in one short write transaction that judges each
row again and writes its audit row. Between transactions the collector pauses
about as long as the last one held the write lock, so a waiting writer gets
its turn; :class:`BatchStats` records every transaction.

**Compact.** See :meth:`GarbageCollector.compact_phase` and docs/gc.md.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from statekeep.errors import StatekeepError, ValidationError
from statekeep.gc.rules import (
    REFERENCED,
    UNREACHABLE,
    RetentionRule,
    RetentionRules,
    RuleDecision,
    decision_of,
)
from statekeep.ids import new_id
from statekeep.memory.archive import ArchiveCandidate, ArchiveReport, ArchiveTier
from statekeep.store import gc as gcsql
from statekeep.store.protocol import Store

__all__ = [
    "COMPACT_MIN_FREE_PAGES",
    "FULL_VACUUM_MIN_BYTES",
    "FULL_VACUUM_MIN_RATIO",
    "LAST_RUN_KEY",
    "PG_VACUUM_MIN_ROWS",
    "PG_VACUUM_MIN_SHARE",
    "BatchStats",
    "CollectionResult",
    "CollectionStatistics",
    "CompactionReport",
    "GarbageCollector",
    "KindStatistics",
    "PlannedItem",
]

log = logging.getLogger("statekeep.gc")

#: Where the last collection is recorded (``statekeep_meta``).
LAST_RUN_KEY: Final = "gc_last_run"
#: Kinds in sweep order: items first (their blobs are released with them),
#: sessions next (archiving drops their rows), orphaned blobs last.
KINDS: Final = ("context", "session", "snapshot", "blob")

# -- compaction thresholds (docs/gc.md explains each) ------------------------------
#: SQLite in incremental auto-vacuum: free pages worth returning to the file system.
COMPACT_MIN_FREE_PAGES: Final = 256
#: Pages returned per incremental-vacuum transaction (2 MB at 4 KB pages: a few ms).
COMPACT_STEP_PAGES: Final = 512
#: A requested full VACUUM runs only when this share of the file is free ...
FULL_VACUUM_MIN_RATIO: Final = 0.25
#: ... and at least this many bytes are: rewriting a file to save less is not worth it.
FULL_VACUUM_MIN_BYTES: Final = 16 * 1024 * 1024
#: PostgreSQL: a table is vacuumed when a run removed at least this many of its rows ...
PG_VACUUM_MIN_ROWS: Final = 1000
#: ... which are at least this share of the table (autovacuum waits for 20 %).
PG_VACUUM_MIN_SHARE: Final = 0.02
#: The longest pause between two sweep transactions, whatever the last one took.
MAX_PAUSE: Final = 0.05
#: A sweep transaction slower than this halves the next batch: half the 50 ms a
#: waiting writer may wait, the other half being SQLite's busy-retry gaps.
TARGET_TRANSACTION: Final = 0.025
#: Batches never shrink below this many rows.
MIN_BATCH: Final = 25

#: The tables each kind's sweep deletes rows from (for PostgreSQL's VACUUM).
_TABLES: Final = {"context": "context", "blob": "content_blobs", "snapshot": "state_snapshots"}


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One sweep transaction."""

    kind: str
    #: Position in the run (1, 2, ...).
    index: int
    #: Rows it deleted (each with one audit row); never more than the batch size.
    rows: int
    #: Rows it was given; the difference changed meanwhile or was locked.
    offered: int
    bytes: int
    #: How long the write transaction was open.
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index, "rows": self.rows,
                "offered": self.offered, "bytes": self.bytes,
                "seconds": round(self.seconds, 6)}


@dataclass(slots=True)
class KindStatistics:
    """What one kind's mark found and its sweep did."""

    kind: str
    #: Rows the mark found unreachable (before the rules).
    candidates: int = 0
    #: Of those, kept, by the rule (or ``referenced``) that kept them.
    kept: dict[str, int] = field(default_factory=dict)
    #: Of those, to be collected, by the rule (or ``unreachable``) that decided.
    to_collect: dict[str, int] = field(default_factory=dict)
    #: Rows deleted (sessions: archived).
    collected: int = 0
    #: Payload bytes of the deleted rows.
    bytes: int = 0
    batches: int = 0
    #: The most rows one transaction of this kind deleted.
    largest_batch: int = 0
    #: Rows the mark counted but the sweep did not take: changed meanwhile, locked
    #: by a writer, or (sessions) skipped or failed by the archive tier.
    missed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "candidates": self.candidates, "kept": dict(self.kept),
                "to_collect": dict(self.to_collect), "collected": self.collected,
                "bytes": self.bytes, "batches": self.batches,
                "largest_batch": self.largest_batch, "missed": self.missed}


@dataclass(slots=True)
class CollectionStatistics:
    """Per-kind figures and every sweep transaction of one run."""

    kinds: dict[str, KindStatistics] = field(
        default_factory=lambda: {k: KindStatistics(k) for k in KINDS})
    batches: list[BatchStats] = field(default_factory=list)
    mark_seconds: float = 0.0
    sweep_seconds: float = 0.0
    compact_seconds: float = 0.0

    @property
    def largest_batch(self) -> int:
        return max((b.rows for b in self.batches), default=0)

    def to_dict(self, *, batches: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kinds": {k: s.to_dict() for k, s in self.kinds.items()},
            "transactions": len(self.batches), "largest_batch": self.largest_batch,
            "longest_transaction_s": round(max((b.seconds for b in self.batches),
                                               default=0.0), 6),
            "mark_seconds": round(self.mark_seconds, 3),
            "sweep_seconds": round(self.sweep_seconds, 3),
            "compact_seconds": round(self.compact_seconds, 3)}
        if batches:
            out["batches"] = [b.to_dict() for b in self.batches]
        return out


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What the compact phase did, or why it did nothing."""

    #: ``incremental_vacuum``, ``vacuum`` or ``none`` (SQLite); ``vacuum_analyze`` or
    #: ``none`` (PostgreSQL).
    action: str
    reason: str
    #: SQLite: the file's size and free bytes before and after.
    file_bytes_before: int = 0
    file_bytes_after: int = 0
    free_bytes_before: int = 0
    free_bytes_after: int = 0
    #: PostgreSQL: the tables vacuumed.
    tables: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def bytes_returned(self) -> int:
        """Bytes the file shrank by (SQLite)."""
        return max(self.file_bytes_before - self.file_bytes_after, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason,
                "file_bytes_before": self.file_bytes_before,
                "file_bytes_after": self.file_bytes_after,
                "free_bytes_before": self.free_bytes_before,
                "free_bytes_after": self.free_bytes_after,
                "bytes_returned": self.bytes_returned, "tables": list(self.tables),
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One row a dry run found it would collect, and why."""

    kind: str
    id: str
    session_id: str | None
    #: (type/key) of a context item, the type of a snapshot, the user of a session.
    label: str
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "session_id": self.session_id,
                "label": self.label, "rule": self.rule, "reason": self.reason}


@dataclass(slots=True)
class CollectionResult:
    """The seed's result (marked, collected, space, skipped), with the details."""

    #: Unreachable rows the rules kept (they stay).
    items_marked: int = 0
    #: Rows deleted, plus sessions archived.
    items_collected: int = 0
    #: Payload bytes of the deleted rows (context values, blob and image bytes).
    space_reclaimed: int = 0
    #: True when nothing ran: :meth:`GarbageCollector.should_collect` said no.
    skipped: bool = False
    #: Whether a collection was due (:meth:`GarbageCollector.should_collect`).
    due: bool = False
    #: Why it was due or not (``should_collect``'s answer).
    reason: str = ""
    dry_run: bool = False
    run_id: str = ""
    at: datetime | None = None
    statistics: CollectionStatistics = field(default_factory=CollectionStatistics)
    compaction: CompactionReport | None = None
    archive: ArchiveReport | None = None
    #: Dry run: what would be collected (up to the listing limit), in sweep order.
    planned: list[PlannedItem] = field(default_factory=list)
    #: Dry run: how many would be collected in all (``planned`` may be cut short).
    planned_total: int = 0

    def to_dict(self, *, batches: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id, "at": None if self.at is None else self.at.isoformat(),
            "dry_run": self.dry_run, "skipped": self.skipped, "due": self.due,
            "reason": self.reason,
            "items_marked": self.items_marked, "items_collected": self.items_collected,
            "space_reclaimed": self.space_reclaimed,
            "statistics": self.statistics.to_dict(batches=batches),
            "compaction": None if self.compaction is None else self.compaction.to_dict(),
            "archive": None if self.archive is None else self.archive.to_dict()}
        if self.dry_run:
            out["planned_total"] = self.planned_total
            out["planned"] = [p.to_dict() for p in self.planned]
        return out


@dataclass(frozen=True, slots=True)
class LastRun:
    """The last collection recorded in ``statekeep_meta``."""

    run_id: str
    at: datetime
    items_collected: int


class _Verdicts:
    """Verdict numbers of one kind (from :mod:`statekeep.store.gc`) as decisions."""

    def __init__(self, rules: Sequence[RetentionRule]) -> None:
        self.rules = tuple(rules)
        self._decisions = [decision_of(r) for r in self.rules]
        #: The verdicts that collect: collect rules, and no rule at all.
        self.collect = [i for i, r in enumerate(self.rules) if r.action == "collect"]
        self.collect.append(gcsql.NO_MATCH)

    def decision(self, verdict: int) -> RuleDecision:
        if verdict == gcsql.NO_MATCH:
            return RuleDecision(False, UNREACHABLE, "unreachable, and no rule retains it")
        if verdict == gcsql.REFERENCED:
            return RuleDecision(True, REFERENCED, "a kept decision refers to it")
        return self._decisions[verdict]


class _RetainingArchive(ArchiveTier):
    """The archive tier, taking only the sessions the rules let go: its candidates
    are judged again just before it archives them."""

    def __init__(self, base: ArchiveTier, judge: Callable[[Sequence[str]], set[str]]) -> None:
        super().__init__(base.store, base.directory,
                         cold_retention_days=base.cold_retention / timedelta(days=1),
                         archive_retention_days=base.archive_retention / timedelta(days=1),
                         clock=base.clock)
        self._judge = judge

    def candidates(self, now: datetime | None = None) -> builtins.list[ArchiveCandidate]:
        found = super().candidates(now)
        allowed = self._judge([c.session_id for c in found])
        return [c for c in found if c.session_id in allowed]


Progress = Callable[[int, int], None]
BatchHook = Callable[[BatchStats], None]


class GarbageCollector:
    """Mark, sweep and compact one store by its retention rules (docs/gc.md)."""

    def __init__(self, store: Store, *, rules: RetentionRules | None = None,
                 archive: ArchiveTier | None = None, batch_size: int | None = None,
                 pause: float | None = None) -> None:
        """``pause``: seconds to wait after each sweep transaction; None (default)
        waits as long as that transaction took (at most 50 ms), so the collector
        holds the write lock at most half the time."""
        config = store.config
        self.store = store
        self.rules = rules or RetentionRules.from_config(config)
        self.archive = archive or ArchiveTier.for_store(store)
        self.batch_size = config.gc_batch_size if batch_size is None else batch_size
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValidationError("batch_size must be a positive integer", field="batch_size")
        if pause is not None and not 0 <= pause <= 10:
            raise ValidationError("pause must be from 0 to 10 seconds", field="pause")
        self.pause = pause
        self._verdicts = {k: _Verdicts(self.rules.for_entity(k)) for k in (*KINDS, "decision")}

    # -- the seed's API ---------------------------------------------------------

    def should_retain(self, entity: str, *, statuses: Sequence[str] = (),
                      age_hours: float | None = None,
                      importance: float | None = None) -> RuleDecision:
        """Whether the rules keep an unreachable item with these facts, and which rule
        decided (the same answer the SQL form gives for such a row)."""
        return self.rules.decide(entity, statuses=statuses, age_hours=age_hours,
                                 importance=importance)

    def last_run(self) -> LastRun | None:
        """The last collection that ran on this store (by any process), if any."""
        raw = gcsql.read_meta(self.store, LAST_RUN_KEY)
        if raw is None:
            return None
        try:
            doc = orjson.loads(raw)
            return LastRun(str(doc["run_id"]), datetime.fromisoformat(doc["at"]),
                           int(doc["items_collected"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring an unreadable %s record: %r", LAST_RUN_KEY, raw[:200])
            return None

    def need(self, now: datetime | None = None) -> tuple[bool, str]:
        """Whether a collection is worth running now, and why: never ran, ran longer
        than ``gc_interval_hours`` ago, or at least ``gc_collect_threshold`` rows are
        collectable (counted with the rules, and only up to the threshold)."""
        at = self._now(now)
        config = self.store.config
        last = self.last_run()
        if last is None:
            return True, "no collection has run on this store yet"
        hours = (at - last.at) / timedelta(hours=1)
        if hours >= config.gc_interval_hours:
            return True, (f"the last collection ran {hours:.1f} h ago"
                          f" (gc_interval_hours = {config.gc_interval_hours:g})")
        threshold = config.gc_collect_threshold
        queries = self._queries(at)
        found = 0
        for kind in ("context", "blob", "snapshot"):
            found += queries.count_upto(kind, threshold - found,
                                        self._verdicts[kind].collect)
            if found >= threshold:
                return True, (f"at least {threshold} rows are collectable"
                              " (gc_collect_threshold)")
        return False, (f"the last collection ran {hours:.1f} h ago and fewer than"
                       f" {threshold} rows are collectable")

    def should_collect(self, now: datetime | None = None) -> bool:
        """The seed's check: is a collection needed (see :meth:`need`)?"""
        return self.need(now)[0]

    def collect(self, force: bool = False, *, dry_run: bool = False, vacuum: bool = False,
                limit: int | None = 1000, now: datetime | None = None,
                progress: Progress | None = None,
                on_batch: BatchHook | None = None) -> CollectionResult:
        """Run a collection: mark, sweep, compact; record it in ``statekeep_meta``.

        Without ``force`` it runs only when :meth:`should_collect` says so (the
        result is then ``skipped``). ``dry_run`` changes nothing and lists what
        would be collected (``limit`` items at most; None for all) with the
        rule or reason of each. ``vacuum`` allows a full SQLite VACUUM when it
        is worthwhile (writers wait for it; see :meth:`compact_phase`).
        ``progress(done, total)`` is told after every transaction, ``on_batch``
        of every sweep transaction's :class:`BatchStats`.
        """
        at = self._now(now)
        needed, why = self.need(at)
        result = CollectionResult(run_id=new_id("gc"), at=at, dry_run=dry_run, due=needed,
                                  reason=why)
        if not (needed or force or dry_run):
            result.skipped = True
            return result
        stats = result.statistics
        self.mark_phase(at, statistics=stats)
        result.items_marked = sum(sum(s.kept.values()) for s in stats.kinds.values())
        if dry_run:
            result.planned_total = sum(sum(s.to_collect.values())
                                       for s in stats.kinds.values())
            result.planned = self.plan(at, limit=limit)
            return result
        self.store.access_log.flush()  # counts of items about to go are moot, not lost
        removed, result.archive = self.sweep_phase(at, statistics=stats, run_id=result.run_id,
                                                   progress=progress, on_batch=on_batch)
        result.items_collected = sum(s.collected for s in stats.kinds.values())
        result.space_reclaimed = sum(s.bytes for s in stats.kinds.values())
        started = time.perf_counter()
        result.compaction = self.compact_phase(removed, vacuum=vacuum, force=force)
        stats.compact_seconds = time.perf_counter() - started
        gcsql.write_meta(self.store, LAST_RUN_KEY, orjson.dumps({
            "run_id": result.run_id, "at": at.isoformat(),
            "items_collected": result.items_collected,
            "items_marked": result.items_marked,
            "space_reclaimed": result.space_reclaimed}).decode())
        return result

    # -- phases ---------------------------------------------------------------

    def mark_phase(self, now: datetime | None = None, *,
                   statistics: CollectionStatistics | None = None) -> CollectionStatistics:
        """Count, per kind, the unreachable rows and what the rules decide for them:
        one aggregate query per kind (sessions: the archive tier's candidates,
        judged in chunks). Reads only."""
        at = self._now(now)
        stats = statistics or CollectionStatistics()
        started = time.perf_counter()
        queries = self._queries(at)
        for kind in ("context", "snapshot", "blob"):
            self._tally(stats.kinds[kind], queries.count(kind))
        found = self.archive.candidates(at)
        verdicts = queries.session_verdicts([c.session_id for c in found])
        counts: dict[int, int] = {}
        for v in verdicts.values():
            counts[v] = counts.get(v, 0) + 1
        self._tally(stats.kinds["session"], counts)
        stats.mark_seconds = time.perf_counter() - started
        return stats

    def _tally(self, ks: KindStatistics, counts: Mapping[int, int]) -> None:
        verdicts = self._verdicts[ks.kind]
        for verdict, n in counts.items():
            d = verdicts.decision(verdict)
            bucket = ks.kept if d.keep else ks.to_collect
            bucket[d.rule] = bucket.get(d.rule, 0) + n
            ks.candidates += n

    def plan(self, now: datetime | None = None, *,
             limit: int | None = 1000) -> builtins.list[PlannedItem]:
        """What a sweep at ``now`` would collect, in sweep order, with the rule or
        reason for each: read page by page, stopping after ``limit`` items."""
        at = self._now(now)
        queries = self._queries(at)
        out: list[PlannedItem] = []

        def room() -> bool:
            return limit is None or len(out) < limit

        def add(c: gcsql.Candidate) -> None:
            d = self._verdicts[c.kind].decision(c.verdict)
            if not d.keep and room():
                out.append(PlannedItem(c.kind, c.id, c.session_id, c.label, d.rule, d.reason))

        cursor: tuple[Any, Any] | None = None
        while room():
            page, cursor = queries.context_page(cursor, self.batch_size)
            for c in page:
                add(c)
            if cursor is None:
                break
        if room():
            found = self.archive.candidates(at)
            verdicts = queries.session_verdicts([c.session_id for c in found])
            for cand in found:
                add(gcsql.Candidate("session", cand.session_id,
                                    verdicts.get(cand.session_id, gcsql.NO_MATCH),
                                    cand.session_id, f"{cand.user_id} ({cand.status})"))
        for kind in ("snapshot", "blob"):
            after: str | None = None
            while room():
                kpage, after = queries.key_page(kind, after, self.batch_size)
                for c in kpage:
                    add(c)
                if after is None:
                    break
        return out

    def sweep_phase(self, now: datetime | None = None, *,
                    statistics: CollectionStatistics | None = None, run_id: str | None = None,
                    progress: Progress | None = None, on_batch: BatchHook | None = None,
                    ) -> tuple[dict[str, int], ArchiveReport]:
        """Collect, kind by kind, in transactions of at most ``batch_size`` rows;
        returns the rows removed per table and the archive tier's report."""
        at = self._now(now)
        stats = statistics or CollectionStatistics()
        queries = self._queries(at, run_id=run_id)
        total = max(sum(sum(s.to_collect.values()) for s in stats.kinds.values()), 1)
        started = time.perf_counter()
        done = 0
        size = self.batch_size

        def record(d: gcsql.Deleted) -> None:
            nonlocal done, total, size
            ks = stats.kinds[d.kind]
            batch = BatchStats(d.kind, len(stats.batches) + 1, d.rows, d.offered, d.bytes,
                               d.seconds)
            stats.batches.append(batch)
            ks.collected += d.rows
            ks.bytes += d.bytes
            ks.batches += 1
            ks.largest_batch = max(ks.largest_batch, d.rows)
            done += d.rows
            total = max(total, done)
            if on_batch is not None:
                on_batch(batch)
            if progress is not None:
                progress(done, total)
            size = self._next_size(size, d)
            self._rest(d.seconds)

        # Expired context items.
        ctx = self._verdicts["context"]
        cursor: tuple[Any, Any] | None = None
        while True:
            page, cursor = queries.context_page(cursor, size)
            chosen = [(c, d) for c in page if not (d := ctx.decision(c.verdict)).keep]
            if chosen:
                record(queries.delete_context(
                    {c.id: d.rule for c, d in chosen}, ctx.collect,
                    {c.id: c.row for c, _ in chosen if c.row is not None}))
            if cursor is None:
                break

        # Finished, idle sessions: to the archive tier, one transaction each.
        judge = self._session_judge(queries)
        tier = _RetainingArchive(self.archive, judge)
        archived_before = done

        def step(n: int, _total: int) -> None:
            if progress is not None:
                progress(archived_before + n, max(total, archived_before + n))

        report = tier.run(at, progress=step)
        sessions = stats.kinds["session"]
        sessions.collected = len(report.archived)
        done += sessions.collected

        # Superseded snapshots, then orphaned blobs.
        for kind, delete in (("snapshot", queries.delete_snapshots),
                             ("blob", queries.delete_blobs)):
            verdicts = self._verdicts[kind]
            after: str | None = None
            while True:
                kpage, after = queries.key_page(kind, after, size)
                picks = {c.id: d.rule for c in kpage
                         if not (d := verdicts.decision(c.verdict)).keep}
                if picks:
                    record(delete(picks, verdicts.collect))
                if after is None:
                    break

        for ks in stats.kinds.values():
            ks.missed = max(sum(ks.to_collect.values()) - ks.collected, 0)
        stats.sweep_seconds = time.perf_counter() - started
        removed = {_TABLES[k]: stats.kinds[k].collected for k in _TABLES}
        for entry in report.archived:
            removed["sessions"] = removed.get("sessions", 0) + 1
            for table, n in entry.item_counts.items():
                removed[table] = removed.get(table, 0) + n
        return removed, report

    def _session_judge(self, queries: gcsql.GcQueries) -> Callable[[Sequence[str]], set[str]]:
        verdicts = self._verdicts["session"]

        def judge(ids: Sequence[str]) -> set[str]:
            found = queries.session_verdicts(ids)
            return {sid for sid, v in found.items() if not verdicts.decision(v).keep}

        return judge

    def compact_phase(self, removed: Mapping[str, int] | None = None, *,
                      vacuum: bool = False, force: bool = False) -> CompactionReport:
        """Give the space back where that is worth it.

        SQLite: the freed pages sit on the file's free list, where later writes
        reuse them. A file in incremental auto-vacuum mode is shrunk
        :data:`COMPACT_STEP_PAGES` pages per transaction once at least
        :data:`COMPACT_MIN_FREE_PAGES` are free. A file in the default mode
        (no auto-vacuum) ignores ``PRAGMA incremental_vacuum``; only a full
        VACUUM shrinks it, which rewrites the file while writers wait -- so it
        runs only when asked (``vacuum``) and worthwhile (at least
        :data:`FULL_VACUUM_MIN_RATIO` of the file and :data:`FULL_VACUUM_MIN_BYTES`
        free, or ``force``), and switches the file to incremental mode on the way.

        PostgreSQL: ``VACUUM (ANALYZE)`` of each table this run removed at least
        :data:`PG_VACUUM_MIN_ROWS` rows from, if they are at least
        :data:`PG_VACUUM_MIN_SHARE` of it (any removed row with ``force``).
        """
        started = time.perf_counter()
        st = self.store
        if st.dialect == "postgresql":
            return self._compact_postgres(dict(removed or {}), force, started)
        before = gcsql.sqlite_space(st)

        def report(action: str, reason: str,
                   after: gcsql.SqliteSpace | None = None) -> CompactionReport:
            end = after or before
            return CompactionReport(action, reason, file_bytes_before=before.file_bytes,
                                    file_bytes_after=end.file_bytes,
                                    free_bytes_before=before.free_bytes,
                                    free_bytes_after=end.free_bytes,
                                    seconds=time.perf_counter() - started)

        if before.auto_vacuum == 1:
            return report("none", "auto_vacuum is FULL: the file shrinks at every commit")
        if before.auto_vacuum == 2:
            if before.freelist_count < (1 if force else COMPACT_MIN_FREE_PAGES):
                return report("none", f"{before.freelist_count} free pages, fewer than"
                              f" {COMPACT_MIN_FREE_PAGES}: not worth a vacuum")
            space = before
            while space.freelist_count > 0:
                t0 = time.perf_counter()
                gcsql.sqlite_incremental_vacuum(st, COMPACT_STEP_PAGES)
                after = gcsql.sqlite_space(st)
                if after.freelist_count >= space.freelist_count:
                    break  # another writer is reusing pages as fast: stop here
                space = after
                self._rest(time.perf_counter() - t0)
            return report("incremental_vacuum",
                          f"returned free pages {COMPACT_STEP_PAGES} at a time", space)
        ratio = before.freelist_count / max(before.page_count, 1)
        worthwhile = force or (ratio >= FULL_VACUUM_MIN_RATIO
                               and before.free_bytes >= FULL_VACUUM_MIN_BYTES)
        free = f"{before.free_bytes / 1e6:.1f} MB ({ratio:.0%} of the file) is free"
        if not vacuum:
            return report("none", f"{free}; later writes reuse it. auto_vacuum is off, so"
                          " only a full VACUUM shrinks the file: 'statekeep gc --vacuum'")
        if not worthwhile:
            return report("none", f"{free}, below {FULL_VACUUM_MIN_RATIO:.0%} or"
                          f" {FULL_VACUUM_MIN_BYTES // (1024 * 1024)} MB: not worth a rewrite")
        gcsql.sqlite_full_vacuum(st)
        return report("vacuum", f"{free}: rewrote the file and switched it to incremental"
                      " auto-vacuum", gcsql.sqlite_space(st))

    def _compact_postgres(self, removed: dict[str, int], force: bool,
                          started: float) -> CompactionReport:
        tables = sorted(t for t, n in removed.items() if n > 0)
        sizes = gcsql.pg_row_estimates(self.store, tables)
        chosen = [t for t in tables if force or (
            removed[t] >= PG_VACUUM_MIN_ROWS
            and removed[t] >= PG_VACUUM_MIN_SHARE * (sizes.get(t, 0.0) + removed[t]))]
        if not chosen:
            return CompactionReport("none", f"no table lost {PG_VACUUM_MIN_ROWS} rows and"
                                    f" {PG_VACUUM_MIN_SHARE:.0%} of itself: autovacuum will"
                                    " do")
        for table in chosen:
            try:
                gcsql.pg_vacuum(self.store, table)
            except StatekeepError:
                log.warning("VACUUM of %s failed; autovacuum will get to it", table,
                            exc_info=True)
        return CompactionReport("vacuum_analyze", "removed rows past the thresholds",
                                tables=tuple(chosen), seconds=time.perf_counter() - started)

    # -- helpers -----------------------------------------------------------------

    def _queries(self, at: datetime, *, run_id: str | None = None) -> gcsql.GcQueries:
        cutoff = at - timedelta(days=self.store.config.snapshot_retention_days)
        return gcsql.GcQueries(self.store, {k: v.rules for k, v in self._verdicts.items()},
                               at, snapshot_cutoff=cutoff, run_id=run_id or new_id("gc"))

    def _next_size(self, size: int, last: gcsql.Deleted) -> int:
        """The next batch's size: halved after a transaction slower than
        :data:`TARGET_TRANSACTION` (a loaded machine, a slow disk), grown back
        towards ``batch_size`` after quick ones -- the batch size is a ceiling."""
        if last.seconds > TARGET_TRANSACTION and size > MIN_BATCH:
            return max(size // 2, MIN_BATCH)
        if last.seconds < TARGET_TRANSACTION / 2 and last.rows >= size // 2:
            return min(size * 2, self.batch_size)
        return size

    def _rest(self, held: float) -> None:
        """Let writers that queued behind the last transaction in before the next."""
        pause = min(held, MAX_PAUSE) if self.pause is None else self.pause
        if pause > 0:
            time.sleep(pause)

    def _now(self, now: datetime | None) -> datetime:
        if now is None:
            return self.store.now()
        at = self.store.ts_arg(now, "now")
        assert at is not None
        return at
