"""Task trees: creation under a parent of the same session, the status state
machine with its timestamps, retries, cascading cancel, tree queries.

Tree questions (ancestors for the cycle check, subtrees for cancel and
delete, whole trees for display) are answered by recursive CTEs in the
database, so their cost follows the size of the tree, not of the store.
"""

from __future__ import annotations

from typing import Any

from statekeep.errors import NotFoundError, TaskCycleError, ValidationError
from statekeep.ids import new_id, validate_id, validate_name, validate_text
from statekeep.models import Task, TaskStatus, TaskTree, check_task_transition
from statekeep.store.base import UNSET, Connection, Unset
from statekeep.store.sessions import SessionStore

__all__ = ["TaskStore"]

TASK_COLS = (
    "id, session_id, parent_task_id, type, status, priority, description, parameters,"
    " result, error_details, started_at, completed_at, duration_ms, retry_count,"
    " created_at, updated_at"
)
_INT32 = 2**31


def _check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or not (
        -_INT32 <= priority < _INT32
    ):
        raise ValidationError("priority must be a 32-bit integer", field="priority")
    return priority


class TaskStore(SessionStore):
    """Task CRUD and the task state machine."""

    def task_row(self, row: Any) -> Task:
        return Task(
            id=row[0],
            session_id=row[1],
            parent_task_id=row[2],
            type=row[3],
            status=TaskStatus(row[4]),
            priority=row[5],
            description=row[6],
            parameters=self.json_col(row[7]),
            result=self.json_col(row[8]),
            error_details=self.json_col(row[9]),
            started_at=self.ts_col(row[10]),
            completed_at=self.ts_col(row[11]),
            duration_ms=row[12],
            retry_count=row[13],
            created_at=self.ts_out(row[14]),
            updated_at=self.ts_out(row[15]),
        )

    def _fetch_task(self, conn: Connection, task_id: str, *, lock: bool = False) -> Task:
        lock_sql = self.row_lock if lock else ""
        row = conn.execute(f"SELECT {TASK_COLS} FROM tasks WHERE id = ?{lock_sql}",
                           (task_id,)).fetchone()
        if row is None:
            raise NotFoundError("task", task_id)
        return self.task_row(row)

    def _check_parent(self, conn: Connection, session_id: str, parent_id: str,
                      child_id: str | None) -> None:
        parent = self._fetch_task(conn, parent_id, lock=True)
        if parent.session_id != session_id:
            raise ValidationError(
                f"parent task {parent_id!r} belongs to session {parent.session_id!r},"
                f" not {session_id!r}", field="parent_task_id")
        if child_id is None:
            return
        # The new parent must not be the task itself or one of its descendants.
        row = conn.execute(
            "WITH RECURSIVE up(id, parent_task_id) AS ("
            " SELECT id, parent_task_id FROM tasks WHERE id = ?"
            " UNION SELECT t.id, t.parent_task_id FROM tasks t JOIN up ON t.id = up.parent_task_id"
            ") SELECT 1 FROM up WHERE id = ? LIMIT 1",
            (parent_id, child_id),
        ).fetchone()
        if row is not None:
            raise TaskCycleError(
                f"making {parent_id!r} the parent of {child_id!r} would create a cycle"
            )

    def create_task(
        self,
        session_id: str,
        type: str,
        *,
        description: str | None = None,
        parameters: Any = None,
        priority: int = 5,
        parent_task_id: str | None = None,
        task_id: str | None = None,
    ) -> Task:
        """Add a pending task to a session, optionally under a parent task."""
        validate_id(session_id, "session_id")
        validate_name(type, "type")
        validate_text(description, "description")
        _check_priority(priority)
        tid = new_id("tsk") if task_id is None else validate_id(task_id, "task_id")
        if parent_task_id is not None:
            validate_id(parent_task_id, "parent_task_id")
        params_p = self.json_param(parameters, "parameters")
        now = self.now()
        with self.atomic() as conn:
            user = self.session_user(conn, session_id)
            if parent_task_id is not None:
                self._check_parent(conn, session_id, parent_task_id, None)
            conn.execute(
                f"INSERT INTO tasks ({TASK_COLS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, 0, ?, ?)",
                (tid, session_id, parent_task_id, type, TaskStatus.PENDING.value, priority,
                 description, params_p, self.ts(now), self.ts(now)),
            )
            task = self._fetch_task(conn, tid)
            self.audit_row(conn, "create", "task", tid, None, task.to_dict(),
                           user_id=user, session_id=session_id, at=now)
        return task

    def get_task(self, task_id: str) -> Task:
        """The task, or NotFoundError."""
        validate_id(task_id, "task_id")
        with self.reading() as conn:
            return self._fetch_task(conn, task_id)

    def list_tasks(
        self,
        session_id: str,
        *,
        status: TaskStatus | str | None = None,
        type: str | None = None,
    ) -> list[Task]:
        """A session's tasks, most urgent (highest priority) and oldest first."""
        validate_id(session_id, "session_id")
        sql = f"SELECT {TASK_COLS} FROM tasks WHERE session_id = ?"
        params: list[Any] = [session_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(TaskStatus.parse(status).value)
        if type is not None:
            sql += " AND type = ?"
            params.append(validate_name(type, "type"))
        sql += " ORDER BY priority DESC, created_at, id"
        with self.reading() as conn:
            return [self.task_row(r) for r in conn.execute(sql, params).fetchall()]

    def task_tree(self, session_id: str, *, root_task_id: str | None = None) -> list[TaskTree]:
        """The session's task forest (or one subtree), children ordered like list_tasks."""
        validate_id(session_id, "session_id")
        with self.reading() as conn:
            self.session_user(conn, session_id)
            if root_task_id is None:
                rows = conn.execute(
                    f"SELECT {TASK_COLS} FROM tasks WHERE session_id = ?"
                    " ORDER BY priority DESC, created_at, id", (session_id,)).fetchall()
            else:
                validate_id(root_task_id, "root_task_id")
                rows = self._subtree_rows(conn, root_task_id)
                if not rows or rows[0][1] != session_id:
                    raise NotFoundError("task", root_task_id)
        tasks = [self.task_row(r) for r in rows]
        ids = {t.id for t in tasks}
        children: dict[str | None, list[Task]] = {}
        for t in tasks:
            parent = t.parent_task_id if t.parent_task_id in ids else None
            children.setdefault(parent, []).append(t)
        for group in children.values():
            group.sort(key=lambda t: (-t.priority, t.created_at, t.id))

        def build(task: Task) -> TaskTree:
            return TaskTree(task, tuple(build(c) for c in children.get(task.id, ())))

        roots = [t for t in children.get(None, [])
                 if root_task_id is None or t.id == root_task_id]
        return [build(t) for t in roots]

    def _subtree_rows(self, conn: Connection, task_id: str, *,
                      lock: bool = False) -> list[Any]:
        cols = ", ".join(f"t.{c.strip()}" for c in TASK_COLS.split(","))
        return conn.execute(
            f"WITH RECURSIVE sub(id, depth) AS (SELECT id, 0 FROM tasks WHERE id = ?"
            f" UNION ALL SELECT t.id, sub.depth + 1 FROM tasks t JOIN sub"
            f" ON t.parent_task_id = sub.id)"
            f" SELECT {cols} FROM tasks t JOIN sub ON t.id = sub.id ORDER BY sub.depth, t.id"
            f"{self.row_lock + ' OF t' if lock and self.row_lock else ''}",
            (task_id,),
        ).fetchall()

    def update_task(
        self,
        task_id: str,
        *,
        description: str | Unset | None = UNSET,
        priority: int | Unset = UNSET,
        parameters: Any = UNSET,
        parent_task_id: str | Unset | None = UNSET,
    ) -> Task:
        """Change a task's description, priority, parameters or parent."""
        validate_id(task_id, "task_id")
        sets: list[str] = []
        params: list[Any] = []
        if not isinstance(description, Unset):
            sets.append("description = ?")
            params.append(validate_text(description, "description"))
        if not isinstance(priority, Unset):
            sets.append("priority = ?")
            params.append(_check_priority(priority))
        if not isinstance(parameters, Unset):
            sets.append("parameters = ?")
            params.append(self.json_param(parameters, "parameters"))
        if not isinstance(parent_task_id, Unset) and parent_task_id is not None:
            validate_id(parent_task_id, "parent_task_id")
        now = self.now()
        with self.atomic() as conn:
            old = self._fetch_task(conn, task_id, lock=True)
            if not isinstance(parent_task_id, Unset):
                if parent_task_id is not None:
                    self._check_parent(conn, old.session_id, parent_task_id, task_id)
                sets.append("parent_task_id = ?")
                params.append(parent_task_id)
            if not sets:
                return old
            sets.append("updated_at = ?")
            params.extend([self.ts(now), task_id])
            conn.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?", params)
            new = self._fetch_task(conn, task_id)
            self.audit_row(conn, "update", "task", task_id, old.to_dict(), new.to_dict(),
                           user_id=self.session_user(conn, old.session_id),
                           session_id=old.session_id, at=now)
        return new

    def transition_task(
        self,
        task_id: str,
        status: TaskStatus | str,
        *,
        result: Any = UNSET,
        error_details: Any = UNSET,
    ) -> Task:
        """Move a task through its state machine, stamping times and durations.

        Entering ``in_progress`` stamps ``started_at``; a final status stamps
        ``completed_at`` and ``duration_ms``; ``failed -> pending`` is a retry
        and counts one in ``retry_count``. Cancelling also cancels every
        unfinished subtask, in the same transaction.
        """
        validate_id(task_id, "task_id")
        new_status = TaskStatus.parse(status)
        result_p = UNSET if isinstance(result, Unset) else self.json_param(result, "result")
        error_p = (UNSET if isinstance(error_details, Unset)
                   else self.json_param(error_details, "error_details"))
        now = self.now()
        with self.atomic() as conn:
            old = self._fetch_task(conn, task_id, lock=True)
            check_task_transition(task_id, old.status, new_status)
            user = self.session_user(conn, old.session_id)
            new = self._apply_transition(conn, old, new_status, result_p, error_p, user, now)
            if new_status is TaskStatus.CANCELLED:
                for row in self._subtree_rows(conn, task_id, lock=True)[1:]:
                    sub = self.task_row(row)
                    if not sub.status.finished:
                        self._apply_transition(conn, sub, TaskStatus.CANCELLED, UNSET, UNSET,
                                               user, now, meta={"cascade_from": task_id})
        return new

    def _apply_transition(self, conn: Connection, old: Task, status: TaskStatus,
                          result_p: Any, error_p: Any, user: str, now: Any,
                          meta: Any = None) -> Task:
        sets = ["status = ?", "updated_at = ?"]
        params: list[Any] = [status.value, self.ts(now)]
        if status is TaskStatus.IN_PROGRESS:
            sets.append("started_at = ?")
            params.append(self.ts(now))
        elif status is TaskStatus.PENDING:  # retry of a failed task
            sets += ["retry_count = retry_count + 1", "started_at = NULL",
                     "completed_at = NULL", "duration_ms = NULL"]
        else:
            duration = (None if old.started_at is None
                        else int((now - old.started_at).total_seconds() * 1000))
            sets += ["completed_at = ?", "duration_ms = ?"]
            params += [self.ts(now), duration]
        if not isinstance(result_p, Unset):
            sets.append("result = ?")
            params.append(result_p)
        if not isinstance(error_p, Unset):
            sets.append("error_details = ?")
            params.append(error_p)
        params.append(old.id)
        conn.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?", params)
        new = self._fetch_task(conn, old.id)
        self.audit_row(conn, "transition", "task", old.id, old.to_dict(), new.to_dict(),
                       user_id=user, session_id=old.session_id, at=now, meta=meta)
        return new

    def start_task(self, task_id: str) -> Task:
        """pending -> in_progress."""
        return self.transition_task(task_id, TaskStatus.IN_PROGRESS)

    def complete_task(self, task_id: str, result: Any = None) -> Task:
        """in_progress -> completed, with its result."""
        return self.transition_task(task_id, TaskStatus.COMPLETED, result=result)

    def fail_task(self, task_id: str, error_details: Any = None) -> Task:
        """-> failed, with what went wrong."""
        return self.transition_task(task_id, TaskStatus.FAILED, error_details=error_details)

    def cancel_task(self, task_id: str) -> Task:
        """-> cancelled, with every unfinished subtask."""
        return self.transition_task(task_id, TaskStatus.CANCELLED)

    def retry_task(self, task_id: str) -> Task:
        """failed -> pending, counting the retry."""
        return self.transition_task(task_id, TaskStatus.PENDING)

    def delete_task(self, task_id: str) -> int:
        """Delete a task and its whole subtree; returns how many tasks went."""
        validate_id(task_id, "task_id")
        with self.atomic() as conn:
            rows = self._subtree_rows(conn, task_id, lock=True)
            if not rows:
                raise NotFoundError("task", task_id)
            tasks = [self.task_row(r) for r in rows]
            user = self.session_user(conn, tasks[0].session_id)
            now = self.now()
            for t in reversed(tasks):  # deepest first: no child outlives its parent
                conn.execute("UPDATE decisions SET task_id = NULL WHERE task_id = ?", (t.id,))
                conn.execute("DELETE FROM tasks WHERE id = ?", (t.id,))
                self.audit_row(conn, "delete", "task", t.id, t.to_dict(), None, user_id=user,
                               session_id=t.session_id, at=now,
                               meta=None if t.id == task_id else {"cascade_from": task_id})
        return len(tasks)
