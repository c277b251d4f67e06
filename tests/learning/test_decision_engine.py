"""DecisionEngine: settling decisions teaches preferences, and bad input changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statekeep import (
    ConflictError,
    InvalidIdError,
    NotFoundError,
    NotJSONError,
    StatekeepError,
    Store,
    ValidationError,
    ValueTooLargeError,
)
from statekeep.learning import DecisionEngine
from statekeep.memory.archive import ArchiveTier


def everything(store: Store) -> dict[str, Any]:
    """The whole visible state: the audit log, the lists, and every row."""
    return {
        "audit": [e.to_dict() for e in store.audit(limit=100000)],
        "decisions": [d.to_dict() for d in store.list_decisions(limit=10000)],
        "alice": [p.to_dict() for p in store.list_preferences("alice")],
        "dump": store.dump(),
    }


@pytest.fixture
def engine(make_store: Callable[..., Store], clock: Any) -> DecisionEngine:
    return DecisionEngine(make_store(clock=clock))


def test_accept_marks_the_decision_and_learns_the_choice(engine: DecisionEngine) -> None:
    store = engine.store
    s = store.create_session("alice")
    d = engine.record("formatter", "black", context={"lang": "py"}, session_id=s.id)
    settled = engine.accept(d.id)
    assert settled.decision.outcome == "accepted" and not settled.decision.user_override
    assert store.get_decision(d.id) == settled.decision
    pref = settled.preference
    assert pref is not None and pref == store.get_preference("alice", "decision", "formatter")
    assert (pref.preference_value, pref.evidence_for, pref.evidence_against) == ("black", 2.0,
                                                                                 1.0)
    again = engine.accept(d.id, outcome="formatted 12 files", feedback=0.5)
    assert again.decision.outcome == "formatted 12 files"
    assert again.decision.feedback_score == 0.5
    assert again.preference is not None and again.preference.observation_count == 2
    # A recorded outcome is kept when accepting without one.
    d2 = engine.record("formatter", "black", session_id=s.id, outcome="ran")
    assert engine.accept(d2.id).decision.outcome == "ran"
    events = store.audit(entity_type="preference", limit=100)
    assert [e.change_metadata["observation"] for e in events] == ["accept"] * 3
    assert all(e.user_id == "alice" for e in events)


def test_override_learns_the_users_choice(engine: DecisionEngine) -> None:
    store = engine.store
    s = store.create_session("alice")
    d = engine.record("formatter", "black", session_id=s.id)
    settled = engine.override(d.id, "ruff format", feedback=-0.5)
    assert settled.decision.user_override is True
    assert settled.decision.outcome == "overridden: ruff format"
    assert settled.decision.feedback_score == -0.5
    assert settled.decision.decision_made == "black"  # what the agent chose stays on record
    pref = settled.preference
    assert pref is not None
    assert (pref.preference_value, pref.evidence_for, pref.evidence_against) == (
        "ruff format", 4.0, 1.0)  # the prior plus the override weight
    (event,) = store.audit(entity_type="preference")
    assert event.change_metadata == {"observation": "override", "weight": 3.0,
                                     "observed": "ruff format"}


def test_overrides_outweigh_acceptances(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    for _ in range(3):
        engine.accept(engine.record("linter", "pylint", session_id=s.id).id)
    pref = engine.store.get_preference("alice", "decision", "linter")
    assert pref is not None and (pref.preference_value, pref.evidence_for) == ("pylint", 4.0)
    engine.override(engine.record("linter", "pylint", session_id=s.id).id, "ruff")
    pref = engine.store.get_preference("alice", "decision", "linter")
    assert pref is not None and pref.preference_value == "pylint"  # 4 for, 4 against: holds
    engine.override(engine.record("linter", "pylint", session_id=s.id).id, "ruff")
    pref = engine.store.get_preference("alice", "decision", "linter")
    assert pref is not None
    assert (pref.preference_value, pref.evidence_for, pref.evidence_against) == ("ruff", 7.0,
                                                                                 4.0)
    assert pref.observation_count == 5


def test_an_overridden_decision_is_settled(engine: DecisionEngine) -> None:
    store = engine.store
    s = store.create_session("alice")
    d = engine.record("t", "x", session_id=s.id)
    engine.override(d.id, "y")
    before = everything(store)
    with pytest.raises(ConflictError):
        engine.accept(d.id)
    with pytest.raises(ConflictError):
        engine.override(d.id, "z")
    with pytest.raises(ValidationError) as info:
        engine.override(engine.record("t", "x", session_id=s.id).id, "x")
    assert info.value.field == "chosen"
    after = everything(store)
    # Only the decision recorded for the last check is new.
    assert after["dump"]["user_preferences"] == before["dump"]["user_preferences"]
    assert len(after["audit"]) == len(before["audit"]) + 1


def test_a_decision_without_a_session_teaches_nothing(engine: DecisionEngine) -> None:
    store = engine.store
    d = engine.record("t", "x")
    settled = engine.accept(d.id)
    assert settled.preference is None and settled.decision.outcome == "accepted"
    d2 = engine.record("t", "x")
    settled = engine.override(d2.id, "y")
    assert settled.preference is None and settled.decision.user_override is True
    assert store.dump()["user_preferences"] == []


def test_feedback(engine: DecisionEngine) -> None:
    d = engine.record("t", "x")
    assert engine.feedback(d.id, -0.25).feedback_score == -0.25
    assert engine.feedback(d.id, 1).feedback_score == 1.0


def test_preferences_set_observe_forget(engine: DecisionEngine) -> None:
    p = engine.set_preference("alice", "style", "indent", 4)
    assert (p.preference_value, p.evidence_for) == (4, 6.0)
    p = engine.observe("alice", "style", "indent", 4, "accept")
    assert (p.evidence_for, p.observation_count) == (7.0, 2)
    p = engine.observe("alice", "style", "indent", 2, "override")
    assert (p.preference_value, p.evidence_against) == (4, 4.0)
    p = engine.observe("alice", "style", "indent", 2, "explicit")
    assert (p.preference_value, p.evidence_for, p.evidence_against) == (2, 6.0, 1.0)
    p = engine.set_preference("alice", "style", "indent", 2, confidence=0.9)
    assert p.confidence == pytest.approx(0.9)
    assert [x.id for x in engine.preferences("alice")] == [p.id]
    assert engine.forget("alice", "style", "indent") is True
    assert engine.forget("alice", "style", "indent") is False
    assert engine.preferences("alice") == []


def test_engine_config_overrides_the_stores(make_store: Callable[..., Store]) -> None:
    store = make_store()
    engine = DecisionEngine(store, store.config.replace(preference_explicit_weight=1.0))
    assert engine.set_preference("alice", "s", "k", 1).evidence_for == 2.0
    assert store.set_preference("alice", "s", "k2", 1).evidence_for == 6.0


# --- bad input: a clear error, and nothing changed ------------------------------------


BAD: dict[str, tuple[Callable[[DecisionEngine, str], Any], type[StatekeepError]]] = {
    "record confidence > 1": (lambda e, d: e.record("t", "x", confidence=1.5), ValidationError),
    "record confidence < 0": (lambda e, d: e.record("t", "x", confidence=-0.1),
                              ValidationError),
    "record confidence nan": (lambda e, d: e.record("t", "x", confidence=float("nan")),
                              ValidationError),
    "stated confidence 1": (lambda e, d: e.set_preference("alice", "s", "k", 1, confidence=1),
                            ValidationError),
    "stated confidence 2": (lambda e, d: e.set_preference("alice", "s", "k", 1, confidence=2),
                            ValidationError),
    "feedback unknown": (lambda e, d: e.feedback("dec_missing", 0.5), NotFoundError),
    "feedback malformed id": (lambda e, d: e.feedback("dec missing", 0.5), InvalidIdError),
    "feedback out of range": (lambda e, d: e.feedback(d, 1.5), ValidationError),
    "feedback none": (lambda e, d: e.feedback(d, None), ValidationError),
    "accept unknown": (lambda e, d: e.accept("dec_missing"), NotFoundError),
    "accept malformed id": (lambda e, d: e.accept("../etc"), InvalidIdError),
    "accept bad feedback": (lambda e, d: e.accept(d, feedback=3), ValidationError),
    "accept bad outcome": (lambda e, d: e.accept(d, outcome="a\x00b"), ValidationError),
    "override unknown": (lambda e, d: e.override("dec_missing", "y"), NotFoundError),
    "override empty": (lambda e, d: e.override(d, ""), ValidationError),
    "override not text": (lambda e, d: e.override(d, 5), ValidationError),
    "override bad feedback": (lambda e, d: e.override(d, "y", feedback=-2), ValidationError),
    "observe unknown kind": (lambda e, d: e.observe("alice", "s", "k", 1, "guess"),
                             ValidationError),
    "observe kind None": (lambda e, d: e.observe("alice", "s", "k", 1, None),
                          ValidationError),
    "observe malformed user": (lambda e, d: e.observe("al ice", "s", "k", 1, "accept"),
                               InvalidIdError),
    "observe bad type": (lambda e, d: e.observe("alice", "1s", "k", 1, "accept"),
                         InvalidIdError),
    "observe not json": (lambda e, d: e.observe("alice", "s", "k", {1}, "accept"),
                         NotJSONError),
    "observe too large": (lambda e, d: e.observe("alice", "s", "k", "x" * 5000, "accept"),
                          ValueTooLargeError),
    "autonomy not bool": (lambda e, d: e.set_preference("alice", "autonomy", "t", "yes"),
                          ValidationError),
    "forget malformed user": (lambda e, d: e.forget("", "s", "k"), InvalidIdError),
    "similar bad type": (lambda e, d: e.similar("", {}), InvalidIdError),
    "autonomy bad threshold": (
        lambda e, d: e.should_act_autonomously("alice", "t", {}, threshold=1.5),
        ValidationError),
    # The decision's value does not fit a preference: the whole accept rolls back.
    "accept cannot learn": (lambda e, d: e.accept(e.store.list_decisions(
        decision_type="big")[0].id), ValueTooLargeError),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_and_changes_nothing(make_store: Callable[..., Store],
                                                  case: str) -> None:
    store = make_store(max_value_bytes=1000)
    engine = DecisionEngine(store)
    s = store.create_session("alice")
    d = engine.record("t", "x", session_id=s.id)
    engine.record("big", "y" * 2000, session_id=s.id)
    engine.set_preference("alice", "s", "k", 0)
    call, expected = BAD[case]
    before = everything(store)
    with pytest.raises(expected):
        call(engine, d.id)
    assert everything(store) == before


def test_concurrent_settlements_teach_every_observation(store: Store) -> None:
    engine = DecisionEngine(store)
    s = store.create_session("alice")
    writers = 8
    ids = [engine.record("t", "x", session_id=s.id).id for _ in range(writers)]
    gate = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        gate.wait()
        try:
            if i % 2:
                engine.accept(ids[i])
            else:
                engine.override(ids[i], "y")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    pref = store.get_preference("alice", "decision", "t")
    assert pref is not None and pref.observation_count == writers
    events = store.audit(entity_type="preference", limit=100)
    kinds = [e.change_metadata["observation"] for e in events]
    assert sorted(kinds) == ["accept"] * 4 + ["override"] * 4
    assert all(store.get_decision(i).outcome is not None for i in ids)


def test_decision_context_survives_archive_and_restore(make_store: Callable[..., Store],
                                                       clock: Any, tmp_path: Path) -> None:
    """Archiving keeps decisions in the database (unlinked from the session):
    their context stays, and they count for the user again once restored."""
    store = make_store(clock=clock)
    engine = DecisionEngine(store)
    s = store.create_session("alice")
    ctx = {"repo": "acme/widget", "files": ["a.py"]}
    d = engine.record("approach", "lexer first", context=ctx, session_id=s.id)
    engine.accept(d.id)
    store.update_session(s.id, status="completed")
    tier = ArchiveTier(store, tmp_path / "archive", cold_retention_days=1,
                       archive_retention_days=365)
    clock.advance(days=2)
    assert [a.session_id for a in tier.run().archived] == [s.id]
    kept = store.get_decision(d.id)
    assert kept.context == ctx and kept.session_id is None
    assert engine.similar("approach", ctx, user_id="alice") == []  # nobody's while archived
    tier.restore(s.id)
    back = store.get_decision(d.id)
    assert back.context == ctx and back.session_id == s.id
    assert [f.decision.id for f in engine.similar("approach", ctx, user_id="alice")] == [d.id]
