"""The preference update rule: properties over many beliefs, and worked numbers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeep import Preference, StateConfig, ValidationError
from statekeep.learning.evidence import (
    Belief,
    ObservationKind,
    decay,
    observe,
    preference_update,
    restate,
    same_value,
)

HALF_LIFE = 30.0
FAST = settings(deadline=None, database=None, max_examples=300)

# Realistic evidence: far beyond what years of observations add up to, but not
# so large that alpha / (alpha + beta) rounds to exactly 1.0 in floating point.
evidence = st.floats(1.0, 1e6)
weights = st.floats(0.01, 100.0)
ages = st.floats(0.0, 3650.0)
values = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c"]), st.booleans())
beliefs = st.builds(Belief, values, evidence, evidence)


def belief_in(b: Belief, value: object) -> float:
    """The belief's probability that the user wants ``value``."""
    return b.confidence if same_value(b.value, value) else 1.0 - b.confidence


def now_observe(b: Belief | None, value: object, weight: float,
                kind: ObservationKind = ObservationKind.ACCEPT) -> Belief:
    return observe(b, value, weight, elapsed_days=0.0, half_life_days=HALF_LIFE, kind=kind)


@FAST
@given(beliefs, values, weights, ages, st.sampled_from(list(ObservationKind)))
def test_confidence_stays_strictly_between_0_and_1(b, value, w, age, kind) -> None:
    after = observe(b, value, w, elapsed_days=age, half_life_days=HALF_LIFE, kind=kind)
    assert 0.0 < after.confidence < 1.0
    assert after.evidence_for >= 1.0 and after.evidence_against >= 1.0


@FAST
@given(beliefs, st.lists(weights, min_size=1, max_size=20))
def test_agreeing_observations_never_lower_confidence(b, ws) -> None:
    current = b
    for w in ws:
        after = now_observe(current, current.value, w)
        assert after.value == current.value
        assert after.confidence >= current.confidence
        current = after


@FAST
@given(beliefs, values)
def test_an_override_moves_confidence_more_than_an_acceptance(b, value) -> None:
    accepted = now_observe(b, value, 1.0, ObservationKind.ACCEPT)
    overridden = now_observe(b, value, 3.0, ObservationKind.OVERRIDE)
    assert belief_in(overridden, value) > belief_in(accepted, value) - 1e-12
    assert belief_in(accepted, value) > belief_in(b, value) - 1e-12


@FAST
@given(beliefs, st.lists(ages, min_size=2, max_size=10))
def test_decay_moves_confidence_toward_one_half_monotonically(b, times) -> None:
    distances = []
    for t in sorted(times):
        a, c = decay(b.evidence_for, t, HALF_LIFE), decay(b.evidence_against, t, HALF_LIFE)
        conf = a / (a + c)
        # Never crosses 0.5: a preference left alone fades, it does not turn around.
        assert (conf - 0.5) * (b.confidence - 0.5) >= -1e-12
        distances.append(abs(conf - 0.5))
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(distances))


@FAST
@given(evidence, ages)
def test_decay_never_goes_below_the_prior(e, age) -> None:
    assert 1.0 <= decay(e, age, HALF_LIFE) <= e


@FAST
@given(st.builds(Belief, values, st.floats(1.0, 1e3), st.floats(1.0, 1e3)),
       st.floats(0.5, 100.0))
