"""The in-process registry: what a scrape of one system's metrics shows.

Every test reads the exposition text the way Prometheus would (parsed with
prometheus-client's own parser), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from metrics_scrape import family_names, parse_samples, value
from prometheus_client import CollectorRegistry, generate_latest

from statekeep import StateConfig, StateSystem, open_store
from statekeep.errors import ConfigError, NotFoundError, ValidationError
from statekeep.metrics import METRIC_NAMES, StateMetrics, StoreCollector

Open = Callable[..., tuple[StateSystem, StateMetrics]]

SEED_NAMES = {
    "state_query_latency_seconds", "state_write_latency_seconds", "state_cache_hit_rate",
    "state_memory_usage_bytes", "state_gc_duration_seconds", "state_recovery_time_seconds",
}


def scrape(metrics: StateMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse_samples(metrics.exposition().decode())


def test_the_seed_names_are_exposed(open_system: Open) -> None:
    _, metrics = open_system()
    names = family_names(metrics.exposition().decode())
    assert names >= SEED_NAMES
    # Counters appear under their family name (without _total) once they have series.
    assert names >= {"state_cache_hits", "state_cache_misses", "state_cache_evictions",
                     "state_cache_bytes", "state_transaction_failures"}
    assert set(METRIC_NAMES) >= SEED_NAMES


def test_hot_tier_hits_are_counted_at_scrape_time(open_system: Open) -> None:
    sk, metrics = open_system()
    session = sk.create_session("alice")
    sk.set_context(session.id, "file", "a.py", {"lines": 3})
    sk.get_context(session.id, "file", "a.py")  # the miss that fills the tier
    before = scrape(metrics)
    for _ in range(7):
        assert sk.get_context(session.id, "file", "a.py") is not None
    after = scrape(metrics)
    assert value(after, "state_cache_hits_total", tier="hot") - \
        value(before, "state_cache_hits_total", tier="hot") == 7
    assert value(after, "state_cache_misses_total", tier="hot") == \
        value(before, "state_cache_misses_total", tier="hot")
    assert value(after, "state_cache_bytes", tier="hot") > 0
    assert value(after, "state_cache_entries", tier="hot") >= 1
    assert 0 < value(after, "state_cache_hit_rate") <= 1
    assert value(after, "state_memory_usage_bytes") > 0


def test_hot_tier_evictions_are_counted(open_system: Open) -> None:
    sk, metrics = open_system(hot_cache_bytes=2000)
    session = sk.create_session("alice")
    for i in range(20):
        sk.set_context(session.id, "note", f"k{i}", "x" * 200)
        sk.get_context(session.id, "note", f"k{i}")
    assert value(scrape(metrics), "state_cache_evictions_total", tier="hot") > 0


def test_working_memory_is_a_tier(open_system: Open) -> None:
    sk, metrics = open_system()
    sk.memory.store("plan", {"steps": 3}, importance=0.9)  # > 0.8: placed in working memory
    for _ in range(3):
        sk.memory.retrieve("plan")
    samples = scrape(metrics)
    assert value(samples, "state_cache_hits_total", tier="working") == 3
    assert value(samples, "state_cache_bytes", tier="working") > 0


def test_latency_histograms_count_outermost_transactions(open_system: Open) -> None:
    sk, metrics = open_system()
    before = scrape(metrics)
    sessions = [sk.create_session(f"user{i}") for i in range(3)]
    with sk.store.atomic():  # one outermost transaction, however many writes inside
        sk.create_session("a")
        sk.create_session("b")
    for s in sessions:
        sk.store.get_session(s.id)  # past the hot tier: a read transaction each
    after = scrape(metrics)
    writes = value(after, "state_write_latency_seconds_count") - \
        value(before, "state_write_latency_seconds_count")
    reads = value(after, "state_query_latency_seconds_count") - \
        value(before, "state_query_latency_seconds_count")
    assert (writes, reads) == (4, 3)
    assert value(after, "state_write_latency_seconds_sum") > \
        value(before, "state_write_latency_seconds_sum")
    assert value(after, "state_write_latency_seconds_bucket", le="+Inf") == \
        value(after, "state_write_latency_seconds_count")


def test_failed_transactions_are_counted(open_system: Open) -> None:
    sk, metrics = open_system()
    with pytest.raises(RuntimeError), sk.store.atomic():
        sk.create_session("doomed")
        raise RuntimeError("rolled back")
    samples = scrape(metrics)
    assert value(samples, "state_transaction_failures_total", kind="write") == 1
    assert value(samples, "state_write_latency_seconds_count") == 1
    assert metrics.generate_performance_report().failed_writes == 1


def test_conflicts_are_counted_by_strategy_and_outcome(open_system: Open) -> None:
    sk, metrics = open_system()
    metrics.record_sync(sk.sync_state("planner", {"plan": "a"}))  # no conflict
    stale = {"plan": 0}
    metrics.record_sync(sk.sync_state("editor", {"plan": "b"}, base_versions=stale,
                                      strategy="last_write_wins"))
    metrics.record_sync(sk.sync_state("critic", {"plan": "c"}, base_versions=stale,
                                      strategy="keep_current"))
    pending = sk.sync_state("human", {"plan": "d"}, base_versions=stale,
                            strategy="user_decides")
    metrics.record_sync(pending)
    metrics.record_resolution(sk.resolve_conflict(pending.pending["plan"], "proposed"))
    samples = scrape(metrics)
    counted = {(s, a): value(samples, "state_sync_conflicts_total", strategy=s, action=a)
               for s, a in [("last_write_wins", "write"), ("keep_current", "keep"),
                            ("user_decides", "pending"), ("user_decides", "resolved")]}
    assert counted == {k: 1 for k in counted}
    assert metrics.generate_performance_report().conflicts == {
        "last_write_wins": {"write": 1}, "keep_current": {"keep": 1},
        "user_decides": {"pending": 1, "resolved": 1}}


def test_store_wide_conflicts_agree_with_the_process_count(open_system: Open) -> None:
    """The exporter's audit-log count sees what another process's metrics saw."""
    exporter_side, _ = open_system()
    collector = StoreCollector(exporter_side.store)
    registry = CollectorRegistry()
    registry.register(collector)
    sk, metrics = open_system()
    first = {"lww": 1, "merge": {"a": 1}, "keep": 1, "person": 1, "max": 1}
    later = {"lww": ("last_write_wins", 2), "merge": ("merge", {"b": 2}),
             "keep": ("keep_current", 2), "person": ("user_decides", 2), "max": ("max", 2)}
    metrics.record_sync(sk.sync_state("a", first))
    for key, (strategy, proposed) in later.items():
        metrics.record_sync(sk.sync_state("b", {key: proposed}, base_versions={key: 0},
                                          strategy=strategy))
    for conflict in sk.sync_manager.conflicts():
        metrics.record_resolution(sk.resolve_conflict(conflict.id, "current"))
    ours = metrics.generate_performance_report().conflicts
    store_side = parse_samples(generate_latest(registry).decode())
    seen = {(s, a): int(n) for (name, labels), n in store_side.items()
            if name == "state_store_sync_conflicts_total"
            for s, a in [(dict(labels)["strategy"], dict(labels)["action"])]}
    assert seen == {(s, a): n for s, actions in ours.items() for a, n in actions.items()}
    assert value(store_side, "state_store_up") == 1


def test_errors_are_counted_by_type(open_system: Open) -> None:
    _, metrics = open_system()
    for exc in (NotFoundError("session", "ses_x"), NotFoundError("task", "tsk_x"),
                ValidationError("bad", field="x"), RuntimeError("a bug, not a figure")):
        metrics.count_error(exc)
    samples = scrape(metrics)
    assert value(samples, "state_errors_total", type="NotFoundError") == 2
    assert value(samples, "state_errors_total", type="ValidationError") == 1
    assert metrics.generate_performance_report().errors == {"NotFoundError": 2,
                                                             "ValidationError": 1}


def test_gc_and_recovery_durations(open_system: Open) -> None:
    _, metrics = open_system()
    metrics.observe_gc(0.2)
    metrics.observe_gc(0.4)
    metrics.observe_recovery(3.0)
    samples = scrape(metrics)
    assert value(samples, "state_gc_duration_seconds_count") == 2
    assert value(samples, "state_gc_duration_seconds_sum") == pytest.approx(0.6)
    assert value(samples, "state_recovery_time_seconds_count") == 1
    report = metrics.generate_performance_report()
    assert report.gc_runs == 2
    assert report.avg_gc_duration == pytest.approx(0.3)
    assert report.avg_recovery_time == pytest.approx(3.0)


def test_each_system_has_its_own_registry(open_system: Open) -> None:
    first, m1 = open_system()
    _, m2 = open_system()
    assert m1.registry is not m2.registry
    first.create_session("alice")
    assert value(scrape(m1), "state_write_latency_seconds_count") == 1
    assert value(scrape(m2), "state_write_latency_seconds_count") == 0


def test_a_given_registry_is_shared_and_left_clean(db_url: str) -> None:
    registry = CollectorRegistry()
    with StateSystem(StateConfig(db=db_url, metrics=False)) as sk:
        metrics = StateMetrics.for_system(sk, registry=registry)
        assert metrics.registry is registry
        with pytest.raises(ConfigError, match="own registry"):
            StateMetrics(registry=registry)
        metrics.close()
        # Closed: the names are free again, and the store is no longer observed.
        again = StateMetrics.for_system(sk, registry=registry)
        sk.create_session("alice")
        assert metrics.write_latency.snapshot().count == 0
        assert again.write_latency.snapshot().count == 1
        again.close()
    assert list(registry.collect()) == []


def test_a_store_that_does_not_answer_is_reported_not_raised(db_url: str) -> None:
    store = open_store(StateConfig(db=db_url, metrics=False))
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    store.close()
    samples = parse_samples(generate_latest(registry).decode())
    assert value(samples, "state_store_up") == 0
    assert not [name for name, _ in samples if name.startswith("state_store_rows")]
