"""Decisions and user preferences: the records that learning is built from.

This module stores and validates them; the learning rules (similar-decision
lookup, preference updates, autonomy) live above the store and use these
methods.
"""

from __future__ import annotations

from typing import Any

from statekeep import codec
from statekeep.errors import NotFoundError, ValidationError
from statekeep.ids import new_id, validate_id, validate_key, validate_name, validate_text
from statekeep.models import Decision, Preference
from statekeep.store.base import UNSET, Connection, Unset
from statekeep.store.context import ContextStore

__all__ = ["LearningStore"]

DECISION_COLS = (
    "id, session_id, task_id, decision_type, context_hash, decision_made, confidence,"
    " autonomous, user_override, outcome, feedback_score, reasoning, created_at, context"
)
PREFERENCE_COLS = (
    "id, user_id, preference_type, preference_key, preference_value, confidence,"
    " observation_count, last_observed, created_at, updated_at, evidence_for,"
    " evidence_against"
)
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

    def get_decision(self, decision_id: str) -> Decision:
        """The decision, or NotFoundError."""
        validate_id(decision_id, "decision_id")
        with self.reading() as conn:
            return self._fetch_decision(conn, decision_id)

    def list_decisions(
        self,
        *,
        session_id: str | None = None,
        decision_type: str | None = None,
        context_hash: str | None = None,
        limit: int = 100,
    ) -> list[Decision]:
        """Decisions newest first, filtered."""
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(validate_id(session_id, "session_id"))
        if decision_type is not None:
            where.append("decision_type = ?")
            params.append(validate_name(decision_type, "decision_type"))
        if context_hash is not None:
            where.append("context_hash = ?")
            params.append(validate_key(context_hash, "context_hash"))
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError("limit must be a positive integer", field="limit")
        sql = f"SELECT {DECISION_COLS} FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
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

    def set_preference(
        self,
        user_id: str,
        preference_type: str,
        preference_key: str,
        value: Any,
        *,
        confidence: float | None = None,
    ) -> Preference:
        """Insert or update a preference; each update counts one more observation."""
        validate_id(user_id, "user_id")
        validate_name(preference_type, "preference_type")
        validate_key(preference_key, "preference_key")
        conf = _unit(confidence, "confidence", optional=True)
        value_p = self.json_in(codec.dumps(value, field="value",
                                           max_bytes=self.config.max_value_bytes))
        now = self.now()
        ts_now = self.ts(now)
        with self.atomic() as conn:
            # Insert first, so that two writers of one new key cannot both miss
            # it; a conflict means the row exists, and is then read locked.
            pid = new_id("prf")
            old = None
            while True:
                cur = conn.execute(
                    f"INSERT INTO user_preferences ({PREFERENCE_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 1.0, 1.0)"
                    " ON CONFLICT (user_id, preference_type, preference_key) DO NOTHING",
                    (pid, user_id, preference_type, preference_key, value_p,
                     0.5 if conf is None else conf, ts_now, ts_now, ts_now))
                if cur.rowcount == 1:
                    break
                old = self._fetch_preference(conn, user_id, preference_type,
                                             preference_key, lock=True)
                if old is not None:  # else deleted in between: insert again
                    break
            if old is not None:
                pid = old.id
                conn.execute(
                    "UPDATE user_preferences SET preference_value = ?, confidence = ?,"
                    " observation_count = observation_count + 1, last_observed = ?,"
                    " updated_at = ? WHERE id = ?",
                    (value_p, old.confidence if conf is None else conf, ts_now, ts_now, pid))
            new = self._fetch_preference(conn, user_id, preference_type, preference_key)
            assert new is not None
            self.audit_row(conn, "update" if old else "create", "preference", pid,
                           None if old is None else old.to_dict(), new.to_dict(),
                           user_id=user_id, session_id=None, at=now)
        return new

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