def test_enough_contrary_evidence_flips_the_value(b, w) -> None:
    other = "something else entirely"
    needed = max(1, int((b.evidence_for - b.evidence_against) // w) + 2)
    current = b
    for _ in range(needed):
        current = now_observe(current, other, w)
        if current.value == other:
            break
    assert current.value == other
    assert current.confidence >= 0.5  # just flipped: more for than against


@FAST
@given(beliefs, values, st.sampled_from([ObservationKind.ACCEPT, ObservationKind.OVERRIDE]))
def test_the_value_switches_only_when_the_evidence_against_outweighs(b, value, kind) -> None:
    after = now_observe(b, value, 2.0, kind)
    if same_value(after.value, b.value):
        assert after.confidence >= 0.5 or b.confidence < 0.5
    else:
        assert after.confidence >= 0.5


@FAST
@given(beliefs, values, weights)
def test_an_explicit_setting_always_sets_the_value(b, value, w) -> None:
    after = now_observe(b, value, w, ObservationKind.EXPLICIT)
    assert same_value(after.value, value)
    if not same_value(b.value, value):
        assert (after.evidence_for, after.evidence_against) == (1.0 + w, 1.0)


@FAST
@given(beliefs, st.floats(0.001, 0.999))
def test_a_stated_confidence_is_the_mean_and_keeps_the_prior(b, c) -> None:
    after = restate(b, c)
    assert after.confidence == pytest.approx(c, abs=1e-9)
    assert after.evidence_for >= 1.0 and after.evidence_against >= 1.0
    assert after.evidence_for + after.evidence_against >= (
        b.evidence_for + b.evidence_against) * (1 - 1e-12)


def test_worked_example() -> None:
    """The example of docs/learning.md, number for number."""
    b = now_observe(None, 4, 1.0)  # accepted: indent 4
    assert (b.value, b.evidence_for, b.evidence_against) == (4, 2.0, 1.0)
    assert b.confidence == pytest.approx(0.667, abs=1e-3)
    b = now_observe(b, 4, 1.0)  # accepted again
    assert (b.evidence_for, b.evidence_against) == (3.0, 1.0)
    assert b.confidence == 0.75
    # 30 days (one half-life) later the user overrides with 2.
    b = observe(b, 2, 3.0, elapsed_days=30.0, half_life_days=30.0,
                kind=ObservationKind.OVERRIDE)
    assert (b.value, b.evidence_for, b.evidence_against) == (2, 4.0, 2.0)
    assert b.confidence == pytest.approx(0.667, abs=1e-3)
    b = now_observe(b, 4, 1.0)  # one acceptance of 4 does not flip it back
    assert (b.value, b.evidence_for, b.evidence_against) == (2, 4.0, 3.0)
    b = now_observe(b, 4, 3.0, ObservationKind.OVERRIDE)  # an override does
    assert (b.value, b.evidence_for, b.evidence_against) == (4, 6.0, 4.0)
    assert b.confidence == 0.6
    b = now_observe(b, 8, 5.0, ObservationKind.EXPLICIT)  # the user says 8
    assert (b.value, b.evidence_for, b.evidence_against) == (8, 6.0, 1.0)


def test_equal_values_are_equal_as_json() -> None:
    assert same_value({"a": [1, 2]}, {"a": [1, 2]})
    assert not same_value(1, True)
    assert not same_value(1, 1.0)
    assert not same_value("1", 1)
    b = now_observe(now_observe(None, 1, 1.0), True, 1.0)
    assert b.evidence_against == 2.0  # True is not agreement with 1


def test_preference_update_follows_the_config() -> None:
    config = StateConfig(db=":memory:", preference_accept_weight=2.0,
                         preference_override_weight=7.0, preference_half_life_days=10.0)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    first = preference_update("accept", "ruff", config)(None, t0)
    assert (first.value, first.evidence_for, first.evidence_against) == ("ruff", 3.0, 1.0)
    assert first.meta == {"observation": "accept", "weight": 2.0, "observed": "ruff"}
    row = Preference("prf_1", "alice", "tool", "linter", "ruff", first.confidence, 1, t0, t0,
                     t0, first.evidence_for, first.evidence_against)
    later = preference_update("override", "flake8", config)(row, t0 + timedelta(days=10))
    # Decayed one half-life: 1 + 2/2 = 2 for, 1 against; then 7 against flips it.
    assert (later.value, later.evidence_for, later.evidence_against) == ("flake8", 8.0, 2.0)
    assert later.confidence == 0.8
    # A clock that went backwards decays nothing.
    back = preference_update("accept", "ruff", config)(row, t0 - timedelta(days=5))
    assert (back.evidence_for, back.evidence_against) == (5.0, 1.0)


@pytest.mark.parametrize("kind", ["reject", "", None, 3, "ACCEPT", ["accept"]])
def test_unknown_observation_kinds_are_refused(kind) -> None:
    with pytest.raises(ValidationError) as info:
        preference_update(kind, 1, StateConfig(db=":memory:"))
    assert info.value.field == "kind"


@pytest.mark.parametrize("confidence", [0, 1, 0.0, 1.0, -0.1, 1.1, float("nan"), "0.5", True])
def test_stated_confidence_must_be_strictly_inside(confidence) -> None:
    with pytest.raises(ValidationError) as info:
        preference_update("explicit", 1, StateConfig(db=":memory:"), confidence=confidence)
    assert info.value.field == "confidence"


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), "1", True])
def test_weights_must_be_finite_and_non_negative(weight) -> None:
    with pytest.raises(ValidationError):
        observe(None, 1, weight, elapsed_days=0.0, half_life_days=HALF_LIFE)


def test_a_zero_weight_observation_changes_no_evidence() -> None:
    b = Belief("x", 3.0, 2.0)
    assert now_observe(b, "y", 0.0) == b
    assert now_observe(b, "x", 0.0) == b


def test_values_that_are_not_json_are_refused_before_any_write() -> None:
    with pytest.raises(ValidationError):
        preference_update("accept", {1, 2}, StateConfig(db=":memory:"))
