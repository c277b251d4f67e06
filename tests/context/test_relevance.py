"""The relevance formula: the seed's numbers, its caps, and its explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekeep.config import StateConfig
from statekeep.context.relevance import (
    TASK_DIRECT,
    TASK_NONE_ACTIVE,
    ItemFacts,
    RelevanceCalculator,
    RelevanceWeights,
)
from statekeep.errors import ConfigError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def facts(age_hours: float = 0.0, accesses: int = 0, relations: int = 0,
          strength: float = 0.0, task: float = TASK_NONE_ACTIVE,
          weight: float = 1.0) -> ItemFacts:
    return ItemFacts("ctx_1", NOW - timedelta(hours=age_hours), accesses, relations, strength,
                     task, "why", weight)


def test_seed_formula_by_hand() -> None:
    calc = RelevanceCalculator()
    # 10 h old, 3 accesses, relations of mean strength 0.8, referenced by a task
    got = calc.score(facts(10, 3, 2, 0.8, TASK_DIRECT), NOW)
    expected = (0.95 ** 10) * 0.3 + 0.3 * 0.2 + (0.8 * 0.3) * 0.25 + 1.0 * 0.25
    assert got == pytest.approx(expected)


def test_new_item_with_no_activity_and_no_tasks() -> None:
    # time 1.0 * 0.3 + task 0.5 * 0.25
    assert RelevanceCalculator().score(facts(), NOW) == pytest.approx(0.425)


def test_time_decays_per_hour() -> None:
    calc = RelevanceCalculator()
    a, b = calc.score(facts(0), NOW), calc.score(facts(1), NOW)
    assert a - b == pytest.approx(0.3 * (1 - 0.95))


def test_access_boost_is_capped_at_half() -> None:
    calc = RelevanceCalculator()
    assert calc.components(facts(accesses=5), NOW)[2] == pytest.approx(0.5)
    assert calc.components(facts(accesses=500), NOW)[2] == pytest.approx(0.5)
    assert calc.components(facts(accesses=2), NOW)[2] == pytest.approx(0.2)


def test_relationship_score_needs_relations() -> None:
    calc = RelevanceCalculator()
    assert calc.components(facts(relations=0, strength=0.9), NOW)[3] == 0.0
    assert calc.components(facts(relations=3, strength=0.9), NOW)[3] == pytest.approx(0.27)


def test_item_weight_scales_and_future_times_do_not_boost() -> None:
    calc = RelevanceCalculator()
    assert calc.score(facts(weight=0.5), NOW) == pytest.approx(0.425 / 2)
    assert calc.score(facts(age_hours=-5), NOW) == calc.score(facts(), NOW)


def test_custom_weights_come_from_config() -> None:
    config = StateConfig(db=":memory:", relevance_weight_task=1.0, relevance_weight_time=0.0,
                         relevance_weight_access=0.0, relevance_weight_relationship=0.0)
    calc = RelevanceCalculator(RelevanceWeights.from_config(config))
    assert calc.score(facts(task=0.6), NOW) == pytest.approx(0.6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True])
def test_bad_weights_are_refused(bad: float) -> None:
    with pytest.raises(ConfigError):
        RelevanceWeights(access=bad)


def test_zero_decay_is_refused() -> None:
    with pytest.raises(ConfigError):
        RelevanceWeights(decay_per_hour=0.0)


def test_explanation_adds_up_to_the_score() -> None:
    calc = RelevanceCalculator()
    f = facts(7, 2, 4, 0.6, 0.8)
    why = calc.explain(f, NOW)
    w = why.weights
    total = (why.time_score * w.time + why.access_score * w.access
             + why.relationship_score * w.relationship + why.task_score * w.task)
    assert why.score == pytest.approx(min(total, 1.0))
    assert why.age_hours == pytest.approx(7)
    assert why.to_dict()["weights"]["decay_per_hour"] == 0.95
    assert why.task_reason == "why"


@given(age=st.floats(0, 10_000), accesses=st.integers(0, 10**9),
       relations=st.integers(0, 1000), strength=st.floats(0, 1),
       task=st.sampled_from([1.0, 0.8, 0.6, 0.4, 0.5]), weight=st.floats(0, 1))
def test_score_is_always_between_zero_and_one(age: float, accesses: int, relations: int,
                                               strength: float, task: float,
                                               weight: float) -> None:
    score = RelevanceCalculator().score(facts(age, accesses, relations, strength, task,
                                              weight), NOW)
    assert 0.0 <= score <= 1.0


@given(age=st.floats(0, 1000), extra=st.floats(0.01, 1000))
def test_older_never_scores_higher(age: float, extra: float) -> None:
    calc = RelevanceCalculator()
    assert calc.score(facts(age + extra), NOW) <= calc.score(facts(age), NOW)
