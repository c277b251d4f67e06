"""Similar past decisions: the features, the Jaccard index, and the lookup on every backend."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeep import InvalidIdError, NotJSONError, Store, ValidationError
from statekeep.codec import canonical_hash
from statekeep.learning.similar import (
    features,
    jaccard,
    similar_decisions,
    similar_to,
    similarity,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2, allow_nan=False)
    | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=12,
)


def test_features_are_paths_to_leaves() -> None:
    assert features({"lang": "py", "files": ["a.py", "b.py"], "opts": {}}) == {
        (("lang",), '"py"'), (("files", 0), '"a.py"'), (("files", 1), '"b.py"'),
        (("opts",), "{}"),
    }
    assert features(3) == {((), "3")}
    assert features([]) == {((), "[]")}
    assert features(None) == {((), "null")}
    # A key that looks like an index is not an index; 1, 1.0 and true differ.
    assert features({"0": 1}) != features([1])
    assert len(features([1, 1.0, True]) & features([1, 1, 1])) == 1


def test_similarity_is_the_share_of_common_leaves() -> None:
    a = {"lang": "py", "size": 3, "ci": True}
    assert similarity(a, a) == 1.0
    assert similarity(a, {"lang": "py", "size": 4, "ci": True}) == 2 / 4
    assert similarity(a, {"lang": "py"}) == 1 / 3
    assert similarity(a, {"other": 1}) == 0.0
    assert similarity(["a", "b"], ["b", "a"]) == 0.0  # lists compare by position


@settings(deadline=None, database=None, max_examples=300)
@given(json_values, json_values)
def test_similarity_is_one_exactly_for_equal_contexts(a, b) -> None:
    s = similarity(a, b)
    assert 0.0 <= s <= 1.0
    assert s == similarity(b, a)
    assert (s == 1.0) == (canonical_hash(a) == canonical_hash(b))
    assert jaccard(features(a), features(a)) == 1.0


# --- the lookup ----------------------------------------------------------------------


def test_exact_matches_first_then_nearest(make_store, clock) -> None:
    store = make_store(clock=clock, similar_decisions_scan=3)
    s = store.create_session("alice")
    ctx = {"lang": "py", "size": "small", "ci": True}
    old_exact = store.record_decision("tool", "ruff", context=dict(reversed(ctx.items())),
                                      session_id=s.id, outcome="fine")
    for i in range(5):  # pushes the exact match out of the scan window
        clock.advance(seconds=1)
        store.record_decision("tool", f"filler{i}", context={"other": i}, session_id=s.id)
    clock.advance(seconds=1)
    near2 = store.record_decision("tool", "black", context={"lang": "py", "size": "small"},
                                  session_id=s.id, user_override=True)
    clock.advance(seconds=1)
    near1 = store.record_decision("tool", "pylint", context={"lang": "py"}, session_id=s.id,
                                  feedback_score=-0.5)
    clock.advance(seconds=1)
    store.record_decision("lint", "x", context=ctx, session_id=s.id)  # another type
    found = similar_decisions(store, "tool", ctx)
    assert [f.decision.id for f in found] == [old_exact.id, near2.id, near1.id]
    assert [(f.exact, f.similarity) for f in found] == [(True, 1.0), (False, 2 / 3),
                                                        (False, 1 / 3)]
    assert (found[0].outcome, found[1].user_override, found[2].feedback_score) == (
        "fine", True, -0.5)
    assert found[0].to_dict()["decision"] == old_exact.to_dict()
    assert [f.decision.id for f in similar_decisions(store, "tool", ctx, limit=2)] == [
        old_exact.id, near2.id]
    assert [f.decision.id for f in similar_decisions(store, "tool", ctx, scan=0)] == [
        old_exact.id]


def test_ties_are_newest_first(make_store, clock) -> None:
    store = make_store(clock=clock)
    ids = []
    for i in range(3):
        ids.append(store.record_decision("t", str(i), context={"a": 1, "b": i}).id)
        clock.advance(seconds=1)
    same = [store.record_decision("t", "same", context={"a": 1}).id]
    clock.advance(seconds=1)
    same.append(store.record_decision("t", "same", context={"a": 1}).id)
    found = similar_decisions(store, "t", {"a": 1})
    assert [f.decision.id for f in found] == [same[1], same[0], *reversed(ids)]
    assert found == similar_decisions(store, "t", {"a": 1})  # deterministic


def test_only_the_users_own_decisions(make_store, clock) -> None:
    store = make_store(clock=clock)
    a = store.create_session("alice")
    b = store.create_session("bob")
    mine = store.record_decision("t", "x", context={"k": 1}, session_id=a.id)
    store.record_decision("t", "y", context={"k": 1}, session_id=b.id)
    store.record_decision("t", "z", context={"k": 1})  # nobody's
    assert [f.decision.id for f in similar_decisions(store, "t", {"k": 1}, user_id="alice")
            ] == [mine.id]
    assert len(similar_decisions(store, "t", {"k": 1})) == 3
    assert similar_decisions(store, "t", {"k": 1}, user_id="carol") == []


def test_decisions_without_a_context(store: Store) -> None:
    given = canonical_hash({"secret": "context"})
    hashed = store.record_decision("t", "h", context_hash=given)
    none = store.record_decision("t", "n")  # context None: the hash of null
    store.record_decision("t", "c", context={"secret": "other"})
    # A hash-only decision is found by its hash, and by nothing else.
    assert [f.decision.id for f in similar_decisions(store, "t", {"secret": "context"})] == [
        hashed.id]
    assert [f.decision.id for f in similar_decisions(store, "t", None)] == [none.id]
    assert similar_to(store, hashed) == []
    twin = store.record_decision("t", "h2", context_hash=given)
    assert [f.decision.id for f in similar_to(store, hashed)] == [twin.id]


def test_similar_to_leaves_the_decision_out(make_store, clock) -> None:
    store = make_store(clock=clock)
    d1 = store.record_decision("t", "1", context={"a": 1, "b": 2})
    clock.advance(seconds=1)
    d2 = store.record_decision("t", "2", context={"a": 1, "b": 2})
    clock.advance(seconds=1)
    d3 = store.record_decision("t", "3", context={"a": 1})
    assert [(f.decision.id, f.exact) for f in similar_to(store, d2)] == [(d1.id, True),
                                                                        (d3.id, False)]
    assert [f.decision.id for f in similar_to(store, d2, limit=1)] == [d1.id]


def test_contexts_survive_the_backend_round_trip(store: Store) -> None:
    """Floats, nesting and unicode compare equal after the database had them."""
    ctx = {"ratio": 1.0, "big": 1e16, "n": 10, "deep": [{"é": [None, False]}], "s": "ü"}
    d = store.record_decision("t", "x", context=ctx)
    (found,) = similar_decisions(store, "t", ctx, scan=0)
    assert found.decision.id == d.id
    assert similarity(store.get_decision(d.id).context, ctx) == 1.0


def test_bad_questions(store: Store) -> None:
    with pytest.raises(InvalidIdError):
        similar_decisions(store, "9bad", {})
    with pytest.raises(InvalidIdError):
        similar_decisions(store, "t", {}, user_id="not an id")
    with pytest.raises(NotJSONError):
        similar_decisions(store, "t", {"x": {1, 2}})
    for limit in (0, -1, True, 1.5):
        with pytest.raises(ValidationError):
            similar_decisions(store, "t", {}, limit=limit)
    with pytest.raises(ValidationError):
        similar_decisions(store, "t", {}, scan=-1)
