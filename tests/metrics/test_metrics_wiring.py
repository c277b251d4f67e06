"""The façade's own metrics: built by StateSystem, fed by its hooks.

Skipped until system.py builds ``StateSystem.metrics`` (the wiring belongs to
the façade's owner); everything else about metrics is tested without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from metrics_scrape import parse_samples, value
from prometheus_client import CollectorRegistry

from statekeep import StateConfig, StateSystem
from statekeep.errors import NotFoundError
from statekeep.metrics import StateMetrics


@pytest.fixture
def sk(db_url: str) -> Iterator[StateSystem]:
    system = StateSystem(StateConfig(db=db_url))
    try:
        if not isinstance(getattr(system, "metrics", None), StateMetrics):
            pytest.skip("system.py does not build StateSystem.metrics yet")
        yield system
    finally:
        system.close()


def metrics_of(sk: StateSystem) -> StateMetrics:
    metrics = getattr(sk, "metrics", None)
    assert isinstance(metrics, StateMetrics)
    return metrics


def scrape(sk: StateSystem) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse_samples(metrics_of(sk).exposition().decode())


def test_the_facade_times_its_store(sk: StateSystem) -> None:
    session = sk.create_session("alice")
    sk.get_session(session.id)
    samples = scrape(sk)
    assert value(samples, "state_write_latency_seconds_count") >= 1
    assert value(samples, "state_query_latency_seconds_count") >= 1
    assert value(samples, "state_cache_misses_total", tier="hot") >= 1


def test_sync_conflicts_are_counted_by_the_facade(sk: StateSystem) -> None:
    sk.sync_state("planner", {"plan": 1, "goal": 1})
    sk.sync_state("editor", {"plan": 2}, base_versions={"plan": 0},
                  strategy="last_write_wins")
    pending = sk.sync_state("human", {"goal": 2}, base_versions={"goal": 0},
                            strategy="user_decides")
    sk.resolve_conflict(pending.pending["goal"], "proposed")
    samples = scrape(sk)
    for strategy, action in [("last_write_wins", "write"), ("user_decides", "pending"),
                             ("user_decides", "resolved")]:
        assert value(samples, "state_sync_conflicts_total", strategy=strategy,
                     action=action) == 1


def test_errors_are_counted_once_by_type(sk: StateSystem) -> None:
    for call in (lambda: sk.get_session("ses_missing"),       # hot-path method
                 lambda: sk.update_session("ses_missing"),    # forwarded to the store
                 lambda: sk.resume_session("ses_missing")):   # calls get_session inside
        with pytest.raises(NotFoundError):
            call()
    assert value(scrape(sk), "state_errors_total", type="NotFoundError") == 3


def test_recovery_time_is_observed(sk: StateSystem) -> None:
    point = sk.create_recovery_point("before")
    sk.create_session("alice")
    recover = getattr(sk, "recover", None)
    if recover is None:
        pytest.skip("the façade has no recover() yet")
    recover(point.id, dry_run=True)
    recover(point.id)
    assert value(scrape(sk), "state_recovery_time_seconds_count") == 1  # dry runs are not


def test_report_from_the_facade(sk: StateSystem) -> None:
    sk.create_session("alice")
    report = sk.generate_performance_report()  # type: ignore[attr-defined]
    assert report.writes >= 1


def test_metrics_off_and_a_given_registry(db_url: str, sk: StateSystem) -> None:
    with StateSystem(StateConfig(db=db_url, metrics=False)) as off:
        assert getattr(off, "metrics", "absent") is None
    registry = CollectorRegistry()
    with StateSystem(StateConfig(db=db_url), metrics_registry=registry) as given:
        assert metrics_of(given).registry is registry
        assert list(registry.collect())
    assert list(registry.collect()) == []  # close() left the registry clean
