"""Reading the audit log, and the whole-store dump used to compare states.

The audit log is written by every mutation in its own transaction (see the
entity modules); this module only reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from statekeep.errors import ValidationError
from statekeep.ids import validate_id, validate_name
from statekeep.models import AuditEvent
from statekeep.store.learning import LearningStore

__all__ = ["STATE_TABLES", "AuditStore"]

AUDIT_COLS = (
    "id, event_type, entity_type, entity_id, old_value, new_value, change_metadata,"
    " user_id, session_id, timestamp"
)
#: The tables that hold user state, in dependency order (parents first).
STATE_TABLES = (
    "sessions", "tasks", "context", "state_snapshots", "decisions", "user_preferences",
    "audit_log", "recovery_points", "content_blobs", "memory_entries", "context_relations",
    "context_content", "sync_state", "sync_seen", "sync_conflicts", "archive_index",
)
#: How each table's rows are ordered in a dump: by primary key.
_DUMP_ORDER = {
    "content_blobs": "hash", "memory_entries": "key", "context_content": "context_id",
    "sync_state": "scope, key", "sync_seen": "scope, component, key",
    "archive_index": "session_id",
}


class AuditStore(LearningStore):
    """Audit queries and state dumps."""

    def audit_event_row(self, row: Any) -> AuditEvent:
        return AuditEvent(
            id=row[0], event_type=row[1], entity_type=row[2], entity_id=row[3],
            old_value=self.json_col(row[4]), new_value=self.json_col(row[5]),
            change_metadata=self.json_col(row[6]), user_id=row[7], session_id=row[8],
            timestamp=self.ts_out(row[9]),
        )

    def audit(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        since: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Audit events oldest first, filtered; page with ``after_id``."""
        where: list[str] = []
        params: list[Any] = []
        if entity_type is not None:
            where.append("entity_type = ?")
            params.append(validate_name(entity_type, "entity_type"))
        if entity_id is not None:
            where.append("entity_id = ?")
            params.append(validate_id(entity_id, "entity_id"))
        if session_id is not None:
            where.append("session_id = ?")
            params.append(validate_id(session_id, "session_id"))
        if user_id is not None:
            where.append("user_id = ?")
            params.append(validate_id(user_id, "user_id"))
        if (s := self.ts_arg(since, "since")) is not None:
            where.append("timestamp >= ?")
            params.append(self.ts(s))
        if after_id is not None:
            if not isinstance(after_id, int) or isinstance(after_id, bool):
                raise ValidationError("after_id must be an integer", field="after_id")
            where.append("id > ?")
            params.append(after_id)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise ValidationError("limit must be an integer from 1 to 100000", field="limit")
        sql = f"SELECT {AUDIT_COLS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self.reading() as conn:
            return [self.audit_event_row(r) for r in conn.execute(sql, params).fetchall()]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every state table, ordered by primary key.

        Two dumps are equal exactly when the stored state is equal; tests use
        it to prove that a rejected write changed nothing.
        """
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self.reading() as conn:
            for table in STATE_TABLES:
                order = _DUMP_ORDER.get(table, "id")
                rows = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
                out[table] = [tuple(r) for r in rows]
        return out
