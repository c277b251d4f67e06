"""Decisions and user preferences: the records that learning is built from.

This module stores and validates them; the learning rules (similar-decision
lookup, the preference update rule, autonomy) live in :mod:`statekeep.learning`
and reach the rows through two primitives: :meth:`LearningStore.list_decisions`
(one indexed query per question) and :meth:`LearningStore.observe_preference`,
which applies a caller's pure update to a locked preference row in one
transaction with its audit row, so that concurrent observers never lose an
observation. The store keeps no policy of its own; ``set_preference``, the
explicit-setting path, applies the same rule as every other observation so
that a preference's value, confidence and evidence always agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from statekeep import codec
from statekeep.errors import NotFoundError, ValidationError
from statekeep.ids import new_id, validate_id, validate_key, validate_name, validate_text
from statekeep.learning.evidence import ObservationKind, PreferenceUpdate, preference_update
from statekeep.models import Decision, Preference
from statekeep.store.base import UNSET, Connection, Unset
from statekeep.store.context import ContextStore

__all__ = ["LearningStore", "PreferenceUpdate"]

#: A caller's pure update of one preference: the stored row (None when there
#: is none yet) and the time of the observation in, what to store out.
PreferenceUpdater = Callable[[Preference | None, datetime], PreferenceUpdate]

DECISION_COLS = (
    "id, session_id, task_id, decision_type, context_hash, decision_made, confidence,"
    " autonomous, user_override, outcome, feedback_score, reasoning, created_at, context"
)
PREFERENCE_COLS = (
    "id, user_id, preference_type, preference_key, preference_value, confidence,"
    " observation_count, last_observed, created_at, updated_at, evidence_for,"
    " evidence_against"
)
#: The same columns qualified for a join with ``sessions`` (filtering by user).
_DECISION_COLS_D = ", ".join("d." + c.strip() for c in DECISION_COLS.split(","))
_HASH_CHARS = frozenset("0123456789abcdef")


def _unit(value: object, field: str, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not 0.0 <= value <= 1.0):
        raise ValidationError(f"{field} must be a number from 0 to 1", field=field)
    return float(value)


def _score(value: object, field: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
        -1.0 <= value <= 1.0
    ):
        raise ValidationError(f"{field} must be a number from -1 to 1", field=field)
    return float(value)


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be True or False", field=field)
    return value


class LearningStore(ContextStore):
    """Decision and preference storage."""

    def decision_row(self, row: Any) -> Decision:
        return Decision(
            id=row[0], session_id=row[1], task_id=row[2], decision_type=row[3],
            context_hash=row[4], decision_made=row[5], confidence=row[6],
            autonomous=bool(row[7]), user_override=bool(row[8]), outcome=row[9],
            feedback_score=row[10], reasoning=self.json_col(row[11]),
            created_at=self.ts_out(row[12]), context=self.json_col(row[13]),
        )

    def preference_row(self, row: Any) -> Preference:
        return Preference(
            id=row[0], user_id=row[1], preference_type=row[2], preference_key=row[3],
            preference_value=self.json_out(row[4]), confidence=row[5],
            observation_count=row[6], last_observed=self.ts_out(row[7]),
            created_at=self.ts_out(row[8]), updated_at=self.ts_out(row[9]),
            evidence_for=row[10], evidence_against=row[11],
        )

    # -- decisions ----------------------------------------------------------

    def _fetch_decision(self, conn: Connection, decision_id: str, *,
                        lock: bool = False) -> Decision:
        lock_sql = self.row_lock if lock else ""
        row = conn.execute(f"SELECT {DECISION_COLS} FROM decisions WHERE id = ?{lock_sql}",
                           (decision_id,)).fetchone()
        if row is None:
            raise NotFoundError("decision", decision_id)
        return self.decision_row(row)

    def record_decision(
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
        """Record a decision. ``context`` is hashed canonically into context_hash."""
        validate_name(decision_type, "decision_type")
        if not isinstance(decision_made, str) or not decision_made:
            raise ValidationError("decision_made must be a non-empty string",
                                  field="decision_made")
        validate_text(decision_made, "decision_made")
        if context is not None and context_hash is not None:
            raise ValidationError("give context or context_hash, not both", field="context")
        context_p = None
        if context_hash is None:
            context_hash = codec.canonical_hash(context, field="context")
            context_p = self.json_param(context, "context")
        elif not (isinstance(context_hash, str) and len(context_hash) == 64
                  and set(context_hash) <= _HASH_CHARS):
            raise ValidationError("context_hash must be 64 lowercase hex characters",
                                  field="context_hash")
        conf = _unit(confidence, "confidence", optional=True)
        fb = _score(feedback_score, "feedback_score")
        _flag(autonomous, "autonomous")
        _flag(user_override, "user_override")
        validate_text(outcome, "outcome")
        reasoning_p = self.json_param(reasoning, "reasoning")
        if session_id is not None:
            validate_id(session_id, "session_id")
        if task_id is not None:
            validate_id(task_id, "task_id")
        did = new_id("dec")
        now = self.now()
        with self.atomic() as conn:
            user = None if session_id is None else self.session_user(conn, session_id)
            if task_id is not None:
                task = self._fetch_task(conn, task_id)
                if session_id is not None and task.session_id != session_id:
                    raise ValidationError(
                        f"task {task_id!r} belongs to session {task.session_id!r},"
                        f" not {session_id!r}", field="task_id")
            conn.execute(
                f"INSERT INTO decisions ({DECISION_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (did, session_id, task_id, decision_type, context_hash, decision_made, conf,
                 autonomous, user_override, outcome, fb, reasoning_p, self.ts(now),
                 context_p))
            decision = self._fetch_decision(conn, did)
            self.audit_row(conn, "create", "decision", did, None, decision.to_dict(),
                           user_id=user, session_id=session_id, at=now)
        return decision

    def update_decision(
        self,
        decision_id: str,
        *,
        outcome: str | Unset | None = UNSET,
        feedback_score: float | Unset | None = UNSET,
        user_override: bool | Unset = UNSET,
    ) -> Decision:
        """Record how a decision turned out, later."""
        validate_id(decision_id, "decision_id")
        sets: list[str] = []
        params: list[Any] = []
        if not isinstance(outcome, Unset):
            sets.append("outcome = ?")
            params.append(validate_text(outcome, "outcome"))
        if not isinstance(feedback_score, Unset):
            sets.append("feedback_score = ?")
            params.append(_score(feedback_score, "feedback_score"))
        if not isinstance(user_override, Unset):
            sets.append("user_override = ?")
            params.append(_flag(user_override, "user_override"))
        with self.atomic() as conn:
            old = self._fetch_decision(conn, decision_id, lock=True)
            if not sets:
                return old
            params.append(decision_id)
            conn.execute(f"UPDATE decisions SET {', '.join(sets)} WHERE id = ?", params)
            new = self._fetch_decision(conn, decision_id)
            user = None if old.session_id is None else self.session_user(conn, old.session_id)
            self.audit_row(conn, "update", "decision", decision_id, old.to_dict(),
                           new.to_dict(), user_id=user, session_id=old.session_id)
        return new

    def get_decision(self, decision_id: str, *, for_update: bool = False) -> Decision:
        """The decision, or NotFoundError.

        ``for_update`` locks the row until the caller's :meth:`atomic` block
        ends, for a caller that decides what to write from what it reads
        (accepting a decision that may be overridden at the same moment).
        """
        validate_id(decision_id, "decision_id")
        if for_update:
            with self.atomic() as conn:
                return self._fetch_decision(conn, decision_id, lock=True)
        with self.reading() as conn:
            return self._fetch_decision(conn, decision_id)

    def list_decisions(
        self,
        *,
        session_id: str | None = None,
        decision_type: str | None = None,
        context_hash: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
    ) -> list[Decision]:
        """Decisions newest first, filtered.

        ``user_id`` keeps the decisions made in that user's sessions (a
        decision without a session belongs to no user).
        """
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("d.session_id = ?")
            params.append(validate_id(session_id, "session_id"))
        if decision_type is not None:
            where.append("d.decision_type = ?")
            params.append(validate_name(decision_type, "decision_type"))
        if context_hash is not None:
            where.append("d.context_hash = ?")
            params.append(validate_key(context_hash, "context_hash"))
        if user_id is not None:
            where.append("s.user_id = ?")
            params.append(validate_id(user_id, "user_id"))
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError("limit must be a positive integer", field="limit")
        sql = f"SELECT {_DECISION_COLS_D} FROM decisions d"
        if user_id is not None:
            sql += " JOIN sessions s ON s.id = d.session_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.created_at DESC, d.id DESC LIMIT ?"
        params.append(limit)
        with self.reading() as conn:
            return [self.decision_row(r) for r in conn.execute(sql, params).fetchall()]

    # -- preferences --------------------------------------------------------

    def _fetch_preference(self, conn: Connection, user_id: str, ptype: str,
                          key: str, *, lock: bool = False) -> Preference | None:
        row = conn.execute(
            f"SELECT {PREFERENCE_COLS} FROM user_preferences"
            " WHERE user_id = ? AND preference_type = ? AND preference_key = ?"
            f"{self.row_lock if lock else ''}",
            (user_id, ptype, key)).fetchone()
        return None if row is None else self.preference_row(row)

    def observe_preference(
        self,
        user_id: str,
        preference_type: str,
        preference_key: str,
        update: PreferenceUpdater,
    ) -> Preference:
        """Apply one observation to a preference, creating it if it is new.

        ``update`` receives the stored row (None if there is none) and the
        time, and returns what to store; it must be pure, because it runs
        under the row's lock and runs again if a concurrent writer created
        the row first. Row, observation count and audit row (with the
        update's ``meta``) commit together, so concurrent observers are
        serialised on the row and none is lost.
        """
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        if not callable(update):
            raise ValidationError("update must be a function of (preference, now)",
                                  field="update")
        now = self.now()
        ts_now = self.ts(now)
        with self.atomic() as conn:
            while True:
                old = self._fetch_preference(conn, user_id, preference_type,
                                             preference_key, lock=True)
                upd, value_p = self._checked_update(update(old, now))
                if old is not None:
                    conn.execute(
                        "UPDATE user_preferences SET preference_value = ?, confidence = ?,"
                        " observation_count = observation_count + 1, last_observed = ?,"
                        " updated_at = ?, evidence_for = ?, evidence_against = ?"
                        " WHERE id = ?",
                        (value_p, upd.confidence, ts_now, ts_now, upd.evidence_for,
                         upd.evidence_against, old.id))
                    pid = old.id
                    break
                # Not there: insert, unless a concurrent writer inserted it since
                # we looked; then read it (locked) and apply the update to it.
                pid = new_id("prf")
                cur = conn.execute(
                    f"INSERT INTO user_preferences ({PREFERENCE_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, preference_type, preference_key) DO NOTHING",
                    (pid, user_id, preference_type, preference_key, value_p, upd.confidence,
                     ts_now, ts_now, ts_now, upd.evidence_for, upd.evidence_against))
                if cur.rowcount == 1:
                    break
            new = self._fetch_preference(conn, user_id, preference_type, preference_key)
            assert new is not None
            self.audit_row(conn, "update" if old else "create", "preference", pid,
                           None if old is None else old.to_dict(), new.to_dict(),
                           user_id=user_id, session_id=None, meta=upd.meta, at=now)
        return new

    def _checked_update(self, upd: object) -> tuple[PreferenceUpdate, Any]:
        """The update and its encoded value, refused before any write when the
        rule returned something the row cannot hold (a bug in the rule, or a
        value that is not JSON or too large)."""
        if not isinstance(upd, PreferenceUpdate):
            raise ValidationError("update must return a PreferenceUpdate", field="update")
        _unit(upd.confidence, "confidence", optional=False)
        for field in ("evidence_for", "evidence_against"):
            value = getattr(upd, field)
            if (not isinstance(value, int | float) or isinstance(value, bool)
                    or not math.isfinite(value) or value <= 0):
                raise ValidationError(f"{field} must be a finite number > 0", field=field)
        value_p = self.json_in(codec.dumps(upd.value, field="value",
                                           max_bytes=self.config.max_value_bytes))
        if upd.meta is not None:
            codec.dumps(upd.meta, field="meta", max_bytes=2 * self.config.max_value_bytes)
        return upd, value_p

    def set_preference(
        self,
        user_id: str,
        preference_type: str,
        preference_key: str,
        value: Any,
        *,
        confidence: float | None = None,
    ) -> Preference:
        """The user states a preference: an explicit observation.

        It goes through the same rule as learned observations (weight
        ``preference_explicit_weight``; docs/learning.md), so value,
        confidence and evidence stay consistent. ``confidence``, if given,
        states the confidence outright (strictly between 0 and 1); the
        evidence is rescaled to match it.
        """
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        if confidence is not None:
            _unit(confidence, "confidence", optional=False)
        codec.dumps(value, field="value", max_bytes=self.config.max_value_bytes)
        return self.observe_preference(
            user_id, preference_type, preference_key,
            preference_update(ObservationKind.EXPLICIT, value, self.config,
                              confidence=confidence))

    def get_preference(self, user_id: str, preference_type: str,
                       preference_key: str) -> Preference | None:
        """The preference, or None."""
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        with self.reading() as conn:
            return self._fetch_preference(conn, user_id, preference_type, preference_key)

    def list_preferences(self, user_id: str, *,
                         preference_type: str | None = None) -> list[Preference]:
        """A user's preferences, most confident first."""
        validate_id(user_id, "user_id")
        sql = f"SELECT {PREFERENCE_COLS} FROM user_preferences WHERE user_id = ?"
        params: list[Any] = [user_id]
        if preference_type is not None:
            sql += " AND preference_type = ?"
            params.append(validate_name(preference_type, "preference_type"))
        sql += " ORDER BY confidence DESC, preference_type, preference_key"
        with self.reading() as conn:
            return [self.preference_row(r) for r in conn.execute(sql, params).fetchall()]

    def delete_preference(self, user_id: str, preference_type: str,
                          preference_key: str) -> bool:
        """Forget a preference; False if there was none."""
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        with self.atomic() as conn:
            old = self._fetch_preference(conn, user_id, preference_type, preference_key,
                                         lock=True)
            if old is None:
                return False
            conn.execute("DELETE FROM user_preferences WHERE id = ?", (old.id,))
            self.audit_row(conn, "delete", "preference", old.id, old.to_dict(), None,
                           user_id=user_id, session_id=None)
        return True
