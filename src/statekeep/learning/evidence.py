"""The preference update rule: a Beta-Bernoulli estimate whose evidence decays.

A preference is a hypothesis, "this user wants ``value``", with a belief
Beta(alpha, beta) about it: alpha is the weight of what supports the value,
beta of what contradicts it, and both start at the uniform prior (1, 1). Beta
because it is the conjugate prior of a yes/no observation: an observation adds
its weight to one side, so the rule is cheap and its whole state is two
numbers a row can hold. The confidence is the posterior mean
alpha / (alpha + beta): never 0 or 1, 0.5 with no evidence, and it moves less
the more evidence there already is.

People change their minds, so old evidence fades: before each new
observation both parameters decay toward the prior with a half-life,
alpha' = 1 + (alpha - 1) * 2^(-dt / half_life). Decay never goes below the
prior, so a preference left alone drifts back toward "don't know" (0.5),
never past it.

Observations have weights (the ``preference_*_weight`` settings): an override
says more than a silent acceptance, an explicit setting more than either. An
observation of a *different* value counts against the stored one, and once the
evidence against outweighs the evidence for, the value switches and the two
parameters swap -- a two-hypothesis model (this value vs. anything else), in
which everything said against the old value is credited to the new one. An
explicit setting is the user's own word about now, so it always sets the
value: if the value differs, learned evidence about the old value no longer
applies and the belief restarts from the prior plus the explicit weight.

Everything here is pure: the store applies it inside its transaction
(:meth:`~statekeep.store.learning.LearningStore.observe_preference`), which is
why an update is a function of the stored row and the time, and nothing else.
docs/learning.md has the formulas and a worked example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from statekeep import codec
from statekeep.config import StateConfig
from statekeep.errors import ValidationError
from statekeep.models import Preference

__all__ = [
    "PRIOR",
    "Belief",
    "ObservationKind",
    "PreferenceUpdate",
    "decay",
    "decay_factor",
    "observe",
    "posterior_mean",
    "preference_update",
    "restate",
    "same_value",
    "weight_of",
]

#: Both Beta parameters of the uniform prior: "no idea" (confidence 0.5).
PRIOR = 1.0
_SECONDS_PER_DAY = 86400.0


class ObservationKind(StrEnum):
    """What the user did that tells us what they want."""

    #: The user let a decision stand.
    ACCEPT = "accept"
    #: The user replaced a decision with their own choice.
    OVERRIDE = "override"
    #: The user stated the preference outright.
    EXPLICIT = "explicit"

    @classmethod
    def parse(cls, value: object, field: str = "kind") -> ObservationKind:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        allowed = ", ".join(k.value for k in cls)
        raise ValidationError(f"{field} must be one of {allowed}, not {value!r}", field=field)


@dataclass(frozen=True, slots=True)
class Belief:
    """A value and the Beta(alpha, beta) evidence for and against it."""

    value: Any
    evidence_for: float = PRIOR
    evidence_against: float = PRIOR

    @property
    def confidence(self) -> float:
        return posterior_mean(self.evidence_for, self.evidence_against)


@dataclass(frozen=True, slots=True)
class PreferenceUpdate:
    """What one observation makes of a preference row: the store writes exactly
    this (plus the observation count and times) and records ``meta`` in the
    audit row, so the log says why the preference changed."""

    value: Any
    confidence: float
    evidence_for: float
    evidence_against: float
    meta: dict[str, Any] | None = None


def posterior_mean(alpha: float, beta: float) -> float:
    """alpha / (alpha + beta): the expected probability that the value is what the user wants."""
    return alpha / (alpha + beta)


def decay_factor(elapsed_days: float, half_life_days: float) -> float:
    """2^(-Δt / half_life); a clock that went backwards decays nothing."""
    if half_life_days <= 0:
        raise ValidationError("half_life_days must be positive", field="half_life_days")
    return math.pow(2.0, -max(0.0, elapsed_days) / half_life_days)


def decay(evidence: float, elapsed_days: float, half_life_days: float) -> float:
    """Evidence after ``elapsed_days``: the part above the prior halves every
    half-life, so evidence fades toward "don't know" and never below it."""
    return PRIOR + (evidence - PRIOR) * decay_factor(elapsed_days, half_life_days)


def same_value(a: Any, b: Any) -> bool:
    """Equal as stored JSON: Python's ``True == 1 == 1.0`` must not make
    different stored values count as agreement."""
    return codec.canonical_hash(a) == codec.canonical_hash(b)


def _check_weight(weight: float) -> float:
    if (not isinstance(weight, int | float) or isinstance(weight, bool)
            or not math.isfinite(weight) or weight < 0):
        raise ValidationError("weight must be a finite number >= 0", field="weight")
    return float(weight)


def observe(
    belief: Belief | None,
    value: Any,
    weight: float,
    *,
    elapsed_days: float,
    half_life_days: float,
    kind: ObservationKind = ObservationKind.ACCEPT,
) -> Belief:
    """The belief after one observation "the user wants ``value``" of ``weight``.

    ``belief`` is None for a preference never seen: the prior, holding
    ``value``. ``elapsed_days`` is the time since the last observation.
    """
    w = _check_weight(weight)
    if belief is None:
        belief = Belief(value)
        elapsed_days = 0.0
    alpha = decay(belief.evidence_for, elapsed_days, half_life_days)
    beta = decay(belief.evidence_against, elapsed_days, half_life_days)
    if same_value(belief.value, value):
        return Belief(belief.value, alpha + w, beta)
    if kind is ObservationKind.EXPLICIT:
        return Belief(value, PRIOR + w, PRIOR)
    beta += w
    if beta > alpha:
        return Belief(value, beta, alpha)
    return Belief(belief.value, alpha, beta)


def restate(belief: Belief, confidence: float) -> Belief:
    """The belief rescaled to a confidence the caller states.

    The mean becomes ``confidence``; the total evidence stays what the rule
    gave, but at least enough that neither parameter drops below the prior
    (so stating 0.95 amounts to 19 : 1, and later observations move it as
    little as that much evidence would).
    """
    if (not isinstance(confidence, int | float) or isinstance(confidence, bool)
            or not 0.0 < confidence < 1.0):
        raise ValidationError("confidence must be a number between 0 and 1, exclusive"
                              " (a learned preference is never certain)", field="confidence")
    c = float(confidence)
    total = max(belief.evidence_for + belief.evidence_against, PRIOR / min(c, 1.0 - c))
    alpha = max(PRIOR, c * total)
    beta = max(PRIOR, total - alpha)
    return Belief(belief.value, alpha, beta)


def weight_of(kind: ObservationKind, config: StateConfig) -> float:
    """The configured weight of one observation of ``kind``."""
    return {
        ObservationKind.ACCEPT: config.preference_accept_weight,
        ObservationKind.OVERRIDE: config.preference_override_weight,
        ObservationKind.EXPLICIT: config.preference_explicit_weight,
    }[kind]


def preference_update(
    kind: ObservationKind | str,
    value: Any,
    config: StateConfig,
    *,
    confidence: float | None = None,
) -> Callable[[Preference | None, datetime], PreferenceUpdate]:
    """The update ``observe_preference`` applies for one observation.

    Returned as a function of the stored row because only the store, holding
    the row's lock, knows what the row is when the observation lands; the
    function is pure, so the store may call it again after losing a race.
    """
    k = ObservationKind.parse(kind)
    weight = weight_of(k, config)
    # A value the store could not hold fails here, before any write.
    codec.dumps(value, field="value", max_bytes=config.max_value_bytes)
    if confidence is not None:
        restate(Belief(value), confidence)  # validated now, not inside the transaction
    half_life = config.preference_half_life_days

    def update(old: Preference | None, now: datetime) -> PreferenceUpdate:
        prior = None
        elapsed = 0.0
        if old is not None:
            prior = Belief(old.preference_value, old.evidence_for, old.evidence_against)
            elapsed = (now - old.last_observed).total_seconds() / _SECONDS_PER_DAY
        belief = observe(prior, value, weight, elapsed_days=elapsed,
                         half_life_days=half_life, kind=k)
        meta: dict[str, Any] = {"observation": k.value, "weight": weight, "observed": value}
        if confidence is not None:
            belief = restate(belief, confidence)
            meta["stated_confidence"] = float(confidence)
        return PreferenceUpdate(belief.value, belief.confidence, belief.evidence_for,
                                belief.evidence_against, meta)

    return update
