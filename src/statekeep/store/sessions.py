"""Sessions: create, read, list with keyset pagination, update with optimistic
concurrency, delete with cascade.

A session's ``user_id`` never changes, which lets the other entity modules
cache the session -> user mapping they need for audit rows.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from statekeep.errors import NotFoundError, ValidationError, VersionConflictError
from statekeep.ids import new_id, validate_id
from statekeep.models import Page, Session, SessionStatus, check_session_transition
from statekeep.store.base import UNSET, Connection, StoreCore, Unset

__all__ = ["SessionStore"]

SESSION_COLS = (
    "id, user_id, start_time, end_time, status, context_snapshot, metadata,"
    " created_at, updated_at, version"
)
_USER_CACHE_LIMIT = 10_000


def _encode_cursor(start: datetime, sid: str) -> str:
    raw = orjson.dumps([start.isoformat(), sid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: object) -> tuple[datetime, str]:
    if not isinstance(cursor, str):
        raise ValidationError(f"cursor must be a string, not {type(cursor).__name__}",
                              field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, sid = orjson.loads(raw)
        return datetime.fromisoformat(start), validate_id(sid, "cursor")
    except Exception:
        raise ValidationError(f"cursor {cursor[:40]!r} is malformed", field="cursor") from None


def _check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise ValidationError("limit must be an integer from 1 to 10000", field="limit")
    return limit


class SessionStore(StoreCore):
    """Session CRUD over the shared transaction machinery."""

    _session_users: dict[str, str]

    def session_row(self, row: Any) -> Session:
        return Session(
            id=row[0],
            user_id=row[1],
            start_time=self.ts_out(row[2]),
            end_time=self.ts_col(row[3]),
            status=SessionStatus(row[4]),
            context_snapshot=self.json_col(row[5]),
            metadata=self.json_col(row[6]),
            created_at=self.ts_out(row[7]),
            updated_at=self.ts_out(row[8]),
            version=row[9],
        )

    def session_user(self, conn: Connection, session_id: str) -> str:
        """The owner of a session, cached because it never changes."""
        cache: dict[str, str] = self.__dict__.setdefault("_session_users", {})
        user = cache.get(session_id)
        if user is None:
            row = conn.execute("SELECT user_id FROM sessions WHERE id = ?",
                               (session_id,)).fetchone()
            if row is None:
                raise NotFoundError("session", session_id)
            user = str(row[0])
            if len(cache) >= _USER_CACHE_LIMIT:
                cache.clear()
            cache[session_id] = user
        return user

    def _fetch_session(self, conn: Connection, session_id: str, *,
                       lock: bool = False) -> Session:
        lock_sql = self.row_lock if lock else ""
        row = conn.execute(f"SELECT {SESSION_COLS} FROM sessions WHERE id = ?{lock_sql}",
                           (session_id,)).fetchone()
        if row is None:
            raise NotFoundError("session", session_id)
        return self.session_row(row)

    def create_session(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        status: SessionStatus | str = SessionStatus.ACTIVE,
        metadata: Any = None,
        context_snapshot: Any = None,
        start_time: datetime | None = None,
    ) -> Session:
        """Start a session for ``user_id``; a caller-chosen id must be unused."""
        validate_id(user_id, "user_id")
        sid = new_id("ses") if session_id is None else validate_id(session_id, "session_id")
        st = SessionStatus.parse(status)
        now = self.now()
        start = self.ts_arg(start_time, "start_time") or now
        meta_p = self.json_param(metadata, "metadata")
        snap_p = self.json_param(context_snapshot, "context_snapshot")
        end = now if st in (SessionStatus.COMPLETED, SessionStatus.FAILED) else None
        with self.atomic() as conn:
            conn.execute(
                f"INSERT INTO sessions ({SESSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (sid, user_id, self.ts(start), None if end is None else self.ts(end),
                 st.value, snap_p, meta_p, self.ts(now), self.ts(now)),
            )
            session = self._fetch_session(conn, sid)
            self.audit_row(conn, "create", "session", sid, None, session.to_dict(),
                           user_id=user_id, session_id=sid, at=now)
        return session

    def get_session(self, session_id: str) -> Session:
        """The session, or NotFoundError."""
        validate_id(session_id, "session_id")
        with self.reading() as conn:
            return self._fetch_session(conn, session_id)

    def list_sessions(
        self,
        *,
        user_id: str | None = None,
        status: SessionStatus | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Session]:
        """Sessions newest first, filtered, one page at a time (keyset cursor)."""
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(validate_id(user_id, "user_id"))
        if status is not None:
            where.append("status = ?")
            params.append(SessionStatus.parse(status).value)
        if (s := self.ts_arg(since, "since")) is not None:
            where.append("start_time >= ?")
            params.append(self.ts(s))
        if (u := self.ts_arg(until, "until")) is not None:
            where.append("start_time < ?")
            params.append(self.ts(u))
        if cursor is not None:
            c_start, c_id = _decode_cursor(cursor)
            where.append("(start_time < ? OR (start_time = ? AND id < ?))")
            params.extend([self.ts(c_start), self.ts(c_start), c_id])
        n = _check_limit(limit)
        sql = f"SELECT {SESSION_COLS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_time DESC, id DESC LIMIT ?"
        params.append(n + 1)
        with self.reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        items = [self.session_row(r) for r in rows[:n]]
        nxt = _encode_cursor(items[-1].start_time, items[-1].id) if len(rows) > n else None
        return Page(items=items, next_cursor=nxt)

    def update_session(
        self,
        session_id: str,
        *,
        status: SessionStatus | str | None = None,
        metadata: Any = UNSET,
        context_snapshot: Any = UNSET,
        expected_version: int | None = None,
    ) -> Session:
        """Change a session; with ``expected_version`` the write is conditional.

        Every change bumps ``version`` by one, so a caller that read version N
        and passes ``expected_version=N`` either wins or gets
        VersionConflictError and can re-read.
        """
        validate_id(session_id, "session_id")
        if expected_version is not None and (
            not isinstance(expected_version, int) or isinstance(expected_version, bool)
        ):
            raise ValidationError("expected_version must be an integer",
                                  field="expected_version")
        new_status = None if status is None else SessionStatus.parse(status)
        meta_p = UNSET if isinstance(metadata, Unset) else self.json_param(metadata, "metadata")
        snap_p = (UNSET if isinstance(context_snapshot, Unset)
                  else self.json_param(context_snapshot, "context_snapshot"))
        now = self.now()
        with self.atomic() as conn:
            old = self._fetch_session(conn, session_id, lock=True)
            if expected_version is not None and old.version != expected_version:
                raise VersionConflictError("session", session_id, expected_version, old.version)
            sets = ["updated_at = ?", "version = version + 1"]
            params: list[Any] = [self.ts(now)]
            if new_status is not None and new_status != old.status:
                check_session_transition(session_id, old.status, new_status)
                sets.append("status = ?")
                params.append(new_status.value)
                ending = new_status in (SessionStatus.COMPLETED, SessionStatus.FAILED)
                sets.append("end_time = ?")
                params.append(self.ts(now) if ending else None)
            if not isinstance(meta_p, Unset):
                sets.append("metadata = ?")
                params.append(meta_p)
            if not isinstance(snap_p, Unset):
                sets.append("context_snapshot = ?")
                params.append(snap_p)
            params.extend([session_id, old.version])
            cur = conn.execute(
                f"UPDATE sessions SET {', '.join(sets)} WHERE id = ? AND version = ?", params
            )
            if cur.rowcount != 1:  # a writer slipped in between (other backends' isolation)
                actual = self._fetch_session(conn, session_id).version
                raise VersionConflictError("session", session_id, old.version, actual)
            new = self._fetch_session(conn, session_id)
            self.audit_row(conn, "update", "session", session_id, old.to_dict(), new.to_dict(),
                           user_id=old.user_id, session_id=session_id, at=now,
                           meta=None if expected_version is None
                           else {"expected_version": expected_version})
        return new

    def delete_session(self, session_id: str) -> None:
        """Delete a session with its tasks, context and snapshots.

        Decisions outlive their session (they are the learning history), so
        their session and task links are cleared rather than the rows deleted.
        """
        validate_id(session_id, "session_id")
        with self.atomic() as conn:
            old = self._fetch_session(conn, session_id, lock=True)
            counts = {
                table: conn.execute(f"SELECT COUNT(*) FROM {table} WHERE session_id = ?",
                                    (session_id,)).fetchone()[0]
                for table in ("tasks", "context", "decisions")
            }
            conn.execute(
                "UPDATE decisions SET task_id = NULL WHERE task_id IN"
                " (SELECT id FROM tasks WHERE session_id = ?)", (session_id,))
            conn.execute("UPDATE decisions SET session_id = NULL WHERE session_id = ?",
                         (session_id,))
            conn.execute(
                "UPDATE recovery_points SET state_snapshot_id = NULL WHERE state_snapshot_id IN"
                " (SELECT id FROM state_snapshots WHERE session_id = ?)", (session_id,))
            # Children first so that the parent link never dangles mid-statement.
            conn.execute("UPDATE tasks SET parent_task_id = NULL WHERE session_id = ?",
                         (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            self.audit_row(conn, "delete", "session", session_id, old.to_dict(), None,
                           user_id=old.user_id, session_id=session_id, meta=counts)
