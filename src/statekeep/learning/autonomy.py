"""Should the agent decide this alone, or ask? An answer with its evidence.

The user's own word comes first: a preference ``("autonomy", decision_type)``
holding ``true`` or ``false`` is the answer, whatever the threshold -- the
user has said what they want, and a learned estimate must not overrule them.

Without it, the answer is learned from the user's past decisions of the
type, found as :mod:`~statekeep.learning.similar` finds them (same context
first, then near ones). Each settled decision is one observation for or
against acting alone, weighted like preference observations and scaled by
how near its context is and by its age (the preference half-life):

* overridden by the user: against, with the override weight (the strongest
  signal there is; negative feedback on it is not counted twice);
* negative feedback: against, with ``|feedback| * accept weight``;
* otherwise, with an outcome or feedback (the user saw it and let it stand):
  for, with the accept weight;
* no outcome, no feedback, no override: not settled, no evidence.

The confidence is the Beta posterior mean (1 + for) / (2 + for + against),
the same estimate the preferences use, and the answer is yes when it reaches
the threshold (``autonomy_threshold``, 0.8). With no evidence at all the answer
is no, whatever the threshold: acting alone is earned, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from statekeep import codec
from statekeep.config import StateConfig
from statekeep.errors import ValidationError
from statekeep.ids import validate_id, validate_name
from statekeep.learning.evidence import PRIOR, decay_factor, posterior_mean
from statekeep.learning.similar import SimilarDecision, similar_decisions

if TYPE_CHECKING:  # the store imports this package: no import of the store at run time
    from statekeep.store import Store

__all__ = [
    "AUTONOMY",
    "AutonomyAnswer",
    "AutonomyEvidence",
    "decision_evidence",
    "should_act_autonomously",
]

#: The preference type of a user's explicit autonomy setting (key: decision type).
AUTONOMY = "autonomy"
_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class AutonomyEvidence:
    """One reason behind an answer."""

    #: "preference" (the user's setting) or "decision" (a past decision).
    source: str
    #: The preference's or decision's id.
    id: str
    #: True if it argues for acting alone.
    supports: bool
    #: A decision's weight in the estimate, after nearness and age; for the
    #: user's setting, the evidence for its value (it decides on its own).
    weight: float
    #: What it was: "explicit setting", "accepted", "overridden", "negative feedback".
    kind: str
    similarity: float | None = None
    age_days: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "supports": self.supports,
                "weight": self.weight, "kind": self.kind, "similarity": self.similarity,
                "age_days": self.age_days}


@dataclass(frozen=True, slots=True)
class AutonomyAnswer:
    """Yes or no, how sure, against which threshold, and why."""

    act: bool
    #: The estimated probability that the user wants the agent to act alone.
    confidence: float
    threshold: float
    #: Strongest first.
    evidence: tuple[AutonomyEvidence, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"act": self.act, "confidence": self.confidence, "threshold": self.threshold,
                "evidence": [e.to_dict() for e in self.evidence], "reason": self.reason}


def decision_evidence(found: SimilarDecision, now: datetime,
                      config: StateConfig) -> AutonomyEvidence | None:
    """What one past decision says about acting alone (None: not settled)."""
    d = found.decision
    feedback = d.feedback_score
    if d.user_override:
        supports, kind, base = False, "overridden", config.preference_override_weight
    elif feedback is not None and feedback < 0:
        supports, kind = False, "negative feedback"
        base = abs(feedback) * config.preference_accept_weight
    elif d.outcome is not None or feedback is not None:
        supports, kind, base = True, "accepted", config.preference_accept_weight
    else:
        return None
    age = max(0.0, (now - d.created_at).total_seconds() / _SECONDS_PER_DAY)
    weight = base * found.similarity * decay_factor(age, config.preference_half_life_days)
    return AutonomyEvidence("decision", d.id, supports, weight, kind,
                            similarity=found.similarity, age_days=age)


def _threshold(value: object) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise ValidationError("threshold must be a number from 0 to 1", field="threshold")
    return float(value)


def should_act_autonomously(
    store: Store,
    user_id: str,
    decision_type: str,
    context: Any,
    *,
    config: StateConfig | None = None,
    threshold: float | None = None,
) -> AutonomyAnswer:
    """Whether to make a ``decision_type`` decision in ``context`` without asking."""
    cfg = store.config if config is None else config
    validate_id(user_id, "user_id")
    validate_name(decision_type, "decision_type")
    codec.canonical_hash(context, field="context")  # a bad question fails whatever the answer
    limit = _threshold(cfg.autonomy_threshold if threshold is None else threshold)

    setting = store.get_preference(user_id, AUTONOMY, decision_type)
    if setting is not None and isinstance(setting.preference_value, bool):
        on = setting.preference_value
        confidence = setting.confidence if on else 1.0 - setting.confidence
        evidence = AutonomyEvidence("preference", setting.id, on, setting.evidence_for,
                                    "explicit setting")
        return AutonomyAnswer(
            on, confidence, limit, (evidence,),
            f"{user_id} set autonomy for {decision_type!r} to {'on' if on else 'off'}")

    found = similar_decisions(store, decision_type, context, user_id=user_id,
                              limit=max(1, cfg.similar_decisions_scan),
                              scan=cfg.similar_decisions_scan)
    now = store.now()
    items = [e for f in found if (e := decision_evidence(f, now, cfg)) is not None]
    items.sort(key=lambda e: e.id, reverse=True)
    items.sort(key=lambda e: -e.weight)
    pro = sum(e.weight for e in items if e.supports)
    con = sum(e.weight for e in items if not e.supports)
    confidence = posterior_mean(PRIOR + pro, PRIOR + con)
    if not items:
        return AutonomyAnswer(False, confidence, limit, (),
                              f"no settled past {decision_type!r} decisions of {user_id}"
                              " in a similar context: ask")
    act = confidence >= limit
    n_for = sum(1 for e in items if e.supports)
    reason = (f"{len(items)} similar past {decision_type!r} decision(s) of {user_id}:"
              f" {n_for} for, {len(items) - n_for} against; confidence {confidence:.2f}"
              f" {'>=' if act else '<'} threshold {limit:.2f}")
    return AutonomyAnswer(act, confidence, limit, tuple(items), reason)
