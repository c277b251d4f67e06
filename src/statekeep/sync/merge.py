"""Merging two versions of a synchronised value: the ``merge`` strategy.

A merge must never lose an item either side holds, and must not invent an
order: lists are united keeping the order in which items were first seen
(the stored value's items, then the incoming value's new ones). An item both
sides hold appears once -- strictly, as often as the side holding it more
times has it, so a stored list is never shortened and merging a value with
itself changes nothing. The obvious ``list(set(a + b))`` does neither -- it
reorders, and it fails on the dicts and lists that JSON lists are full of --
so items are compared through a hashable canonical key instead, with a linear
fallback for the rare item that has none.

Equality is JSON equality: ``1``, ``1.0`` and ``true`` are three different
values (Python's ``==`` says they are one), and dicts equal up to key order are
one value. The store compares values the same way, so a merge that adds
nothing is recognised as no change.

Only containers merge. Two scalars (or a list and a dict) have no merge, and
:func:`merge_states` refuses them with :class:`NotMergeableError` rather than
silently picking one: picking is what the other strategies are for. Inside a
dict, though, a key both sides hold with values that cannot merge takes the
incoming value -- the recursive merge of the design -- because refusing the
whole document over one scalar field would make dict merges useless.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from statekeep.errors import NotMergeableError

__all__ = ["is_mergeable", "merge_states", "same_value"]

_LIST = (list, tuple)
_SET = (set, frozenset)


class _NoKey(Exception):
    """An item (or something inside it) is unhashable and not a JSON container."""


def _kind(value: Any) -> str | None:
    if isinstance(value, _LIST):
        return "list"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, _SET):
        return "set"
    return None


def is_mergeable(old: Any, new: Any) -> bool:
    """True when :func:`merge_states` has a merge for this pair (same container kind)."""
    kind = _kind(old)
    return kind is not None and kind == _kind(new)


def _key(value: Any) -> Hashable:
    """A hashable stand-in for ``value`` that is equal exactly when the values are
    equal as JSON (bool, int and float kept apart; dict key order ignored)."""
    if isinstance(value, str):
        return value  # the common case, and no other kind of key is a bare str
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, _LIST):
        return ("list", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_key(k), _key(v)) for k, v in value.items()))
    if isinstance(value, _SET):
        return ("set", frozenset(_key(v) for v in value))
    try:
        hash(value)
    except TypeError:
        raise _NoKey from None
    return ("object", type(value), value)


def same_value(a: Any, b: Any) -> bool:
    """Equality as :func:`merge_states` (and the store) understand it."""
    try:
        return _key(a) == _key(b)
    except _NoKey:
        return bool(a == b)


def _union(old: Iterable[Any], new: Iterable[Any]) -> list[Any]:
    """``old`` as it is, then each item of ``new`` beyond what ``old`` already holds.

    Counted as a multiset -- an item appears as often as it does in the side
    with more of it -- so the stored list is never shortened (repeats in it
    may mean something) and merging a list with itself changes nothing.
    """
    out = list(old)
    have: dict[Hashable, int] = {}
    odd_have: list[tuple[Any, int]] = []  # items without a key: compared one by one (rare)
    for item in out:
        try:
            key = _key(item)
        except _NoKey:
            _bump(odd_have, item)
        else:
            have[key] = have.get(key, 0) + 1
    taken: dict[Hashable, int] = {}
    odd_taken: list[tuple[Any, int]] = []
    for item in new:
        try:
            key = _key(item)
        except _NoKey:
            if _bump(odd_taken, item) > _count(odd_have, item):
                out.append(item)
        else:
            n = taken[key] = taken.get(key, 0) + 1
            if n > have.get(key, 0):
                out.append(item)
    return out


def _bump(counts: list[tuple[Any, int]], item: Any) -> int:
    for i, (other, n) in enumerate(counts):
        if same_value(item, other):
            counts[i] = (other, n + 1)
            return n + 1
    counts.append((item, 1))
    return 1


def _count(counts: list[tuple[Any, int]], item: Any) -> int:
    return next((n for other, n in counts if same_value(item, other)), 0)


def _merge_dicts(old: dict[Any, Any], new: dict[Any, Any]) -> dict[Any, Any]:
    out = dict(old)
    for k, v in new.items():
        if k in out and is_mergeable(out[k], v):
            out[k] = merge_states(out[k], v)
        else:
            out[k] = v
    return out


def merge_states(old: Any, new: Any) -> Any:
    """The union of ``old`` (the stored value) and ``new`` (the incoming one).

    Lists (and tuples) give a list: ``old``'s items, then those of ``new``'s
    that ``old`` does not already hold (as many times as ``new`` has them
    more). Dicts merge key by key, recursively; a key whose two values cannot
    merge takes ``new``'s. Sets give their union (of
    ``old``'s type). Anything else raises :class:`NotMergeableError`.
    """
    kind = _kind(old)
    if kind is None or kind != _kind(new):
        raise NotMergeableError(
            f"cannot merge {type(old).__name__} with {type(new).__name__}: only two lists,"
            " two dicts or two sets merge", field="value")
    if kind == "list":
        return _union(old, new)
    if kind == "dict":
        return _merge_dicts(old, new)
    return type(old)(old | new)
