"""merge_states: order-keeping unions that lose nothing, refusing what has no merge."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeep.errors import NotMergeableError, ValidationError
from statekeep.sync.merge import is_mergeable, merge_states, same_value

# JSON values: what the store holds (and so what a conflict compares).
scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(
    allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=4),
    max_leaves=12,
)
json_lists = st.lists(json_values, max_size=8)
json_dicts = st.dictionaries(st.text(max_size=4), json_values, max_size=6)


def contains(haystack: list[Any], needle: Any) -> bool:
    return any(same_value(needle, item) for item in haystack)


def dedupe(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not contains(out, item):
            out.append(item)
    return out


# --- lists ----------------------------------------------------------------------


def test_list_union_keeps_first_seen_order() -> None:
    assert merge_states(["b", "a", "c"], ["d", "a", "e", "b"]) == ["b", "a", "c", "d", "e"]


def test_list_union_works_with_unhashable_items() -> None:
    old = [{"step": 1}, [1, 2], {"step": 2}]
    new = [[1, 2], {"step": 3}, {"step": 1}]
    assert merge_states(old, new) == [{"step": 1}, [1, 2], {"step": 2}, {"step": 3}]


def test_list_items_equal_as_json_not_as_python() -> None:
    # Python says 1 == 1.0 == True; JSON holds three different values.
    assert merge_states([1], [1.0, True, 1]) == [1, 1.0, True]
    # Dicts equal up to key order are one value.
    assert merge_states([{"a": 1, "b": 2}], [{"b": 2, "a": 1}]) == [{"a": 1, "b": 2}]


def test_items_without_a_canonical_key_are_compared_one_by_one() -> None:
    class Odd:
        __hash__ = None  # type: ignore[assignment]

        def __init__(self, n: int) -> None:
            self.n = n

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Odd) and other.n == self.n

    a, b, a2 = Odd(1), Odd(2), Odd(1)
    assert merge_states([a, "x"], [a2, b, "x", a2]) == [a, "x", b, a2]


def test_repeats_count_like_a_multiset_and_the_stored_list_is_never_shortened() -> None:
    # The stored list keeps its repeats; an item appears as often as the side
    # holding it more often has it.
    assert merge_states(["a", "a"], ["b", "a"]) == ["a", "a", "b"]
    assert merge_states(["a"], ["b", "a", "a"]) == ["a", "b", "a"]
    assert merge_states([{"k": 1}], [{"k": 1}, {"k": 1}]) == [{"k": 1}, {"k": 1}]


def test_tuples_merge_as_lists() -> None:
    assert merge_states(("a",), ["b"]) == ["a", "b"]


# --- dicts and sets -----------------------------------------------------------------


def test_dicts_merge_recursively() -> None:
    old = {"files": ["a.py"], "meta": {"owner": "ann", "tags": ["x"]}, "n": 1}
    new = {"files": ["b.py", "a.py"], "meta": {"tags": ["y"], "lang": "py"}, "n": 2, "k": 0}
    assert merge_states(old, new) == {
        "files": ["a.py", "b.py"],
        "meta": {"owner": "ann", "tags": ["x", "y"], "lang": "py"},
        "n": 2,  # two scalars inside a dict: the incoming value
        "k": 0,
    }


def test_sets_union() -> None:
    assert merge_states({1, 2}, {2, 3}) == {1, 2, 3}
    merged = merge_states(frozenset({"a"}), {"b"})
    assert merged == frozenset({"a", "b"}) and isinstance(merged, frozenset)


@pytest.mark.parametrize(("old", "new"), [
    (1, 2), ("a", "b"), (None, [1]), ([1], {"a": 1}), ({"a": 1}, [1]), ({1}, [1]),
    (True, False), (1.5, 2),
])
def test_values_without_a_merge_are_refused(old: Any, new: Any) -> None:
    assert not is_mergeable(old, new)
    with pytest.raises(NotMergeableError) as info:
        merge_states(old, new)
    assert isinstance(info.value, ValidationError)
    assert type(old).__name__ in str(info.value)


def test_merge_does_not_mutate_its_inputs() -> None:
    old = {"a": [1], "b": {"c": [2]}}
    new = {"a": [3], "b": {"c": [4]}}
    merge_states(old, new)
    assert old == {"a": [1], "b": {"c": [2]}} and new == {"a": [3], "b": {"c": [4]}}


# --- properties ---------------------------------------------------------------------


def multiset_union(a: list[Any], b: list[Any]) -> list[Any]:
    """The model: ``a``, then each item of ``b`` beyond the count ``a`` has of it."""
    out = list(a)
    for i, item in enumerate(b):
        seen_in_b = sum(same_value(item, x) for x in b[:i + 1])
        if seen_in_b > sum(same_value(item, x) for x in a):
            out.append(item)
    return out


@settings(max_examples=100, deadline=None)
@given(json_lists)
def test_list_merge_is_idempotent(x: list[Any]) -> None:
    assert merge_states(x, x) == x


@settings(max_examples=100, deadline=None)
@given(json_dicts)
def test_dict_merge_is_idempotent(x: dict[str, Any]) -> None:
    assert merge_states(x, x) == x


@settings(max_examples=100, deadline=None)
@given(json_lists, json_lists)
def test_list_merge_contains_every_item_in_first_seen_order(a: list[Any], b: list[Any]) -> None:
    merged = merge_states(a, b)
    assert all(contains(merged, item) for item in a + b)
    assert merged[:len(a)] == a  # the stored list, untouched, first
    assert merged == multiset_union(a, b)


@settings(max_examples=100, deadline=None)
@given(json_lists, json_lists)
def test_duplicate_free_lists_give_each_item_once(a: list[Any], b: list[Any]) -> None:
    a, b = dedupe(a), dedupe(b)
    assert merge_states(a, b) == dedupe(a + b)


@settings(max_examples=100, deadline=None)
@given(json_lists, json_lists, json_lists)
def test_list_merge_is_associative(a: list[Any], b: list[Any], c: list[Any]) -> None:
    assert merge_states(merge_states(a, b), c) == merge_states(a, merge_states(b, c))


@settings(max_examples=100, deadline=None)
@given(json_dicts, json_dicts)
def test_dict_merge_keeps_every_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    merged = merge_states(a, b)
    assert set(merged) == set(a) | set(b)
    assert list(merged)[:len(a)] == list(a)  # the stored value's keys keep their order
    for k, v in b.items():
        if k not in a or not is_mergeable(a[k], v):
            assert same_value(merged[k], v)
        elif isinstance(v, list):
            assert merged[k] == multiset_union(a[k], v)


# Dicts whose values at each key are always lists: every pair merges, so the
# merge is a pure union and associativity holds.
list_dicts = st.dictionaries(st.sampled_from("abcd"), st.lists(scalars, max_size=4),
                             max_size=4)


@settings(max_examples=100, deadline=None)
@given(list_dicts, list_dicts, list_dicts)
def test_dict_of_lists_merge_is_associative(a: Any, b: Any, c: Any) -> None:
    assert same_value(merge_states(merge_states(a, b), c),
                      merge_states(a, merge_states(b, c)))
