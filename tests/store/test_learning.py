"""Decisions and preferences on every backend."""

from __future__ import annotations

import hashlib
import itertools
import threading
from datetime import datetime

import orjson
import pytest

from statekeep import InvalidIdError, NotFoundError, Preference, Store, ValidationError
from statekeep.learning.evidence import PreferenceUpdate


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
    # An explicit setting: the prior (1, 1) plus the explicit weight (5) for the value.
    assert (p.evidence_for, p.evidence_against) == (6.0, 1.0)
    assert p.confidence == pytest.approx(6 / 7)
    assert p.observation_count == 1
    assert p.created_at == p.updated_at == p.last_observed == clock.now
    assert store.get_preference("alice", "style", "indent") == p
    assert store.get_preference("bob", "style", "indent") is None


def test_preference_observations_accumulate(make_store, clock) -> None:
    store = make_store(clock=clock)
    p1 = store.set_preference("alice", "style", "indent", 4, confidence=0.6)
    assert p1.confidence == pytest.approx(0.6)
    assert p1.evidence_for + p1.evidence_against == pytest.approx(7.0)  # 2 + weight 5
    clock.advance(minutes=5)
    p2 = store.set_preference("alice", "style", "indent", 2)
    assert p2.id == p1.id and p2.created_at == p1.created_at
    assert p2.observation_count == 2
    # An explicit setting of another value sets it, and its evidence starts afresh.
    assert p2.preference_value == 2
    assert (p2.evidence_for, p2.evidence_against) == (6.0, 1.0)
    assert p2.last_observed == p2.updated_at == clock.now
    p3 = store.set_preference("alice", "style", "indent", 2, confidence=0.95)
    assert p3.observation_count == 3 and p3.confidence == pytest.approx(0.95)
    assert p3.evidence_against >= 1.0  # never below the prior
    ev = store.audit(entity_type="preference", entity_id=p1.id)
    assert [e.event_type for e in ev] == ["create", "update", "update"]
    assert ev[1].old_value == p1.to_dict() and ev[1].new_value == p2.to_dict()
    assert all(e.user_id == "alice" and e.session_id is None for e in ev)
    assert ev[1].change_metadata == {"observation": "explicit", "weight": 5.0, "observed": 2}
    assert ev[2].change_metadata["stated_confidence"] == 0.95


def test_confidence_is_always_the_posterior_mean(make_store, clock) -> None:
    store = make_store(clock=clock)
    for value, conf in [(1, None), (1, 0.7), (2, None), (2, 0.2), (1, None)]:
        p = store.set_preference("alice", "misc", "k", value, confidence=conf)
        assert p.confidence == pytest.approx(
            p.evidence_for / (p.evidence_for + p.evidence_against))
        clock.advance(days=3)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0])
def test_a_stated_preference_confidence_is_never_certain(store: Store, value) -> None:
    before = store.dump()
    with pytest.raises(ValidationError) as info:
        store.set_preference("alice", "style", "indent", 4, confidence=value)
    assert info.value.field == "confidence"
    assert store.dump() == before


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


# --- the learning primitives --------------------------------------------------------


def _explicit(value, weight: float = 2.0):
    """A hand-written rule: the point is what the store does with any rule."""
    def update(old: Preference | None, now: datetime) -> PreferenceUpdate:
        a = 1.0 if old is None else old.evidence_for
        return PreferenceUpdate(value, (a + weight) / (a + weight + 1.0), a + weight, 1.0,
                                {"observation": "test"})
    return update


def test_observe_preference_applies_the_callers_rule(make_store, clock) -> None:
    store = make_store(clock=clock)
    seen: list[tuple[Preference | None, datetime]] = []

    def rule(old: Preference | None, now: datetime) -> PreferenceUpdate:
        seen.append((old, now))
        return _explicit("tabs")(old, now)

    p1 = store.observe_preference("alice", "style", "indent", rule)
    assert seen == [(None, clock.now)]
    assert (p1.preference_value, p1.evidence_for, p1.evidence_against) == ("tabs", 3.0, 1.0)
    assert p1.confidence == 0.75 and p1.observation_count == 1
    clock.advance(hours=1)
    p2 = store.observe_preference("alice", "style", "indent", rule)
    assert seen[-1] == (p1, clock.now)
    assert (p2.evidence_for, p2.observation_count, p2.last_observed) == (5.0, 2, clock.now)
    ev = store.audit(entity_type="preference", entity_id=p1.id)
    assert [e.event_type for e in ev] == ["create", "update"]
    assert ev[1].change_metadata == {"observation": "test"}
    assert ev[1].old_value == p1.to_dict() and ev[1].new_value == p2.to_dict()


