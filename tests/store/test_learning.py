"""Decisions and preferences on every backend."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from statekeep import NotFoundError, Store, ValidationError


def _hash(value) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- decisions ---------------------------------------------------------------


def test_record_and_get_decision(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    t = store.create_task(s.id, "lint")
    d = store.record_decision(
        "tool_choice", "use ruff", context={"lang": "python", "size": 3},
        session_id=s.id, task_id=t.id, confidence=0.8, autonomous=True,
        reasoning={"why": ["fast", "one tool"]},
    )
    assert d.id.startswith("dec_")
    assert (d.session_id, d.task_id, d.decision_type, d.decision_made) == (
        s.id, t.id, "tool_choice", "use ruff")
    assert d.context_hash == _hash({"lang": "python", "size": 3})
    assert d.confidence == 0.8
    assert d.autonomous is True and d.user_override is False
    assert d.outcome is None and d.feedback_score is None
    assert d.reasoning == {"why": ["fast", "one tool"]}
    assert d.created_at == clock.now
    assert store.get_decision(d.id) == d


def test_context_hash_is_canonical(store: Store) -> None:
    a = store.record_decision("t", "x", context={"a": 1, "b": [1, 2]})
    b = store.record_decision("t", "y", context={"b": [1, 2], "a": 1})
    c = store.record_decision("t", "z", context={"a": 1, "b": [2, 1]})
    assert a.context_hash == b.context_hash != c.context_hash
    given = store.record_decision("t", "w", context_hash="ab" * 32)
    assert given.context_hash == "ab" * 32
    assert [d.id for d in store.list_decisions(context_hash=a.context_hash)] == [b.id, a.id]


def test_decision_without_session(store: Store) -> None:
    d = store.record_decision("global", "default model")
    assert d.session_id is None and d.task_id is None
    ev = store.audit(entity_type="decision", entity_id=d.id)
    assert len(ev) == 1 and ev[0].user_id is None and ev[0].session_id is None


def test_decision_task_must_be_of_the_session(store: Store) -> None:
    s1 = store.create_session("alice")
    s2 = store.create_session("alice")
    t1 = store.create_task(s1.id, "x")
    before = store.dump()
    with pytest.raises(ValidationError) as info:
        store.record_decision("t", "x", session_id=s2.id, task_id=t1.id)
    assert info.value.field == "task_id"
    with pytest.raises(NotFoundError):
        store.record_decision("t", "x", session_id=s1.id, task_id="ghost")
    with pytest.raises(NotFoundError):
        store.record_decision("t", "x", session_id="ghost")
    assert store.dump() == before


def test_update_decision(store: Store) -> None:
    s = store.create_session("alice")
    d = store.record_decision("t", "x", session_id=s.id)
    u = store.update_decision(d.id, outcome="worked", feedback_score=-0.5, user_override=True)
    assert (u.outcome, u.feedback_score, u.user_override) == ("worked", -0.5, True)
    assert u.created_at == d.created_at and u.decision_made == "x"
    assert store.get_decision(d.id) == u
    cleared = store.update_decision(d.id, outcome=None, feedback_score=None)
    assert cleared.outcome is None and cleared.feedback_score is None
    assert cleared.user_override is True
    ev = store.audit(entity_type="decision", entity_id=d.id)
    assert [e.event_type for e in ev] == ["create", "update", "update"]
    assert ev[1].old_value == d.to_dict() and ev[1].new_value == u.to_dict()
    assert (ev[1].user_id, ev[1].session_id) == ("alice", s.id)
    before = store.dump()
    assert store.update_decision(d.id) == cleared  # nothing asked, nothing written
    assert store.dump() == before
    with pytest.raises(NotFoundError):
        store.update_decision("ghost", outcome="x")


def test_list_decisions(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    d1 = store.record_decision("a", "1", session_id=s.id)
    clock.advance(seconds=1)
    d2 = store.record_decision("b", "2", session_id=s.id)
    clock.advance(seconds=1)
    d3 = store.record_decision("a", "3")
    assert [d.id for d in store.list_decisions()] == [d3.id, d2.id, d1.id]
    assert [d.id for d in store.list_decisions(session_id=s.id)] == [d2.id, d1.id]
    assert [d.id for d in store.list_decisions(decision_type="a")] == [d3.id, d1.id]
    assert [d.id for d in store.list_decisions(decision_type="a", session_id=s.id)] == [d1.id]
    assert [d.id for d in store.list_decisions(limit=1)] == [d3.id]
    with pytest.raises(ValidationError):
        store.list_decisions(limit=0)


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 0.5])
def test_confidence_bounds_accepted(store: Store, value) -> None:
    assert store.record_decision("t", "x", confidence=value).confidence == float(value)


# --- preferences ---------------------------------------------------------------


def test_set_and_get_preference(make_store, clock) -> None:
    store = make_store(clock=clock)
    p = store.set_preference("alice", "style", "indent", {"spaces": 4})
    assert p.id.startswith("prf_")
    assert (p.user_id, p.preference_type, p.preference_key) == ("alice", "style", "indent")
    assert p.preference_value == {"spaces": 4}
    assert p.confidence == 0.5  # the seed's default
    assert p.observation_count == 1
    assert p.created_at == p.updated_at == p.last_observed == clock.now
    assert store.get_preference("alice", "style", "indent") == p
    assert store.get_preference("bob", "style", "indent") is None


def test_preference_observations_accumulate(make_store, clock) -> None:
    store = make_store(clock=clock)
    p1 = store.set_preference("alice", "style", "indent", 4, confidence=0.6)
    clock.advance(minutes=5)
    p2 = store.set_preference("alice", "style", "indent", 2)
    assert p2.id == p1.id and p2.created_at == p1.created_at
    assert p2.observation_count == 2
    assert p2.confidence == 0.6  # kept unless given
    assert p2.preference_value == 2
    assert p2.last_observed == p2.updated_at == clock.now
    p3 = store.set_preference("alice", "style", "indent", 2, confidence=0.95)
    assert p3.observation_count == 3 and p3.confidence == 0.95
    ev = store.audit(entity_type="preference", entity_id=p1.id)
    assert [e.event_type for e in ev] == ["create", "update", "update"]
    assert ev[1].old_value == p1.to_dict() and ev[1].new_value == p2.to_dict()
    assert all(e.user_id == "alice" and e.session_id is None for e in ev)


def test_list_and_delete_preferences(store: Store) -> None:
    a = store.set_preference("alice", "style", "indent", 4, confidence=0.9)
    b = store.set_preference("alice", "tool", "linter", "ruff", confidence=0.3)
    c = store.set_preference("alice", "style", "quotes", "double", confidence=0.7)
    store.set_preference("bob", "style", "indent", 2)
    assert [p.id for p in store.list_preferences("alice")] == [a.id, c.id, b.id]
    assert [p.id for p in store.list_preferences("alice", preference_type="style")] == [a.id,
                                                                                         c.id]
    assert store.list_preferences("carol") == []
    assert store.delete_preference("alice", "style", "indent") is True
    assert store.get_preference("alice", "style", "indent") is None
    before = store.dump()
    assert store.delete_preference("alice", "style", "indent") is False
    assert store.dump() == before
    assert store.get_preference("bob", "style", "indent") is not None
    ev = store.audit(entity_type="preference", entity_id=a.id)
    assert [e.event_type for e in ev] == ["create", "delete"]
    assert ev[1].old_value == a.to_dict() and ev[1].new_value is None


def test_preference_values_round_trip(store: Store) -> None:
    for i, value in enumerate([None, 0, "x", [1, [2]], {"a": {"b": None}}, 1.5, True]):
        p = store.set_preference("alice", "misc", f"k{i}", value)
        assert p.preference_value == value
        assert store.get_preference("alice", "misc", f"k{i}").preference_value == value
