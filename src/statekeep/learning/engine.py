"""The one object an agent talks to about decisions: record, settle, learn, ask.

:class:`DecisionEngine` ties the store's records to the rules of this package.
Settling a decision is where learning happens: accepting it teaches the
user's preference ``("decision", decision_type)`` that value with the accept
weight, overriding it teaches the user's own choice with the override
weight. The decision's update and the preference's observation share one
transaction, so a crash leaves both or neither.

A decision recorded without a session has no user, and preferences belong to
users: accepting or overriding it still records how it turned out, but
teaches no preference (:attr:`Settled.preference` is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from statekeep.config import StateConfig
from statekeep.errors import ConflictError, ValidationError
from statekeep.ids import validate_id, validate_key, validate_name, validate_text
from statekeep.learning.autonomy import AUTONOMY, AutonomyAnswer, should_act_autonomously
from statekeep.learning.evidence import ObservationKind, preference_update
from statekeep.learning.similar import SimilarDecision, similar_decisions, similar_to
from statekeep.models import Decision, Preference
from statekeep.store.base import UNSET, Unset

if TYPE_CHECKING:  # the store imports this package: no import of the store at run time
    from statekeep.store import Store

__all__ = ["DECISION", "DecisionEngine", "Settled"]

#: The preference type learned from settled decisions (key: the decision type).
DECISION = "decision"


@dataclass(frozen=True, slots=True)
class Settled:
    """A decision after the user's verdict, and what it taught."""

    decision: Decision
    #: The updated ``("decision", decision_type)`` preference of the session's
    #: user; None when the decision has no session, hence no user.
    preference: Preference | None

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.to_dict(),
                "preference": None if self.preference is None else self.preference.to_dict()}


