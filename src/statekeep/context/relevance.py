"""The seed's relevance formula (section 4.2), recomputed on read from stored facts.

A score stored at capture time goes stale by the hour; the facts it is made of
(when the item last changed, how often it was read, how it is related, which
tasks are active) are all in the store. So scores are computed when asked for,
and every score can be explained: :meth:`RelevanceCalculator.explain` returns
the components that made it.

The formula, with the seed's numbers as defaults (each is a setting)::

    time         = decay_per_hour ** age_hours                 (0.95 per hour)
    access       = min(access_count * access_boost, access_cap) (0.1, capped at 0.5)
    relationship = average strength of the item's relations * relationship_weight (0.3)
    task         = 1.0 referenced by an active task, 0.8 related to such an item,
                   0.6 in the same code area (folder), 0.4 same session/project;
                   0.5 when the session has no active task
    relevance    = min(1, 0.3 time + 0.2 access + 0.25 relationship + 0.25 task)

Age counts from the item's last change (``updated_at``): re-capturing an
unchanged file does not make it newer, editing it does. The ``relevance_score``
column is the caller's own weight for an item (1.0 unless set) and scales the
computed score, so a person can push an item down without deleting it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from statekeep.config import StateConfig
from statekeep.errors import ConfigError

__all__ = [
    "TASK_DIRECT",
    "TASK_NONE_ACTIVE",
    "TASK_PROJECT",
    "TASK_RELATED",
    "TASK_SAME_AREA",
    "ItemFacts",
    "RelevanceCalculator",
    "RelevanceExplanation",
    "RelevanceWeights",
]

TASK_DIRECT = 1.0
TASK_RELATED = 0.8
TASK_SAME_AREA = 0.6
TASK_PROJECT = 0.4
TASK_NONE_ACTIVE = 0.5

_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class RelevanceWeights:
    """The formula's numbers; the defaults are the seed's."""

    decay_per_hour: float = 0.95
    access_boost: float = 0.1
    access_cap: float = 0.5
    relationship_weight: float = 0.3
    time: float = 0.3
    access: float = 0.2
    relationship: float = 0.25
    task: float = 0.25

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if (not isinstance(value, int | float) or isinstance(value, bool)
                    or not 0.0 <= value <= 1.0):  # NaN fails the comparison too
                raise ConfigError(f"relevance weight {name} must be a number from 0 to 1")
        if self.decay_per_hour == 0.0:
            raise ConfigError("relevance weight decay_per_hour must be above 0")

    @classmethod
    def from_config(cls, config: StateConfig) -> RelevanceWeights:
        return cls(
            decay_per_hour=config.relevance_decay_per_hour,
            access_boost=config.relevance_access_boost,
            access_cap=config.relevance_access_cap,
            relationship_weight=config.relevance_relationship_weight,
            time=config.relevance_weight_time,
            access=config.relevance_weight_access,
            relationship=config.relevance_weight_relationship,
            task=config.relevance_weight_task,
        )


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """The stored facts one score is computed from."""

    item_id: str
    updated_at: datetime
    access_count: int
    relation_count: int = 0
    avg_strength: float = 0.0
    task_score: float = TASK_NONE_ACTIVE
    task_reason: str = "no active task"
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class RelevanceExplanation:
    """Every component of one score, so a ranking can be questioned."""

    item_id: str
    score: float
    age_hours: float
    time_score: float
    access_count: int
    access_score: float
    relation_count: int
    avg_strength: float
    relationship_score: float
    task_score: float
    task_reason: str
    weight: float
    weights: RelevanceWeights

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["weights"] = asdict(self.weights)
        return out


class RelevanceCalculator:
    """Scores items from their facts; pure and cheap (no I/O), so ranking
    10,000 items costs milliseconds."""

    def __init__(self, weights: RelevanceWeights | None = None) -> None:
        self.weights = weights or RelevanceWeights()

    def components(self, facts: ItemFacts, now: datetime) -> tuple[float, float, float, float]:
        """(age_hours, time, access, relationship) -- the parts before weighting."""
        w = self.weights
        age_hours = max(0.0, (now - facts.updated_at).total_seconds() / _HOUR)
        time_score = w.decay_per_hour ** age_hours
        access_score = min(facts.access_count * w.access_boost, w.access_cap)
        relationship_score = (facts.avg_strength * w.relationship_weight
                              if facts.relation_count else 0.0)
        return age_hours, time_score, access_score, relationship_score

    def score(self, facts: ItemFacts, now: datetime) -> float:
        w = self.weights
        _, time_score, access_score, relationship_score = self.components(facts, now)
        total = (time_score * w.time + access_score * w.access
                 + relationship_score * w.relationship + facts.task_score * w.task)
        return min(total, 1.0) * facts.weight

    def explain(self, facts: ItemFacts, now: datetime) -> RelevanceExplanation:
        age_hours, time_score, access_score, relationship_score = self.components(facts, now)
        return RelevanceExplanation(
            item_id=facts.item_id,
            score=self.score(facts, now),
            age_hours=age_hours,
            time_score=time_score,
            access_count=facts.access_count,
            access_score=access_score,
            relation_count=facts.relation_count,
            avg_strength=facts.avg_strength,
            relationship_score=relationship_score,
            task_score=facts.task_score,
            task_reason=facts.task_reason,
            weight=facts.weight,
            weights=self.weights,
        )
