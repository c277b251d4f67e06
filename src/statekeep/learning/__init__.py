"""Decision history and preference learning over the store's decisions and preferences.

The rules live here, pure where they can be (:mod:`.evidence`, the ranking in
:mod:`.similar`); the store only keeps the rows and applies an update
transactionally. Nothing in this package imports the store at run time: the
store imports :mod:`.evidence` for its explicit-setting path.
"""

from statekeep.learning.autonomy import (
    AUTONOMY,
    AutonomyAnswer,
    AutonomyEvidence,
    should_act_autonomously,
)
from statekeep.learning.engine import DECISION, DecisionEngine, Settled
from statekeep.learning.evidence import (
    Belief,
    ObservationKind,
    PreferenceUpdate,
    observe,
    preference_update,
)
from statekeep.learning.similar import SimilarDecision, similar_decisions, similar_to

__all__ = [
    "AUTONOMY",
    "DECISION",
    "AutonomyAnswer",
    "AutonomyEvidence",
    "Belief",
    "DecisionEngine",
    "ObservationKind",
    "PreferenceUpdate",
    "Settled",
    "SimilarDecision",
    "observe",
    "preference_update",
    "should_act_autonomously",
    "similar_decisions",
    "similar_to",
]