class DecisionEngine:
    """Decision history and preference learning over one store.

    ``config`` (default: the store's) supplies the observation weights, the
    half-life, the autonomy threshold and the scan size.
    """

    def __init__(self, store: Store, config: StateConfig | None = None) -> None:
        self.store = store
        self.config = store.config if config is None else config

    # -- decisions ------------------------------------------------------------

    def record(
        self,
        decision_type: str,
        decision_made: str,
        *,
        context: Any = None,
        context_hash: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        confidence: float | None = None,
        autonomous: bool = False,
        user_override: bool = False,
        outcome: str | None = None,
        feedback_score: float | None = None,
        reasoning: Any = None,
    ) -> Decision:
        """Record a decision (:meth:`Store.record_decision`)."""
        return self.store.record_decision(
            decision_type, decision_made, context=context, context_hash=context_hash,
            session_id=session_id, task_id=task_id, confidence=confidence,
            autonomous=autonomous, user_override=user_override, outcome=outcome,
            feedback_score=feedback_score, reasoning=reasoning)

    def accept(self, decision_id: str, *, outcome: str | None = None,
               feedback: float | None = None) -> Settled:
        """The user let the decision stand.

        Without an ``outcome`` (and none recorded yet) the outcome becomes
        "accepted", which is what marks the decision settled for
        :meth:`should_act_autonomously`. Each call is one observation. A
        decision the user overrode cannot be accepted (ConflictError).
        """
        validate_id(decision_id, "decision_id")
        validate_text(outcome, "outcome")
        with self.store.atomic():
            old = self._open_decision(decision_id, "accepted")
            new_outcome: str | Unset = UNSET
            if outcome is not None:
                new_outcome = outcome
            elif old.outcome is None:
                new_outcome = "accepted"
            new = self.store.update_decision(
                decision_id, outcome=new_outcome,
                feedback_score=UNSET if feedback is None else feedback)
            pref = self._learn(old, old.decision_made, ObservationKind.ACCEPT)
        return Settled(new, pref)

    def override(self, decision_id: str, chosen: str, *, outcome: str | None = None,
                 feedback: float | None = None) -> Settled:
        """The user replaced the decision with ``chosen``.

        Without an ``outcome`` (and none recorded yet) the outcome becomes
        "overridden: <chosen>", so the decision itself says what the user
        chose. A decision can be overridden once (ConflictError after).
        """
        validate_id(decision_id, "decision_id")
        if not isinstance(chosen, str) or not chosen:
            raise ValidationError("chosen must be a non-empty string", field="chosen")
        validate_text(chosen, "chosen")
        validate_text(outcome, "outcome")
        with self.store.atomic():
            old = self._open_decision(decision_id, "overridden")
            if chosen == old.decision_made:
                raise ValidationError(
                    f"chosen {chosen!r} is the decision already made; accept it instead",
                    field="chosen")
            new_outcome: str | Unset = UNSET
            if outcome is not None:
                new_outcome = outcome
            elif old.outcome is None:
                new_outcome = f"overridden: {chosen}"
            new = self.store.update_decision(
                decision_id, outcome=new_outcome, user_override=True,
                feedback_score=UNSET if feedback is None else feedback)
            pref = self._learn(old, chosen, ObservationKind.OVERRIDE)
        return Settled(new, pref)

    def feedback(self, decision_id: str, score: float) -> Decision:
        """Record the user's feedback, from -1 (bad) to 1 (good)."""
        if score is None:
            raise ValidationError("feedback_score must be a number from -1 to 1",
                                  field="feedback_score")
        return self.store.update_decision(decision_id, feedback_score=score)

    def _open_decision(self, decision_id: str, verb: str) -> Decision:
        """The decision, locked; refused if the user already overrode it."""
        decision = self.store.get_decision(decision_id, for_update=True)
        if decision.user_override:
            raise ConflictError(f"decision {decision_id!r} was already overridden by the user;"
                                f" it cannot be {verb}")
        return decision

    def _learn(self, decision: Decision, value: str,
               kind: ObservationKind) -> Preference | None:
        if decision.session_id is None:
            return None
        user = self.store.get_session(decision.session_id).user_id
        return self.store.observe_preference(
            user, DECISION, decision.decision_type,
            preference_update(kind, value, self.config))

    # -- preferences ----------------------------------------------------------

    def set_preference(self, user_id: str, preference_type: str, preference_key: str,
                       value: Any, *, confidence: float | None = None) -> Preference:
        """The user states a preference (the explicit weight; ``confidence`` states
        the confidence outright, strictly between 0 and 1)."""
        return self._observe(user_id, preference_type, preference_key, value,
                             ObservationKind.EXPLICIT, confidence)

    def observe(self, user_id: str, preference_type: str, preference_key: str,
                value: Any, kind: ObservationKind | str) -> Preference:
        """One observation that the user wants ``value``: kind accept, override or
        explicit (anything else is a ValidationError)."""
        return self._observe(user_id, preference_type, preference_key, value,
                             ObservationKind.parse(kind), None)

    def _observe(self, user_id: str, preference_type: str, preference_key: str,
                 value: Any, kind: ObservationKind, confidence: float | None) -> Preference:
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        if preference_type == AUTONOMY:
            if not isinstance(value, bool):
                raise ValidationError("an autonomy preference is true or false",
                                      field="value")
            validate_name(preference_key, "preference_key")  # its key is a decision type
        return self.store.observe_preference(
            user_id, preference_type, preference_key,
            preference_update(kind, value, self.config, confidence=confidence))

    def preferences(self, user_id: str, *,
                    preference_type: str | None = None) -> list[Preference]:
        """A user's preferences, most confident first."""
        return self.store.list_preferences(user_id, preference_type=preference_type)

    def forget(self, user_id: str, preference_type: str, preference_key: str) -> bool:
        """Delete a preference and its evidence; False if there was none."""
        return self.store.delete_preference(user_id, preference_type, preference_key)

    # -- questions ------------------------------------------------------------

    def similar(self, decision_type: str, context: Any, *, limit: int = 10,
                user_id: str | None = None) -> list[SimilarDecision]:
        """Past decisions in the same context first, then in the nearest ones."""
        return similar_decisions(self.store, decision_type, context, limit=limit,
                                 user_id=user_id, scan=self.config.similar_decisions_scan)

    def similar_to(self, decision: Decision, *, limit: int = 10,
                   user_id: str | None = None) -> list[SimilarDecision]:
        """Other past decisions like ``decision``."""
        return similar_to(self.store, decision, limit=limit, user_id=user_id,
                          scan=self.config.similar_decisions_scan)

    def should_act_autonomously(self, user_id: str, decision_type: str, context: Any, *,
                                threshold: float | None = None) -> AutonomyAnswer:
        """Yes or no, with the confidence and the evidence (docs/learning.md)."""
        return should_act_autonomously(self.store, user_id, decision_type, context,
                                       config=self.config, threshold=threshold)
