"""ConflictResolver: the design's strategy order, rules as data, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from statekeep import StateConfig
from statekeep.errors import (
    ConfigError,
    NoRuleError,
    NotMergeableError,
    UnknownStrategyError,
    ValidationError,
)
from statekeep.sync.resolver import STRATEGIES, Conflict, ConflictResolver, Resolution


def conflict(key: str, current: Any, proposed: Any) -> Conflict:
    return Conflict(scope="global", key=key, component="editor", base_version=1,
                    current_version=2, current_value=current, proposed_value=proposed)


def resolver(*rules: str, critical: tuple[str, ...] = ("critical.*",)) -> ConflictResolver:
    return ConflictResolver(StateConfig(db=":memory:", sync_rules=rules,
                                        sync_critical_keys=critical))


# --- selection ------------------------------------------------------------------


def test_selection_order_critical_then_mergeable_then_rule_then_last_write() -> None:
    r = resolver("plan.*=keep_current", "count.*=max")
    assert r.select_strategy(conflict("critical.db", [1], [2])) == "user_decides"
    assert r.select_strategy(conflict("critical.n", 1, 2)) == "user_decides"
    assert r.select_strategy(conflict("plan.steps", ["a"], ["b"])) == "merge"  # before rules
    assert r.select_strategy(conflict("anything", {"a": 1}, {"b": 2})) == "merge"
    assert r.select_strategy(conflict("plan.title", "x", "y")) == "rule_based"
    assert r.select_strategy(conflict("count.runs", 1, 2)) == "rule_based"
    assert r.select_strategy(conflict("other", 1, 2)) == "last_write_wins"
    assert r.select_strategy(conflict("other", [1], {"a": 1})) == "last_write_wins"


def test_critical_patterns_are_configurable() -> None:
    r = resolver(critical=("secrets.*", "deploy"))
    assert r.is_critical("secrets.token") and r.is_critical("deploy")
    assert not r.is_critical("critical.db") and not r.is_critical("deploy.x")
    assert r.select_strategy(conflict("deploy", 1, 2)) == "user_decides"


def test_patterns_are_shell_style_and_case_sensitive() -> None:
    r = resolver("a?.x=max", "[bc]*=min", "Z*=keep_current")
    assert r.rule_for("ab.x") is not None and r.rule_for("abc.x") is None
    rule = r.rule_for("cat")
    assert rule is not None and rule.strategy == "min"
    assert r.rule_for("zebra") is None
    # A regex meta-character is a literal in a shell pattern.
    assert resolver("a.b=max").rule_for("axb") is None


def test_first_matching_rule_wins() -> None:
    r = resolver("counter.special=min", "counter.*=max")
    assert r.resolve(conflict("counter.special", 3, 5)).value == 3
    assert r.resolve(conflict("counter.other", 3, 5)).value == 5


def test_pattern_may_contain_equals_sign() -> None:
    rule = resolver("k=v*=max").rule_for("k=value")
    assert rule is not None and rule.pattern == "k=v*" and rule.text == "k=v*=max"


# --- resolution -------------------------------------------------------------------


def test_each_strategy_decides() -> None:
    r = resolver()
    c = conflict("k", ["a"], ["b"])
    assert r.resolve(c, "last_write_wins") == Resolution("last_write_wins", "write", ["b"])
    assert r.resolve(c, "merge") == Resolution("merge", "write", ["a", "b"])
    assert r.resolve(c, "user_decides") == Resolution("user_decides", "pending")
    assert r.resolve(c, "keep_current") == Resolution("keep_current", "keep", ["a"])
    assert r.resolve(conflict("k", 4, 9), "max") == Resolution("max", "write", 9)
    assert r.resolve(conflict("k", 4, 9), "min") == Resolution("min", "write", 4)
    # Unforced, the selection decides.
    assert r.resolve(c) == Resolution("merge", "write", ["a", "b"])
    assert r.resolve(conflict("critical.x", 1, 2)).action == "pending"


def test_rule_based_records_the_rule() -> None:
    r = resolver("count.*=max", "plan.*=merge", "ask.*=user_decides", "keep.*=keep_current",
                 "lww.*=last_write_wins", "low.*=min")
    assert r.resolve(conflict("count.a", 7, 3)) == Resolution("rule_based", "write", 7,
                                                               "count.*=max")
    assert r.resolve(conflict("plan.a", {"x": [1]}, {"x": [2]}), "rule_based") == Resolution(
        "rule_based", "write", {"x": [1, 2]}, "plan.*=merge")
    assert r.resolve(conflict("ask.a", 1, 2)).action == "pending"
    assert r.resolve(conflict("keep.a", 1, 2)) == Resolution("rule_based", "keep", 1,
                                                             "keep.*=keep_current")
    assert r.resolve(conflict("lww.a", 1, 2)).value == 2
    assert r.resolve(conflict("low.a", 1.5, 2)).value == 1.5
    assert r.apply_rules(conflict("count.a", 1, 2)).rule == "count.*=max"


def test_seed_method_names() -> None:
    r = resolver()
    c = conflict("k", {"a": [1]}, {"a": [2], "b": 0})
    assert r.merge_states(c) == {"a": [1, 2], "b": 0}
    assert r.escalate_to_user(c) == Resolution("user_decides", "pending")


def test_policy_is_a_resolve_callable() -> None:
    r = resolver()
    assert r.policy()(conflict("k", 1, 2)) == Resolution("last_write_wins", "write", 2)
    assert r.policy("keep_current")(conflict("k", 1, 2)).action == "keep"


# --- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["newest", "", "LAST_WRITE_WINS", "eval", 3, ["merge"]])
def test_unknown_strategy_is_refused(name: Any) -> None:
    r = resolver()
    with pytest.raises(UnknownStrategyError) as info:
        r.resolve(conflict("k", 1, 2), name)
    assert isinstance(info.value, ValidationError) and info.value.field == "strategy"
    assert repr(name) in str(info.value)
    with pytest.raises(UnknownStrategyError):
        r.policy(name)


def test_every_listed_strategy_is_known() -> None:
    r = resolver("k=max")
    for name in STRATEGIES:
        assert r.check_strategy(name) == name
        values = (1, 2) if name in ("max", "min", "rule_based") else ([1], [2])
        assert r.resolve(conflict("k", *values), name).action in ("write", "keep", "pending")


def test_rule_based_without_a_matching_rule() -> None:
    r = resolver("plan.*=merge")
    with pytest.raises(NoRuleError) as info:
        r.resolve(conflict("notes", 1, 2), "rule_based")
    assert "'notes'" in str(info.value) and "plan.*=merge" in str(info.value)
    with pytest.raises(NoRuleError, match="none configured"):
        resolver().resolve(conflict("x", 1, 2), "rule_based")
    r.check_rules(["plan.a", "plan.b"])
    with pytest.raises(NoRuleError, match="'other'"):
        r.check_rules(["plan.a", "other"])


@pytest.mark.parametrize(("current", "proposed"), [(1, 2), ("a", ["b"]), ([1], {"a": 1})])
def test_merge_of_non_mergeable_values(current: Any, proposed: Any) -> None:
    with pytest.raises(NotMergeableError):
        resolver().resolve(conflict("k", current, proposed), "merge")


@pytest.mark.parametrize(("current", "proposed"), [("1", 2), (True, 2), ([1], [2]),
                                                   (None, 1)])
def test_max_and_min_need_numbers(current: Any, proposed: Any) -> None:
    r = resolver("n=max")
    for strategy in ("max", "min"):
        with pytest.raises(NotMergeableError, match=strategy):
            r.resolve(conflict("n", current, proposed), strategy)
    if not isinstance(current, list):
        with pytest.raises(NotMergeableError):
            r.resolve(conflict("n", current, proposed))


def test_config_refuses_rules_that_name_code_or_unknown_strategies() -> None:
    for rule in ("plan.*=lambda c: c", "plan.*", "=max", "x=__import__('os')"):
        with pytest.raises(ConfigError):
            StateConfig(db=":memory:", sync_rules=(rule,))
