"""Retention rules are typed data: parsed and validated from config text (errors name
the rule), tried highest priority first, and the SQL form agrees with the Python form."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from statekeep import StateConfig, Store
from statekeep.errors import ConfigError
from statekeep.gc import GarbageCollector, RetentionRules, parse_rule
from statekeep.gc.rules import DEFAULT_RULES
from statekeep.store import gc as gcsql


def test_text_form_round_trips() -> None:
    rule = parse_rule("scratch:context:status=expired:age<3d:importance>0.25=collect@600")
    assert (rule.name, rule.entity, rule.action, rule.priority) == (
        "scratch", "context", "collect", 600)
    assert rule.statuses == frozenset({"expired"})
    assert rule.max_age_hours == 72.0
    assert rule.min_importance == 0.25
    assert parse_rule(rule.text()) == rule
    plain = parse_rule(" user_preference : preference = keep @ 95 ")
    assert plain.text() == "user_preference:preference=keep@95"


def test_defaults_are_the_seeds_four_rules_after_the_guards() -> None:
    rules = RetentionRules.from_config(StateConfig(db=":memory:"))
    assert [(r.name, r.priority, r.action) for r in rules.rules] == [
        ("min_age", 1000, "keep"), ("importance", 500, "keep"),
        ("active_session", 100, "keep"), ("checkpoint", 100, "keep"),
        ("user_preference", 95, "keep"), ("recent_decision", 90, "keep")]
    assert len(DEFAULT_RULES) == 4
    decision = next(r for r in rules.rules if r.name == "recent_decision")
    assert decision.max_age_hours == 72.0
    custom = StateConfig(db=":memory:", gc_decision_retention_hours=12.0)
    again = RetentionRules.from_config(custom)
    assert next(r for r in again.rules if r.name == "recent_decision").max_age_hours == 12.0


def test_first_match_by_priority_decides() -> None:
    rules = RetentionRules.from_texts([
        "keep_notes:context:importance>0.3=keep@50",
        "drop_expired:context:status=expired=collect@600",
    ])
    # The collect rule outranks the importance guard (500), not the min-age guard (1000).
    d = rules.decide("context", statuses=["expired"], age_hours=48, importance=0.9)
    assert (d.keep, d.rule) == (False, "drop_expired")
    d = rules.decide("context", statuses=["expired"], age_hours=2, importance=0.9)
    assert (d.keep, d.rule) == (True, "min_age")
    d = rules.decide("context", statuses=["live"], age_hours=48, importance=0.9)
    assert (d.keep, d.rule) == (True, "importance")
    d = rules.decide("context", statuses=["live"], age_hours=48, importance=0.5)
    assert (d.keep, d.rule) == (True, "keep_notes")
    d = rules.decide("context", statuses=["live"], age_hours=48, importance=0.1)
    assert (d.keep, d.rule) == (False, "unreachable")
    # Equal priorities keep their configured order.
    tie = RetentionRules.from_texts(["a:blob=collect@10", "b:blob=keep@10"])
    assert tie.decide("blob", age_hours=99).rule == "a"


def test_guards_follow_their_settings() -> None:
    off = RetentionRules.from_texts([], min_age_hours=0, importance_keep=1.0)
    assert [r.name for r in off.rules][:1] == ["importance"]
    assert not off.decide("context", statuses=["expired"], age_hours=0.1,
                          importance=1.0).keep


@pytest.mark.parametrize(("rule", "why"), [
    ("x:widget=keep@1", "unknown entity type 'widget'"),
    ("x:context=keep", "no '@priority'"),
    ("x:context=keep@high", "not a whole number"),
    ("x:context=keep@-1", "not a whole number"),
    ("x:context=keep@1000", "above 999"),
    ("x:context=destroy@5", "'=keep' or '=collect'"),
    ("x:context:age>3h=keep@5", "unknown condition 'age>3h'"),
    ("x:context:age<-5h=keep@5", "negative"),
    ("x:context:age<0h=keep@5", "above zero"),
    ("x:context:age<5=keep@5", "hours or days"),
    ("x:context:age<nanh=keep@5", "hours or days"),
    ("x:context:age<1h:age<2h=keep@5", "age twice"),
    ("x:context:importance>-0.5=keep@5", "negative"),
    ("x:context:importance>1.5=keep@5", "from 0 to 1"),
    ("x:session:importance>0.5=keep@5", "has no importance"),
    ("x:session:status=running=keep@5", "unknown session status 'running'"),
    ("x:decision:status=active=keep@5", "has no status"),
    ("x:decision=collect@5", "only keep"),
    ("x:preference:age<1h=collect@5", "only keep"),
    ("x:snapshot:status=held=collect@5", "never collected"),
    ("x:session:status=completed|active=collect@5", "never collected"),
    ("Bad-Name:context=keep@5", "name 'Bad-Name'"),
    ("min_age:context=keep@5", "built-in guard"),
    ("x:context:__import__('os').system('true')=keep@5", "unknown condition"),
    ("obj.type == 'session'", "no '@priority'"),
])
def test_bad_rules_are_refused_naming_the_rule(rule: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        StateConfig(db=":memory:", gc_rules=(rule,))
    assert repr(rule) in str(info.value)
    assert why in str(info.value)


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="already named 'a'"):
        StateConfig(db=":memory:", gc_rules=("a:blob=keep@1", "a:context=keep@2"))


def test_rules_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKEEP_GC_RULES",
                       "drop:context:status=expired=collect@600, keep_recent:blob:age<2d=keep@7")
    config = StateConfig.load(db=":memory:")
    assert config.gc_rules == ("drop:context:status=expired=collect@600",
                               "keep_recent:blob:age<2d=keep@7")
    monkeypatch.setenv("STATEKEEP_GC_RULES", "drop:context=explode@1")
    with pytest.raises(ConfigError, match="drop:context=explode@1"):
        StateConfig.load(db=":memory:")


@pytest.mark.parametrize(("setting", "value"), [
    ("gc_min_age_hours", -1.0), ("gc_min_age_hours", float("nan")),
    ("gc_decision_retention_hours", float("inf")), ("gc_importance_keep", 1.5),
    ("gc_importance_keep", float("nan")), ("gc_batch_size", 0), ("gc_batch_size", -5),
    ("gc_interval_hours", -2.0), ("gc_collect_threshold", 0),
])
def test_bad_gc_settings_are_refused(setting: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=setting):
        StateConfig(db=":memory:", **{setting: value})


RULE_SETS = [
    [],  # the seed's four
    ["drop:context:status=expired=collect@600", "keep_mid:context:importance>0.4=keep@300"],
    ["young_keep:context:age<100h=keep@900", "old_drop:context:importance>0.1=collect@800"],
]


@pytest.mark.parametrize("texts", RULE_SETS)
def test_sql_verdicts_agree_with_python(make_store: Callable[..., Store], clock: Any,
                                        texts: list[str]) -> None:
    """Every expired item's SQL verdict is the rule the Python form picks for its facts."""
    store = make_store(clock=clock)
    session = store.create_session("alice")
    rng = random.Random(11)
    start = clock.now
    for i in range(120):
        clock.now = start + timedelta(hours=rng.uniform(0, 200))
        store.set_context(session.id, "note", f"k{i}", {"i": i},
                          relevance_score=round(rng.random(), 2), ttl_seconds=60)
    clock.now = start + timedelta(hours=210)
    rules = RetentionRules.from_texts(texts)
    gc = GarbageCollector(store, rules=rules)
    queries = gc._queries(clock.now)
    page, cursor = queries.context_page(None, 1000)
    assert cursor is None and len(page) == 120
    verdicts = gc._verdicts["context"]
    for cand in page:
        item = store.get_context_by_id(cand.id)
        age = (clock.now - item.updated_at) / timedelta(hours=1)
        expected = gc.should_retain("context", statuses=["expired"], age_hours=age,
                                    importance=item.relevance_score)
        assert verdicts.decision(cand.verdict) == expected, (item, age)
    # The aggregate mark counts the same verdicts.
    counts = queries.count("context")
    assert sum(counts.values()) == 120
    assert counts == {v: sum(1 for c in page if c.verdict == v) for v in counts}
    assert gcsql.NO_MATCH in verdicts.collect
