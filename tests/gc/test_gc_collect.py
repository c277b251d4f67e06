"""Garbage collection end to end on both backends: what is collected and what is kept,
with the reason for each; a dry run changes nothing; every deletion is audited and
replays; caches hear of it; runs are recorded and skipped when not due; compaction."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from statekeep import Store
from statekeep.gc import GarbageCollector
from statekeep.memory.archive import ArchiveTier
from statekeep.recovery.manager import RecoveryManager
from statekeep.recovery.replay import StateModel, audit_events
from statekeep.recovery.snapshots import SnapshotManager
from statekeep.store.base import Change
from statekeep.store.context import ContextInput
from statekeep.store.rows import CONTEXT


@dataclass
class World:
    store: Store
    clock: Any
    archive: ArchiveTier
    old: str          # completed, idle 100 days: archived
    referenced: str   # completed, idle 100 days, but a decision from an hour ago points at it
    active: str
    gone_item: str    # expired, scored low: collected
    important: str    # expired, scored 0.9: kept (importance)
    fresh: str        # expired, written two hours ago: kept (min_age)
    live: str
    gone_content: str  # the blob only the collected item linked to
    orphan: str       # an old blob nothing links to: collected
    young_orphan: str  # a blob nothing links to, an hour old: kept
    held: str         # the snapshot a recovery point holds
    superseded: str   # an old whole-store snapshot with a newer one: collected
    newest: str


def build(make_store: Callable[..., Store], clock: Any, tmp_path: Path,
          **overrides: object) -> World:
    store = make_store(clock=clock, archive_dir=str(tmp_path / "archive"), **overrides)
    start = clock.now
    old = store.create_session("alice")
    task = store.create_task(old.id, "plan")
    store.set_context(old.id, "note", "done", {"text": "finished"})
    store.start_task(task.id)
    store.complete_task(task.id, result={"ok": True})
    store.update_session(old.id, status="completed")
    referenced = store.create_session("bob")
    store.update_session(referenced.id, status="failed")
    active = store.create_session("carol")
    points = RecoveryManager(store)
    point = points.create_recovery_point("before")  # its base image: held
    held = point.state_snapshot_id
    assert held is not None
    snaps = SnapshotManager(store)
    superseded = snaps.create().id
    with store.atomic() as conn:
        orphan = store.ensure_blob(conn, os.urandom(3000))
    gone = store.set_context(active.id, "note", "gone", {"t": "scratch"},
                             relevance_score=0.2, ttl_seconds=3600)
    with store.atomic() as conn:
        gone_content = store.attach_content(conn, gone.id, active.id, b"only here " * 400)
    important = store.set_context(active.id, "note", "important", {"t": "keep"},
                                  relevance_score=0.9, ttl_seconds=3600)
    live = store.set_context(active.id, "note", "live", {"t": "live"}, relevance_score=0.1)
    with store.atomic() as conn:
        store.attach_content(conn, live.id, active.id, b"still linked " * 400)
    clock.now = start + timedelta(days=40)
    newest = snaps.create().id
    clock.now = start + timedelta(days=100) - timedelta(hours=2)
    fresh = store.set_context(active.id, "note", "fresh", {"t": "new"}, relevance_score=0.1,
                              ttl_seconds=60)
    clock.now += timedelta(hours=1)
    store.record_decision("route", "fast", context={"k": 1}, session_id=referenced.id)
    with store.atomic() as conn:
        young_orphan = store.ensure_blob(conn, os.urandom(2000))
    clock.now += timedelta(hours=1)
    return World(store, clock, ArchiveTier.for_store(store), old.id, referenced.id, active.id,
                 gone.id, important.id, fresh.id, live.id, gone_content, orphan,
                 young_orphan, held, superseded, newest)


def ids_of(store: Store, table: str, key: str = "id") -> set[str]:
    with store.reading() as conn:
        return {str(r[0]) for r in conn.execute(f"SELECT {key} FROM {table}").fetchall()}


def test_collects_exactly_the_unreachable_and_unretained(
        make_store: Callable[..., Store], clock: Any, tmp_path: Path) -> None:
    w = build(make_store, clock, tmp_path)
    store = w.store
    gc = GarbageCollector(store, archive=w.archive)

    before = store.dump()
    plan = gc.collect(dry_run=True, limit=None)
    assert store.dump() == before  # a dry run changes nothing
    assert plan.dry_run and plan.due and plan.items_collected == 0
    listed = {(p.kind, p.id, p.rule) for p in plan.planned}
    assert listed == {("context", w.gone_item, "unreachable"),
                      ("session", w.old, "unreachable"),
                      ("snapshot", w.superseded, "unreachable"),
                      ("blob", w.orphan, "unreachable")}
    assert plan.planned_total == 4
    kinds = plan.statistics.kinds
    assert kinds["context"].kept == {"importance": 1, "min_age": 1}
    assert kinds["session"].kept == {"referenced": 1}
    assert kinds["blob"].kept == {"min_age": 1}
    assert plan.items_marked == 4

    changes: list[Change] = []
    store.add_change_listener(changes.append)
    result = gc.collect()
    assert not result.skipped
    assert result.items_collected == 4
    assert result.items_marked == 4
    assert result.space_reclaimed > 3000  # the orphan's stored bytes, at least

    items = ids_of(store, "context")
    assert w.gone_item not in items
    assert {w.important, w.fresh, w.live} <= items
    assert w.archive.is_archived(w.old)  # archived, not deleted
    assert ids_of(store, "sessions") == {w.referenced, w.active}
    blobs = ids_of(store, "content_blobs", "hash")
    assert w.orphan not in blobs and w.gone_content not in blobs
    assert w.young_orphan in blobs
    assert ids_of(store, "state_snapshots") == {w.held, w.newest}

    audit = {(e.entity_type, e.entity_id): e for e in store.audit(limit=100_000)
             if e.event_type == "delete" and isinstance(e.change_metadata, dict)
             and e.change_metadata.get("gc") == result.run_id}
    assert set(audit) == {("context", w.gone_item), ("blob", w.orphan),
                          ("snapshot", w.superseded)}
    ctx = audit[("context", w.gone_item)]
    assert ctx.old_value is not None and ctx.old_value["context_key"] == "gone"
    assert ctx.session_id == w.active and ctx.user_id == "carol"
    assert ctx.change_metadata == {"gc": result.run_id, "rule": "unreachable"}

    deleted = [c for c in changes if c.event == "delete" and c.entity_type == "context"]
    assert deleted and deleted[0].entity_ids == (w.gone_item,)
    assert deleted[0].keys == (("note", "gone"),) and deleted[0].session_id == w.active
    assert any(c.entity_type == "session" and c.entity_ids == (w.old,) for c in changes)

    # Nothing is left to collect: a second forced run finds nothing.
    again = gc.collect(force=True)
    assert again.items_collected == 0 and not again.statistics.batches


def test_audit_rows_replay(make_store: Callable[..., Store], clock: Any,
                           tmp_path: Path) -> None:
    """The audit log stays the change log: replayed from empty it gives the live
    context rows, and point-in-time recovery to now finds nothing to change."""
    w = build(make_store, clock, tmp_path)
    store = w.store
    GarbageCollector(store, archive=w.archive).collect()
    model = StateModel()
    with store.reading() as conn:
        model.replay(audit_events(store, conn, after=0, upto=None))
    live = ids_of(store, "context")
    replayed = {k for k, row in model.rows(CONTEXT).items() if row["session_id"] != w.old}
    assert replayed == live
    assert RecoveryManager(store).recover_to_time(clock.now, dry_run=True).changed == {}


def test_rules_from_config_decide(make_store: Callable[..., Store], clock: Any,
                                  tmp_path: Path) -> None:
    """A collect rule above the importance guard makes expiry win over a relevance
    score; a keep rule holds what would go."""
    w = build(make_store, clock, tmp_path, gc_rules=(
        "expiry_wins:context:status=expired=collect@600",
        "keep_blobs:blob=keep@50",
        "active_session:session:status=active|paused=keep@100"))
    gc = GarbageCollector(w.store, archive=w.archive)
    result = gc.collect()
    items = ids_of(w.store, "context")
    assert w.important not in items and w.gone_item not in items
    assert w.fresh in items  # the min-age guard outranks every rule
    assert w.orphan in ids_of(w.store, "content_blobs", "hash")
    kinds = result.statistics.kinds
    assert kinds["context"].to_collect == {"expiry_wins": 2}
    assert kinds["blob"].kept == {"keep_blobs": 1, "min_age": 1}
    # An hour-old decision is a root (min_age) and holds its session ...
    assert kinds["session"].kept == {"referenced": 1}
    # ... and without the seed's recent_decision rule (72 h) it stops holding it
    # once it is older than gc_min_age_hours.
    w.clock.advance(hours=24)
    later = gc.collect(force=True)
    assert later.statistics.kinds["session"].collected == 1
    assert w.archive.is_archived(w.referenced)
    rules = {e.change_metadata["rule"] for e in w.store.audit(entity_type="context",
                                                               limit=1000)
             if e.event_type == "delete" and isinstance(e.change_metadata, dict)}
    assert rules == {"expiry_wins"}


def test_due_skipped_forced_and_recorded(make_store: Callable[..., Store],
                                         clock: Any) -> None:
    store = make_store(clock=clock, gc_collect_threshold=5, gc_interval_hours=48.0)
    gc = GarbageCollector(store)
    assert gc.need() == (True, "no collection has run on this store yet")
    first = gc.collect()
    assert not first.skipped and first.due
    last = gc.last_run()
    assert last is not None and last.run_id == first.run_id and last.at == clock.now
    assert not gc.should_collect()
    skipped = gc.collect()
    assert skipped.skipped and not skipped.due and "fewer than 5" in skipped.reason
    assert gc.last_run() == last  # a skipped run is not a run
    forced = gc.collect(force=True)
    assert not forced.skipped and gc.last_run() != last
    # Enough collectable rows make one due before the interval is up.
    session = store.create_session("alice")
    store.set_context_many(session.id, [
        ContextInput("note", f"k{i}", i, relevance_score=0.1,
                     expires_at=clock.now + timedelta(minutes=1)) for i in range(5)])
    clock.advance(hours=23)
    assert not gc.should_collect()  # younger than gc_min_age_hours: not collectable yet
    clock.advance(hours=1.5)
    assert gc.need() == (True, "at least 5 rows are collectable (gc_collect_threshold)")
    clock.advance(hours=24)
    due, why = gc.need()
    assert due and "gc_interval_hours" in why


def test_every_transaction_stays_within_the_batch_size(
        make_store: Callable[..., Store], clock: Any) -> None:
    store = make_store(clock=clock, gc_batch_size=7)
    session = store.create_session("alice")
    store.set_context_many(session.id, [
        ContextInput("note", f"k{i}", {"i": i}, relevance_score=0.1,
                     expires_at=clock.now + timedelta(seconds=i)) for i in range(50)])
    clock.advance(days=2)
    seen = []
    result = GarbageCollector(store).collect(on_batch=seen.append)
    assert result.items_collected == 50
    assert seen == result.statistics.batches
    assert [b.rows for b in seen] == [7] * 7 + [1]
    assert len(seen) == math.ceil(50 / 7)
    assert all(b.offered <= 7 for b in seen)
    deletes = [e for e in store.audit(entity_type="context", limit=1000)
               if e.event_type == "delete"]
    assert len(deletes) == 50


def test_items_sharing_one_expiry_instant_are_paged(
        make_store: Callable[..., Store], clock: Any) -> None:
    """A page boundary inside a group of items that expire at the same instant,
    with kept items among them, neither skips nor repeats one."""
    store = make_store(clock=clock, gc_batch_size=10)
    session = store.create_session("alice")
    store.set_context_many(session.id, [
        ContextInput("note", f"k{i:02d}", i, relevance_score=0.9 if i % 3 == 0 else 0.1,
                     expires_at=clock.now + timedelta(minutes=1)) for i in range(45)])
    clock.advance(days=2)
    result = GarbageCollector(store).collect()
    assert result.items_collected == 30
    assert result.items_marked == 15
    assert len(ids_of(store, "context")) == 15


def test_compaction_sqlite(make_store: Callable[..., Store], clock: Any,
                           backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's free pages")
    store = make_store(clock=clock)
    session = store.create_session("alice")
    store.set_context(session.id, "note", "findme", {"text": "zebra crossing"})

    def orphans(n: int) -> None:
        with store.atomic() as conn:
            for _ in range(n):
                store.ensure_blob(conn, os.urandom(100_000))
        clock.advance(days=2)

    orphans(250)  # 25 MB nothing links to
    gc = GarbageCollector(store)
    first = gc.collect(force=True)
    assert first.statistics.kinds["blob"].collected == 250
    assert first.compaction is not None and first.compaction.action == "none"
    assert "--vacuum" in first.compaction.reason
    assert first.compaction.free_bytes_before > 20_000_000

    second = gc.collect(force=True, vacuum=True)
    assert second.compaction is not None and second.compaction.action == "vacuum"
    assert second.compaction.bytes_returned > 20_000_000
    with store.reading() as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    # VACUUM may renumber rowids; the search index was rebuilt to match.
    assert [h.item.context_key for h in store.search_context("zebra")] == ["findme"]

    orphans(100)
    third = gc.collect(force=True)
    assert third.compaction is not None and third.compaction.action == "incremental_vacuum"
    assert third.compaction.bytes_returned > 8_000_000
    assert third.compaction.free_bytes_after < 4096 * 256


def test_compaction_postgres(make_store: Callable[..., Store], clock: Any,
                             backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's VACUUM")
    store = make_store(clock=clock)
    session = store.create_session("alice")
    store.set_context_many(session.id, [
        ContextInput("note", f"k{i}", i, relevance_score=0.1,
                     expires_at=clock.now + timedelta(minutes=1)) for i in range(1200)])
    store.set_context_many(session.id, [ContextInput("note", f"keep{i}", i)
                                        for i in range(10)])
    clock.advance(days=2)
    result = GarbageCollector(store).collect()
    assert result.items_collected == 1200
    assert result.compaction is not None
    assert result.compaction.action == "vacuum_analyze"
    assert result.compaction.tables == ("context",)
    small = GarbageCollector(store).compact_phase({"context": 10})
    assert small.action == "none"


def test_postgres_skips_rows_a_writer_holds(make_store: Callable[..., Store],
                                            clock: Any, backend: str) -> None:
    """The collector never waits behind a writer: a row locked by an open transaction
    is left for the next run (``missed``), the rest are collected."""
    if backend != "postgres":
        pytest.skip("row locks: SQLite has one writer at a time")
    store = make_store(clock=clock)
    other = make_store(clock=clock)
    session = store.create_session("alice")
    store.set_context_many(session.id, [
        ContextInput("note", f"k{i}", i, relevance_score=0.1,
                     expires_at=clock.now + timedelta(minutes=1)) for i in range(20)])
    clock.advance(days=2)
    held = store.get_context_by_id(sorted(ids_of(store, "context"))[3])
    gc = GarbageCollector(store)
    with other.atomic() as conn:
        conn.execute("SELECT id FROM context WHERE id = ? FOR UPDATE", (held.id,))
        first = gc.collect()
    assert first.items_collected == 19
    assert first.statistics.kinds["context"].missed == 1
    assert ids_of(store, "context") == {held.id}
    second = gc.collect(force=True)
    assert second.items_collected == 1
