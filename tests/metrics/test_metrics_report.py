"""The performance report and its definitions: quantiles from buckets, hit rate,
memory efficiency, and the store-wide figures read from the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from statekeep import ContextInput, StateConfig, StateSystem
from statekeep.metrics import (
    LatencyHistogram,
    StateMetrics,
    StoreCollector,
    TierFigures,
    cache_hit_rate,
    histogram_quantile,
    memory_efficiency,
    read_store_figures,
)

Open = Callable[..., tuple[StateSystem, StateMetrics]]


# -- arithmetic -------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    # 10 in (0, 1], 10 in (1, 2], 20 in (2, 4], none above.
    cumulative = (10, 20, 40, 40)
    assert histogram_quantile(0.5, bounds, cumulative) == pytest.approx(2.0)
    assert histogram_quantile(0.25, bounds, cumulative) == pytest.approx(1.0)
    assert histogram_quantile(0.95, bounds, cumulative) == pytest.approx(2.0 + 2.0 * 18 / 20)
    assert histogram_quantile(0.05, bounds, cumulative) == pytest.approx(0.2)  # from 0


def test_quantile_edges() -> None:
    bounds = (1.0, 2.0)
    assert histogram_quantile(0.95, bounds, (0, 0, 0)) is None
    # Past the last finite bound, the answer is that bound (a floor).
    assert histogram_quantile(0.95, bounds, (0, 1, 10)) == 2.0
    # Empty leading buckets are skipped: the rank lands in the first populated one.
    assert histogram_quantile(0.0, bounds, (0, 5, 5)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        histogram_quantile(1.5, bounds, (0, 0, 0))
    with pytest.raises(ValueError):
        histogram_quantile(0.5, bounds, (0, 0))


def test_latency_histogram_le_semantics() -> None:
    h = LatencyHistogram((0.001, 0.01))
    for seconds in (0.001, 0.0005, 0.002, 5.0):
        h.observe(seconds)
    snap = h.snapshot()
    # A value equal to a bound belongs to that bound's bucket (le = "less or equal").
    assert snap.cumulative == (2, 3, 4)
    assert snap.count == 4
    assert snap.mean == pytest.approx((0.001 + 0.0005 + 0.002 + 5.0) / 4)
    with pytest.raises(ValueError):
        LatencyHistogram((0.01, 0.001))


def _tier(name: str, hits: int, misses: int, size: int = 0) -> TierFigures:
    return TierFigures(name=name, in_process=True, hits=hits, misses=misses, evictions=0,
                       expirations=0, errors=0, bytes=size, entries=0, capacity_bytes=1)


def test_cache_hit_rate_sums_every_tier() -> None:
    assert cache_hit_rate([]) is None
    assert cache_hit_rate([_tier("hot", 0, 0)]) is None
    assert cache_hit_rate([_tier("hot", 3, 1), _tier("warm", 1, 3)]) == pytest.approx(0.5)


def test_memory_efficiency() -> None:
    assert memory_efficiency(None, 100, 1000) is None
    assert memory_efficiency(0.5, 100, None) is None
    assert memory_efficiency(0.5, 400, 1000) == pytest.approx(0.2)
    assert memory_efficiency(1.0, 2000, 1000) == 1.0  # capped: Redis bytes may exceed RSS


# -- the report -------------------------------------------------------------------


def test_report_after_work(open_system: Open) -> None:
    sk, metrics = open_system()
    empty = metrics.generate_performance_report()
    assert (empty.queries, empty.avg_query_latency, empty.p95_query_latency) == (0, None, None)
    assert empty.cache_hit_rate is None and empty.gc_runs == 0
    session = sk.create_session("alice")
    for i in range(10):
        sk.set_context(session.id, "note", f"k{i}", i)
        sk.store.get_session(session.id)
    for _ in range(5):
        sk.get_session(session.id)
    metrics.observe_gc(0.5)
    report = metrics.generate_performance_report()
    assert report.writes == 11 and report.failed_writes == 0
    assert report.queries >= 10
    assert report.avg_query_latency is not None and report.avg_query_latency > 0
    assert report.p95_query_latency is not None and report.p95_query_latency > 0
    assert report.avg_write_latency is not None
    assert report.write_throughput > 0
    assert report.cache_hit_rate is not None and 0 < report.cache_hit_rate < 1
    assert report.cache_size_mb > 0
    assert report.memory_usage_mb is not None and report.memory_usage_mb > report.cache_size_mb
    assert report.memory_efficiency is not None and 0 < report.memory_efficiency < 1
    assert report.gc_runs == 1 and report.avg_gc_duration == pytest.approx(0.5)
    assert report.gc_frequency == pytest.approx(1.0)  # one run within the first hour
    assert report.tiers["hot"]["hits"] == 4  # the first get_session filled the tier
    data = orjson.loads(orjson.dumps(report.to_dict()))
    assert data["writes"] == 11 and data["tiers"]["hot"]["in_process"] is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.writes = 0  # type: ignore[misc]


# -- store-wide figures -----------------------------------------------------------


def test_store_figures_count_rows_and_changes(db_url: str, clock: Any) -> None:
    with StateSystem(StateConfig(db=db_url, metrics=False), clock=clock) as sk:
        session = sk.create_session("alice")
        sk.create_task(session.id, "build")
        sk.set_context_many(session.id, [ContextInput("note", f"k{i}", i) for i in range(5)])
        now = read_store_figures(sk.store)
        assert now.backend == sk.store.dialect
        assert now.rows["sessions"] == 1 and now.rows["tasks"] == 1
        assert now.rows["context"] == 5
        assert now.size_bytes is not None and now.size_bytes > 0
        assert now.audit_position >= 7  # one audit row per changed entity
        assert now.changes_last_hour == now.changes_last_day >= 7
        assert now.write_throughput == pytest.approx(now.changes_last_hour / 3600)
        clock.advance(hours=2)
        later = read_store_figures(sk.store)
        assert later.changes_last_hour == 0
        assert later.changes_last_day == now.changes_last_day
        assert later.audit_position == now.audit_position
        assert orjson.loads(orjson.dumps(later.to_dict()))["rows"]["context"] == 5


def test_store_figures_read_conflicts_and_recoveries(db_url: str) -> None:
    with StateSystem(StateConfig(db=db_url, metrics=False)) as sk:
        sk.sync_state("a", {"k": 1, "p": 1})
        sk.sync_state("b", {"k": 2}, base_versions={"k": 0}, strategy="last_write_wins")
        sk.sync_state("c", {"p": 2}, base_versions={"p": 0}, strategy="user_decides")
        point = sk.create_recovery_point("before")
        sk.create_session("alice")
        sk.recovery_manager.recover(point.id)
        figures = read_store_figures(sk.store)
    assert figures.conflicts_last_day == {"last_write_wins": {"write": 1},
                                          "user_decides": {"pending": 1}}
    assert figures.pending_conflicts == 1
    assert figures.recoveries_last_day == 1
    assert (figures.gc_runs_last_day, figures.gc_last_run) == (0, None)


def test_store_figures_read_gc_runs(db_url: str, clock: Any) -> None:
    gc = pytest.importorskip("statekeep.gc")
    with StateSystem(StateConfig(db=db_url, metrics=False), clock=clock) as sk:
        session = sk.create_session("alice")
        for i in range(3):  # expired, scored low, past the minimum age: collectable
            sk.set_context(session.id, "note", f"k{i}", i, relevance_score=0.2,
                           ttl_seconds=60)
        clock.advance(days=2)
        result = gc.GarbageCollector(sk.store).collect(force=True)
        assert result.items_collected == 3
        figures = read_store_figures(sk.store)
        registry = CollectorRegistry()
        registry.register(StoreCollector(sk.store))
        scraped = {s.name: s.value for family in registry.collect() for s in family.samples}
    assert figures.gc_runs_last_day == 1
    assert figures.gc_frequency == pytest.approx(1 / 24)
    assert figures.gc_last_run is not None
    assert figures.gc_last_run["items_collected"] == 3
    assert scraped["state_store_gc_last_run_collected"] == 3
    assert scraped["state_store_gc_last_run_timestamp_seconds"] == clock.now.timestamp()


def test_shared_tiers_report_their_namespace_bytes(redis_url: str, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    with StateSystem(StateConfig(db=db, metrics=False, redis_url=redis_url)) as sk:
        sk.memory.store("plan", {"steps": list(range(50))}, importance=0.6)  # short-term
        assert sk.cache_layer is not None
        figures = read_store_figures(sk.store, shared={"warm": sk.cache_layer,
                                                       "short_term": None})
        assert set(figures.shared_cache_bytes) == {"warm"}
        metrics = StateMetrics.for_system(sk)
        try:
            tiers = metrics.generate_performance_report().tiers
        finally:
            metrics.close()
        assert tiers["short_term"]["bytes"] > 0 and tiers["short_term"]["in_process"] is False
        assert tiers["warm"]["evictions"] is None  # Redis evicts without telling