@pytest.mark.parametrize("bad", [
    PreferenceUpdate("x", 1.5, 2.0, 1.0),
    PreferenceUpdate("x", float("nan"), 2.0, 1.0),
    PreferenceUpdate("x", 0.5, 0.0, 1.0),
    PreferenceUpdate("x", 0.5, 1.0, -1.0),
    PreferenceUpdate("x", 0.5, float("inf"), 1.0),
    PreferenceUpdate({1, 2}, 0.5, 1.0, 1.0),
    PreferenceUpdate("x" * 2000, 0.5, 1.0, 1.0),
    "not an update",
])
def test_a_rule_returning_what_a_row_cannot_hold_changes_nothing(make_store, bad) -> None:
    store = make_store(max_value_bytes=1000)
    store.set_preference("alice", "style", "indent", 4)
    before = store.dump()
    for key in ("indent", "new-key"):
        with pytest.raises(ValidationError):
            store.observe_preference("alice", "style", key, lambda old, now, bad=bad: bad)
    assert store.dump() == before


def test_a_rule_that_raises_changes_nothing(store: Store) -> None:
    store.set_preference("alice", "style", "indent", 4)
    before = store.dump()

    def boom(old, now):
        raise RuntimeError("rule bug")

    with pytest.raises(RuntimeError):
        store.observe_preference("alice", "style", "indent", boom)
    assert store.dump() == before


def test_observe_preference_validates_its_names(store: Store) -> None:
    before = store.dump()
    for args in [("bad id!", "style", "k"), ("alice", "9type", "k"), ("alice", "style", "")]:
        with pytest.raises(InvalidIdError):
            store.observe_preference(*args, _explicit(1))
    with pytest.raises(ValidationError):
        store.observe_preference("alice", "style", "k", "not callable")
    assert store.dump() == before


def test_concurrent_observers_never_lose_an_observation(store: Store) -> None:
    """Every writer adds 2 to the evidence: the total proves none was lost."""
    writers = 8
    gate = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run() -> None:
        gate.wait()
        try:
            store.observe_preference("alice", "style", "quotes", _explicit("double"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    pref = store.get_preference("alice", "style", "quotes")
    assert pref is not None
    assert pref.observation_count == writers
    assert pref.evidence_for == 1.0 + 2.0 * writers
    events = store.audit(entity_type="preference", limit=100)
    assert [e.event_type for e in events] == ["create"] + ["update"] * (writers - 1)
    for before, after in itertools.pairwise(events):
        assert after.old_value == before.new_value


def test_list_decisions_of_a_user(make_store, clock) -> None:
    store = make_store(clock=clock)
    a1 = store.create_session("alice")
    a2 = store.create_session("alice")
    b = store.create_session("bob")
    d1 = store.record_decision("t", "1", session_id=a1.id)
    clock.advance(seconds=1)
    store.record_decision("t", "2", session_id=b.id)
    clock.advance(seconds=1)
    d3 = store.record_decision("t", "3", session_id=a2.id)
    store.record_decision("t", "4")  # no session, no user
    clock.advance(seconds=1)
    d5 = store.record_decision("u", "5", session_id=a1.id)
    assert [d.id for d in store.list_decisions(user_id="alice")] == [d5.id, d3.id, d1.id]
    assert [d.id for d in store.list_decisions(user_id="alice", decision_type="t",
                                               limit=1)] == [d3.id]
    assert store.list_decisions(user_id="carol") == []
    with pytest.raises(InvalidIdError):
        store.list_decisions(user_id="no spaces")


def test_decision_context_is_kept(store: Store) -> None:
    ctx = {"lang": "py", "files": ["a.py", "b.py"], "size": 1.5, "deep": {"x": [None, True]}}
    d = store.record_decision("t", "x", context=ctx)
    assert d.context == ctx and store.get_decision(d.id).context == ctx
    assert store.record_decision("t", "y", context_hash="ab" * 32).context is None
    assert store.record_decision("t", "z").context is None


def test_get_decision_for_update(store: Store) -> None:
    d = store.record_decision("t", "x")
    with store.atomic():
        assert store.get_decision(d.id, for_update=True) == d
    assert store.get_decision(d.id, for_update=True) == d  # alone: its own transaction
    with pytest.raises(NotFoundError):
        store.get_decision("dec_missing", for_update=True)
