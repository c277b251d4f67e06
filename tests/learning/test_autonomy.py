"""should_act_autonomously: the user's word first, then the evidence of past decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from statekeep import InvalidIdError, NotJSONError, Store, ValidationError
from statekeep.learning import DecisionEngine
from statekeep.learning.autonomy import should_act_autonomously

CTX = {"repo": "acme/widget", "lang": "py"}


@pytest.fixture
def engine(make_store: Callable[..., Store], clock: Any) -> DecisionEngine:
    return DecisionEngine(make_store(clock=clock))


def settle(engine: DecisionEngine, session_id: str, *, how: str = "accept",
           context: Any = CTX, feedback: float | None = None, kind: str = "fmt") -> str:
    d = engine.record(kind, "black", context=context, session_id=session_id)
    if how == "accept":
        engine.accept(d.id, feedback=feedback)
    elif how == "override":
        engine.override(d.id, "ruff", feedback=feedback)
    elif how == "feedback":
        assert feedback is not None
        engine.feedback(d.id, feedback)
    return d.id


def test_no_evidence_means_ask(engine: DecisionEngine) -> None:
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert (answer.act, answer.confidence, answer.threshold, answer.evidence) == (
        False, 0.5, 0.8, ())
    assert "no settled" in answer.reason
    # Open decisions (no outcome, feedback or override) are not evidence yet.
    s = engine.store.create_session("alice")
    settle(engine, s.id, how="none")
    assert engine.should_act_autonomously("alice", "fmt", CTX).evidence == ()
    # Nor is a threshold of 0 a licence to act on nothing.
    assert engine.should_act_autonomously("alice", "fmt", CTX, threshold=0.0).act is False


def test_acceptances_earn_autonomy(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    ids = [settle(engine, s.id) for _ in range(2)]
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert answer.confidence == pytest.approx(3 / 4) and answer.act is False
    ids.append(settle(engine, s.id))
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert answer.confidence == pytest.approx(4 / 5) and answer.act is True  # at the threshold
    assert {e.id for e in answer.evidence} == set(ids)
    assert all(e.supports and e.kind == "accepted" and e.weight == 1.0 and e.similarity == 1.0
               for e in answer.evidence)
    assert ">= threshold 0.80" in answer.reason
    assert answer.to_dict()["evidence"][0]["source"] == "decision"


def test_an_override_counts_against_with_its_weight(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    for _ in range(3):
        settle(engine, s.id)
    overridden = settle(engine, s.id, how="override", feedback=-1.0)
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert answer.confidence == pytest.approx((1 + 3) / (2 + 3 + 3))
    assert answer.act is False
    assert answer.evidence[0].id == overridden  # strongest first
    assert (answer.evidence[0].supports, answer.evidence[0].kind,
            answer.evidence[0].weight) == (False, "overridden", 3.0)


def test_negative_feedback_counts_against_by_its_size(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    settle(engine, s.id, how="feedback", feedback=0.5)  # feedback alone settles it
    settle(engine, s.id, how="feedback", feedback=-0.5)
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert answer.confidence == pytest.approx((1 + 1) / (2 + 1 + 0.5))
    assert sorted((e.kind, e.weight) for e in answer.evidence) == [("accepted", 1.0),
                                                                   ("negative feedback", 0.5)]


def test_nearer_contexts_weigh_more(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    settle(engine, s.id, context={"repo": "acme/widget", "lang": "go"})  # similarity 1/3
    settle(engine, s.id, context={"something": "else"})  # similarity 0: no evidence
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    (e,) = answer.evidence
    assert e.similarity == pytest.approx(1 / 3) and e.weight == pytest.approx(1 / 3)
    assert answer.confidence == pytest.approx((1 + 1 / 3) / (2 + 1 / 3))


def test_old_decisions_fade(engine: DecisionEngine, clock: Any) -> None:
    s = engine.store.create_session("alice")
    settle(engine, s.id)
    clock.advance(days=30)  # one half-life
    (e,) = engine.should_act_autonomously("alice", "fmt", CTX).evidence
    assert e.weight == pytest.approx(0.5) and e.age_days == pytest.approx(30.0)


def test_only_the_users_own_decisions_count(engine: DecisionEngine) -> None:
    bob = engine.store.create_session("bob")
    for _ in range(5):
        settle(engine, bob.id)
    for _ in range(5):
        engine.accept(engine.record("fmt", "black", context=CTX).id)  # nobody's
    assert engine.should_act_autonomously("alice", "fmt", CTX).evidence == ()
    assert engine.should_act_autonomously("bob", "fmt", CTX).act is True
    # Nor do other decision types.
    assert engine.should_act_autonomously("bob", "deploy", CTX).evidence == ()


def test_the_users_setting_dominates(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    for _ in range(5):
        settle(engine, s.id)
    off = engine.set_preference("alice", "autonomy", "fmt", False)
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert answer.act is False
    assert answer.confidence == pytest.approx(1 - off.confidence)
    (e,) = answer.evidence
    assert (e.source, e.id, e.supports, e.kind) == ("preference", off.id, False,
                                                    "explicit setting")
    assert "off" in answer.reason
    for _ in range(3):
        settle(engine, s.id, how="override", kind="deploy")
    engine.set_preference("alice", "autonomy", "deploy", True)
    answer = engine.should_act_autonomously("alice", "deploy", CTX, threshold=1.0)
    assert answer.act is True and answer.evidence[0].source == "preference"


def test_a_setting_that_is_not_true_or_false_is_not_a_setting(engine: DecisionEngine) -> None:
    s = engine.store.create_session("alice")
    settle(engine, s.id)
    engine.store.set_preference("alice", "autonomy", "fmt", "maybe")  # the raw store allows it
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert [e.source for e in answer.evidence] == ["decision"]


def test_the_threshold_is_configurable(make_store: Callable[..., Store]) -> None:
    store = make_store(autonomy_threshold=0.6)
    engine = DecisionEngine(store)
    s = store.create_session("alice")
    settle(engine, s.id)
    answer = engine.should_act_autonomously("alice", "fmt", CTX)
    assert (answer.act, answer.threshold) == (True, 0.6)  # 2/3 >= 0.6
    assert engine.should_act_autonomously("alice", "fmt", CTX, threshold=0.7).act is False
    assert should_act_autonomously(store, "alice", "fmt", CTX).act is True


def test_bad_questions_change_nothing(engine: DecisionEngine) -> None:
    store = engine.store
    before = store.dump()
    with pytest.raises(InvalidIdError):
        engine.should_act_autonomously("not an id", "fmt", CTX)
    with pytest.raises(InvalidIdError):
        engine.should_act_autonomously("alice", "", CTX)
    with pytest.raises(NotJSONError):
        engine.should_act_autonomously("alice", "fmt", {"x": object()})
    engine.set_preference("alice", "autonomy", "fmt", True)
    before = store.dump()
    with pytest.raises(NotJSONError):  # even when the user's setting decides
        engine.should_act_autonomously("alice", "fmt", {"x": float("nan")})
    for threshold in (-0.1, 1.1, float("nan"), "0.5", True):
        with pytest.raises(ValidationError) as info:
            engine.should_act_autonomously("alice", "fmt", CTX, threshold=threshold)
        assert info.value.field == "threshold"
    assert store.dump() == before
